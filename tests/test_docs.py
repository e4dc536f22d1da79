"""The documentation builds with ``mkdocs build --strict``: any warning fails the test.

``mkdocs.yml`` sets ``strict: true`` and makes broken links, missing anchors, absolute
links and pages left out of the nav warnings, so each of them fails the build; the API
pages are rendered from the docstrings by mkdocstrings, so a docstring it cannot read
fails it too.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="docs extra not installed: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "WARNING" not in log, log
    assert (tmp_path / "index.html").exists()
    assert (tmp_path / "performance" / "index.html").exists()
    api = (tmp_path / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("open_dataset", "create", "to_hdf5", "BatchLoader", "HDF5Matrix"):
        assert name in api


def test_every_docs_page_is_in_the_nav():
    """Belt and braces for ``validation.nav.omitted_files``: no page is left out of the nav."""
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in (ROOT / "docs").glob("*.md"):
        assert f": {page.name}" in nav, f"docs/{page.name} is not in mkdocs.yml's nav"


def test_copied_sections_match_their_sources():
    """Blocks of ``performance.md`` marked ``<!-- copied from X.md -->`` ... ``<!-- end -->``
    must still appear, line by line, in ``docs/X.md``: when a benchmark is rerun there,
    this fails until the performance page is updated too."""
    text = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- copied from (\S+) -->\n(.*?)<!-- end -->", text, re.S)
    assert len(blocks) >= 2
    for source, block in blocks:
        original = (ROOT / "docs" / source).read_text(encoding="utf-8").splitlines()
        for line in block.splitlines():
            if line.strip():
                assert line in original, f"performance.md: not in docs/{source}: {line!r}"


@pytest.mark.keras
def test_getting_started_code_runs(tmp_path):
    """The getting-started page's code blocks, in order, in one fresh interpreter."""
    pytest.importorskip("keras")
    text = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, re.S))
    assert "lazyh5.create(" in code and "lazyh5.open_dataset(" in code and ".fit(" in code
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert (tmp_path / "data.h5").exists() and (tmp_path / "prepped.h5").exists()
