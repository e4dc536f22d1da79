"""xarray's own backend tests, with every read going through ``engine="lazyh5"``.

The test classes ship in the xarray package (``xarray.tests``). Files are written by
h5netcdf, exactly as in xarray's ``TestH5NetCDFData`` and h5netcdf DataTree tests, and
read back by lazyh5: the parity rule (docs/concepts.md) is that every test passing
with h5netcdf passes with lazyh5. Reads lazyh5 does not take by design (file objects,
bytes, URLs, netCDF3 files, h5netcdf's own keywords) stay with h5netcdf; the tests that
differ by design are marked strict ``xfail`` with the reason.
"""

from __future__ import annotations

import contextlib
import functools
import os

import pytest

pytest.importorskip("h5netcdf")
xr_tests = pytest.importorskip("xarray.tests.test_backends")
xr_tree_tests = pytest.importorskip("xarray.tests.test_backends_datatree")

import xarray as xr  # noqa: E402
from xarray.tests.conftest import *  # noqa: E402, F403  (xarray's fixtures)

from lazyh5._files import has_hdf5_signature  # noqa: E402

# Datasets dropped here hold files open until collected (tests/test_soak.py counts them).
pytestmark = pytest.mark.usefixtures("close_leftover_files")

# h5netcdf-only keywords that lazyh5 does not take (it has no phony dims: see
# docs/concepts.md); a test passing them is testing h5netcdf itself.
_H5NETCDF_ONLY = ("phony_dims", "invalid_netcdf", "decode_vlen_strings", "driver", "format")
_REDIRECTED = (None, "h5netcdf")


def _lazyh5(opener):
    """``opener`` with reads of paths by h5netcdf (named or guessed) going to lazyh5."""

    @functools.wraps(opener)
    def wrapper(paths, *args, **kwargs):
        first = paths[0] if isinstance(paths, list | tuple) and paths else paths
        is_path = isinstance(first, str | os.PathLike) and not str(first).startswith("http")
        guessed = kwargs.get("engine") is None
        if guessed and is_path and not (os.path.isfile(first) and has_hdf5_signature(first)):
            is_path = False  # a netCDF3 file: xarray would never pick lazyh5 (nor h5netcdf)
        h5netcdf_only = any(k in kwargs for k in _H5NETCDF_ONLY)
        if is_path and kwargs.get("engine") in _REDIRECTED and not h5netcdf_only:
            kwargs["engine"] = "lazyh5"
        return opener(paths, *args, **kwargs)

    return wrapper


@pytest.fixture(autouse=True)
def _reads_through_lazyh5(monkeypatch):
    for module in (xr_tests, xr_tree_tests):
        for name in ("open_dataset", "open_mfdataset", "load_dataset", "open_datatree"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, _lazyh5(getattr(module, name)))
    # Tests that say xr.open_dataset(...) directly (a few do).
    for name in ("open_dataset", "open_datatree", "open_groups"):
        monkeypatch.setattr(xr, name, _lazyh5(getattr(xr, name)))


def _differs_by_design(test, reason):
    """``test`` (a method of xarray's class) expected to fail for lazyh5, for ``reason``."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return test(*args, **kwargs)

    return pytest.mark.xfail(strict=True, reason=reason)(wrapper)


# Files without dimension scales: h5netcdf names their axes phony_dim_0, 1, ... and
# warns about the naming; lazyh5 names them `sample` / `{var}_dim_{i}` (its rule for
# plain h5py files, docs/concepts.md). Every netCDF4 file is named identically.
_PHONY = "plain HDF5 files keep lazyh5's dimension names, not h5netcdf's phony_dim_*"


class TestLazyh5OnH5NetCDFFiles(xr_tests.TestH5NetCDFData):
    """xarray's TestH5NetCDFData: written by h5netcdf, read by lazyh5."""

    @contextlib.contextmanager
    def open(self, path, **kwargs):
        with xr.open_dataset(path, engine="lazyh5", **kwargs) as ds:
            yield ds

    test_phony_dims_warning = _differs_by_design(
        xr_tests.TestH5NetCDFData.test_phony_dims_warning, _PHONY
    )


class TestLazyh5OnH5NetCDFTrees(xr_tree_tests.TestH5NetCDFDatatreeIO):
    """xarray's h5netcdf DataTree tests: written by h5netcdf, read by lazyh5."""

    test_phony_dims_warning = _differs_by_design(
        xr_tree_tests.TestH5NetCDFDatatreeIO.test_phony_dims_warning, _PHONY
    )


def test_the_redirect_reads_through_lazyh5(tmp_path):
    # Guards the redirect above: xarray's tests really read with lazyh5 here.
    path = tmp_path / "x.nc"
    xr.Dataset({"v": ("x", [1, 2, 3])}).to_netcdf(path, engine="h5netcdf")
    for opener in (xr_tests.open_dataset, xr.open_dataset):
        with opener(path, engine="h5netcdf") as ds:
            assert ds["v"].encoding["lazyh5_path"] == "/v"
    with xr_tests.open_dataset(path, engine="h5netcdf", phony_dims="sort") as ds:
        assert "lazyh5_path" not in ds["v"].encoding
