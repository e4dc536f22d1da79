"""The read path: the xarray backend that opens HDF5 files lazily.

- :mod:`.entrypoint` — the thin ``BackendEntrypoint`` xarray discovers as ``"lazyh5"``.
- :mod:`.store` — opens the file (the picklable file manager) and holds its lock.
- :mod:`.locks` — which lock a file takes; the cluster-wide lock of writable files.
- :mod:`.group` — one group as a lazy Dataset: members, scales, names, variables, CF.
- :mod:`.encoding` — how a dataset is stored, as xarray's ``encoding``.
- :mod:`.array` — the lazily indexed array wrapper (one HDF5 dataset).
- :mod:`.read` — reading a selection: the strategy (row copy, parallel decode, h5py).
- :mod:`.decode` — the codecs: filter pipelines decoded without h5py, GIL released.
- :mod:`.threads` — the decode thread pool.
- :mod:`.selection` — which chunks a key touches, and what to copy from each.
- :mod:`.rows` — rows copied straight from the file, and the chunk-address table.
- :mod:`.view` — which file region a view of a variable shows (for writes and direct reads).
- :mod:`.positions` — the file positions a view holds, replayed from its dask graph.
- :mod:`.types` — what each HDF5 type becomes (dtype, trailing dims, or skipped).
- :mod:`.attrs` — attributes read as h5netcdf reads them (netCDF-C's 1-element arrays).
- :mod:`.dims` — dimension naming: HDF5 dimension scales, ``dims=``, the default rule.
- :mod:`.security` — refuses links and virtual datasets that reach outside the folder.
- :mod:`.chunking` — dask chunks from HDF5 chunks and the memory budget.
- :mod:`.fusion` — a dask graph pass: index lists read only the rows they select.
"""

from . import fusion

# Installed on import of the backend, so graphs built from any lazyh5-opened file
# (through lazyh5.open_dataset or xr.open_dataset(engine="lazyh5")) read only the rows
# an index list selects. Other graphs pass through dask's own optimisation untouched.
fusion.install()
