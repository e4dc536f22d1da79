"""The documentation builds with ``mkdocs build --strict``: any warning fails the test.

``mkdocs.yml`` sets ``strict: true`` and makes broken links, missing anchors, absolute
links and pages left out of the nav warnings, so each of them fails the build; the API
pages are rendered from the docstrings by mkdocstrings, so a docstring it cannot read
fails it too. The built site is also checked for what a reader's browser would load
(nothing from the internet: no CDN script, stylesheet or web font) and for code blocks
highlighted at build time; the figures the front page, the README and the comparison
page quote are checked against the benchmark tables of ``docs/performance.md``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site built once with ``mkdocs build --strict``: its folder and the build log."""
    pytest.importorskip("mkdocs", reason="docs extra not installed: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings")
    pytest.importorskip("material", reason="docs extra not installed: pip install -e '.[docs]'")
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    return out, proc.returncode, proc.stdout + proc.stderr


def test_mkdocs_build_strict(site):
    out, returncode, log = site
    assert returncode == 0, log
    assert "WARNING" not in log, log
    assert (out / "index.html").exists()
    assert (out / "performance" / "index.html").exists()
    assert (out / "comparison" / "index.html").exists()
    api = (out / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("open_dataset", "create", "to_hdf5", "BatchLoader", "HDF5Matrix"):
        assert name in api


def _pages(out: Path) -> list[Path]:
    pages = sorted(out.rglob("*.html"))
    assert len(pages) >= 10
    return pages


# Tags and attributes whose URL a browser fetches as it renders the page.
_FETCHED = {
    "script": ("src",),
    "link": ("href",),
    "img": ("src", "srcset"),
    "source": ("src", "srcset"),
    "iframe": ("src",),
    "video": ("src", "poster"),
    "audio": ("src",),
    "embed": ("src",),
    "object": ("data",),
    "input": ("src",),
}


class _Assets(HTMLParser):
    """What a browser fetches on its own when it loads a page: scripts, stylesheets,
    icons, images, frames, media, and ``url(...)``/``@import`` in inline styles."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.urls += [attrs[name] for name in _FETCHED.get(tag, ()) if attrs.get(name)]
        self.urls += _css_urls(attrs.get("style") or "")
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.urls += _css_urls(data)


def _css_urls(css: str) -> list[str]:
    found = re.findall(r"url\(\s*['\"]?([^'\")]+)|@import\s+['\"]([^'\"]+)", css)
    return [a or b for a, b in found]


def _external(url: str) -> bool:
    """``https://...``, ``http://...`` or ``//host/...``, also inside a ``srcset`` list."""
    return bool(re.search(r"(?:^|[\s,])(?:https?:)?//", url.strip()))


def test_site_loads_no_external_asset(site):
    """Every asset a page loads comes with the site: a reader offline or behind a
    firewall gets the same pages (highlighting, fonts, icons, search) as anyone."""
    out, returncode, log = site
    assert returncode == 0, log
    found = []
    for page in _pages(out):
        html = page.read_text(encoding="utf-8")
        parser = _Assets()
        parser.feed(html)
        found += [f"{page.relative_to(out)}: {u}" for u in parser.urls if _external(u)]
        # Material loads these from the internet at read time: Mermaid (unpkg) unless
        # the page already has one, and a repository widget (api.github.com, `repo_url`).
        if 'class="mermaid"' in html:
            assert any(u.endswith("/mermaid.tiny.js") for u in parser.urls), page
        assert "md-source" not in html, page
    for css in out.rglob("*.css"):
        urls = _css_urls(css.read_text(encoding="utf-8"))
        found += [f"{css.relative_to(out)}: {u}" for u in urls if _external(u)]
    assert not found, "\n".join(found)
    assert "fonts.googleapis" not in (out / "index.html").read_text(encoding="utf-8")


def test_every_code_block_is_highlighted_at_build_time(site):
    """Pygments colours code when the site is built: every ``<pre>`` sits in a
    ``highlight`` block, and pages with code carry Pygments' token classes."""
    out, returncode, log = site
    assert returncode == 0, log
    with_code = 0
    for page in _pages(out):
        html = page.read_text(encoding="utf-8")
        pres = html.count("<pre") - html.count('<pre class="mermaid"')  # diagrams, not code
        highlighted = len(re.findall(r'highlight"><pre|highlight"><span class="filename"', html))
        assert pres == highlighted, f"{page.relative_to(out)}: {pres - highlighted} plain <pre>"
        if pres:
            with_code += 1
            assert re.search(r'<span class="(?:k|kn|n|nb|s1|s2|c1|mi)">', html), page
    assert with_code >= 6
    index = (out / "index.html").read_text(encoding="utf-8")
    assert "tabbed-set" in index  # Keras / tf.data / PyTorch / JAX tabs
    assert "content.code.copy" in index  # copy buttons, added by the theme's script
    assert 'data-md-color-scheme="slate"' in index  # the dark palette is there to toggle to


def test_every_docs_page_is_in_the_nav():
    """Belt and braces for ``validation.nav.omitted_files``: no page is left out of the nav."""
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in (ROOT / "docs").glob("*.md"):
        assert f": {page.name}" in nav, f"docs/{page.name} is not in mkdocs.yml's nav"


def _copied_blocks(page: Path) -> list[tuple[Path, str]]:
    """Blocks of ``page`` marked ``<!-- copied from X -->`` ... ``<!-- end -->``, with the
    file ``X`` they were copied from (relative to the page's folder)."""
    text = page.read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- copied from (\S+) -->\n(.*?)<!-- end -->", text, re.S)
    return [(page.parent / source, block) for source, block in blocks]


def test_copied_sections_match_their_sources():
    """Blocks marked ``<!-- copied from X.md -->`` ... ``<!-- end -->`` (in the docs and
    the README) must still appear, line by line, in ``X.md``: when a benchmark is rerun
    there, this fails until every copy is updated too."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    blocks = {page.name: _copied_blocks(page) for page in pages}
    assert len(blocks["performance.md"]) >= 2
    assert blocks["index.md"] and blocks["README.md"]  # the front page's measured table
    for name, found in blocks.items():
        for source, block in found:
            original = source.read_text(encoding="utf-8").splitlines()
            for line in block.splitlines():
                if line.strip():
                    assert line in original, f"{name}: not in {source.name}: {line!r}"


_NUMBER = re.compile(r"(?<![\w.,])\d[\d,]*(?:\.\d+)?(?![\d])")


def _numbers(text: str) -> set[str]:
    return {n.rstrip(",") for n in _NUMBER.findall(text)}


def test_quoted_figures_come_from_the_benchmark_tables():
    """The at-a-glance table of ``performance.md`` (which the front page and the README
    copy) and the comparison page's measured table quote only figures that appear in
    the benchmark tables of ``performance.md``."""
    text = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    glance = re.search(r"<!-- at a glance -->\n(.*?)<!-- end -->", text, re.S)
    assert glance, "performance.md: no <!-- at a glance --> ... <!-- end --> block"
    rest = _numbers(text.replace(glance.group(0), ""))
    rows = [line.split("|") for line in glance.group(1).splitlines()[2:]]
    figures = _numbers(" ".join(row[3] for row in rows))  # the "× their rate" column
    assert {"1.114", "126", "36"} <= figures
    assert not figures - rest, f"at a glance, not in the tables: {sorted(figures - rest)}"
    comparison = (ROOT / "docs" / "comparison.md").read_text(encoding="utf-8")
    measured = comparison.split("## Measured", 1)[1].split("\n## ", 1)[0]
    quoted = _numbers(measured)
    assert {"1.114", "337", "44"} <= quoted
    assert not quoted - rest, f"comparison.md, not in performance.md: {sorted(quoted - rest)}"


def test_front_page_picture_is_there_and_small():
    png = ROOT / "docs" / "assets" / "summary.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size < 300_000
    assert "(assets/summary.png)" in (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    assert "(docs/assets/summary.png)" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_user_facing_text_has_no_project_history():
    """Docs, docstrings, CLI output, comments, examples and benchmarks speak of what the
    library does, not of how it was developed: no "the seed" (the original h5py/Keras
    recipe), no issue numbers. A random ``seed`` is a different word and is fine."""
    pattern = re.compile(r"\bthe seed\b(?!\s*(?:=|\d|gives|\)))|\bseed's\b|\bissue #?\d+", re.I)
    files = [ROOT / "README.md", *ROOT.glob("docs/*.md")]
    for folder in ("lazyh5", "examples", "benchmarks", "scripts"):
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in {".py", ".sh", ".md"}]
    hits = []
    for path in files:
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not hits, "\n".join(hits)


@pytest.mark.keras
def test_getting_started_code_runs(tmp_path):
    """The getting-started page's code blocks, in order, in one fresh interpreter."""
    pytest.importorskip("keras")
    text = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, re.S))
    assert "lazyh5.create(" in code and "lazyh5.open_dataset(" in code and ".fit(" in code
    _run_snippet(code, tmp_path)
    assert (tmp_path / "data.h5").exists() and (tmp_path / "prepped.h5").exists()


def _run_snippet(code: str, cwd: Path, env: dict[str, str] | None = None) -> None:
    """Run a page's code in a fresh interpreter in ``cwd`` (``env``: extra variables);
    fail with its output (a crash prints the Python stacks of its threads)."""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONFAULTHANDLER": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def _front_page_code() -> str:
    """The front page's Keras example (its first tab), which the README repeats."""
    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    tab = index.split('=== "Keras"', 1)[1].split("\n=== ", 1)[0]
    code = textwrap.dedent(re.search(r"```python\n(.*?)```", tab, re.S).group(1))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## From a file to `fit`", 1)[1]
    assert re.search(r"```python\n(.*?)```", section, re.S).group(1) == code
    return code


@pytest.mark.keras
def test_front_page_code_runs(tmp_path):
    """The front page's example from a file to ``fit``, on a small file like the demo's."""
    pytest.importorskip("keras")
    code = _front_page_code()
    assert 'lazyh5.open_dataset("data.h5")' in code and ".fit(" in code
    make = textwrap.dedent(
        """
        import numpy as np, lazyh5
        rng = np.random.default_rng(0)
        ds = lazyh5.create("data.h5", {"image": ((512, 32, 32, 3), "u1"), "label": ((512,), "i8")})
        ds["image"].h5[:] = rng.integers(0, 256, (512, 32, 32, 3), dtype=np.uint8)
        ds["label"].h5[:] = rng.integers(0, 10, 512)
        ds.close()
        """
    )
    _run_snippet(make + code, tmp_path)
    assert (tmp_path / "prepped.h5").exists()


@pytest.mark.keras
def test_migrating_page_code_runs(tmp_path):
    """The migrating page's "After" block as it is, after a small file and model."""
    pytest.importorskip("keras")
    text = (ROOT / "docs" / "migrating-from-hdf5matrix.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", text.split("## After", 1)[1], re.S).group(1)
    assert "fit_kwargs(" in code and "evaluate_kwargs(" in code and "predict_kwargs(" in code
    make = textwrap.dedent(
        """
        import h5py, keras, numpy as np
        path = "data.h5"
        rng = np.random.default_rng(0)
        label = rng.integers(0, 4, 1000)
        image = label[:, None, None, None] * 60 + rng.integers(0, 40, (1000, 4, 4, 1))
        with h5py.File(path, "w") as f:
            f["image"], f["label"] = (image / 255).astype("f4"), label
        model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                                  keras.layers.Dense(4, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy")
        """
    )
    check = "\nassert predictions.shape == (200, 4) and np.isfinite(loss)\n"
    _run_snippet(make + code + check, tmp_path)


def test_remote_page_code_runs(tmp_path, s3_server):
    """The remote files page's code blocks, in order, against the S3 API server on
    loopback (credentials and endpoint in the environment, as the page recommends);
    blocks after a ``<!-- not run: why -->`` line are skipped."""
    from tests._files import write_lzf_feed
    from tests._servers import KEY, REGION, SECRET

    text = (ROOT / "docs" / "remote.md").read_text(encoding="utf-8")
    blocks = re.findall(r"(<!-- not run: [^>]+-->\n)?```python\n(.*?)```", text, re.S)
    code = "\n".join(block for skipped, block in blocks if not skipped)
    assert "s3://my-bucket/train.h5" in code and "to_hdf5(" in code and "BatchLoader" in code
    assert sum(1 for skipped, _ in blocks if skipped) == 2  # gs/https/file objects, cluster
    bucket = s3_server.bucket(f"my-bucket-{tmp_path.name[-8:].lower().replace('_', '-')}")
    train = write_lzf_feed(tmp_path / "train.h5")
    for key in ("train.h5", "shards/a.h5", "shards/b.h5"):
        s3_server.upload(train, key=key, bucket=bucket)
    env = {
        "AWS_ACCESS_KEY_ID": KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ENDPOINT_URL": s3_server.endpoint,
    }
    _run_snippet(code.replace("s3://my-bucket/", f"s3://{bucket}/"), tmp_path, env)
    assert s3_server.read(f"s3://{bucket}/normalised.h5")[:8] == b"\x89HDF\r\n\x1a\n"
