"""Shared fixtures: small real HDF5 files written with plain h5py (by ``tests/_files.py``)."""

from __future__ import annotations

import gc
import os
import platform
import signal

import pytest
from hypothesis import settings

from tests._files import write_feed, write_lzf_feed, write_plain

# Loopback servers for the remote-storage tests (moto is imported only when used).
from tests._servers import http_proxy, http_server, s3_proxy, s3_server  # noqa: F401

# Property tests draw the same examples on every run ("ci", the default): a failure is
# reproducible and a pass means the same thing each time. HYPOTHESIS_PROFILE=explore
# draws new examples (and more of them) to look for new failures.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", max_examples=1000, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# scripts/test.sh (and so CI) installs every extra: there a test skipped because a package
# is missing would hide a failure, so with LAZYH5_REQUIRE_EXTRAS=1 pytest.importorskip
# fails instead (in a test, or collecting a module that imports it at the top).
_NOT_EVERYWHERE = {"tensorflow"} if platform.machine() != "x86_64" else set()  # its extra's marker
_importorskip = pytest.importorskip


def _import_or_fail(modname: str, *args, **kwargs):
    """``pytest.importorskip``, failing where it would skip (but for ``_NOT_EVERYWHERE``)."""
    try:
        return _importorskip(modname, *args, **kwargs)
    except pytest.skip.Exception as skipped:
        if modname.split(".")[0] in _NOT_EVERYWHERE:
            raise
        why = skipped.msg
    pytest.fail(f"{modname} is missing, and LAZYH5_REQUIRE_EXTRAS=1 ({why})", pytrace=False)


if os.environ.get("LAZYH5_REQUIRE_EXTRAS") == "1":
    pytest.importorskip = _import_or_fail


@pytest.fixture
def plain_file(tmp_path):
    """A plain h5py file: image (1000, 32, 32, 3) float32 + label (1000,), no dimension scales."""
    return write_plain(tmp_path / "plain.h5")


@pytest.fixture
def feed_file(tmp_path):
    """A training file whose rows say where they are (``image[i] == label[i] == i``)."""
    return write_feed(tmp_path / "feed.h5")


@pytest.fixture
def lzf_feed_file(tmp_path):
    """A plain h5py training file: 2048 images (8×8×3 float32) in 512-row lzf chunks."""
    return write_lzf_feed(tmp_path / "feed.h5")


@pytest.fixture(scope="module")
def close_leftover_files():
    """After the module: collect the datasets its tests opened and dropped.

    They hold files through reference cycles; closing them keeps later tests' open-file
    counts (tests/test_soak.py) exact. Modules use it with
    ``pytestmark = pytest.mark.usefixtures("close_leftover_files")``.
    """
    yield
    gc.collect()


def pytest_configure(config: pytest.Config) -> None:
    # Started as a background job (`... &` in a script, some CI runners), the shell
    # ignores SIGINT and Python then installs no KeyboardInterrupt handler: the Ctrl-C
    # tests' _thread.interrupt_main does nothing, and their child processes inherit the
    # ignored signal. A handled SIGINT here is reset to the default in every child.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
