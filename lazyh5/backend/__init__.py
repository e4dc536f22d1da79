"""The read path: the xarray backend that opens HDF5 files lazily.

- :mod:`.entrypoint` — the thin ``BackendEntrypoint`` xarray discovers as ``"lazyh5"``.
- :mod:`.store` — owns the file manager and lock, turns HDF5 datasets into variables.
- :mod:`.array` — the lazily indexed array wrapper (one HDF5 dataset).
- :mod:`.dims` — dimension naming: HDF5 dimension scales, ``dims=``, the default rule.
- :mod:`.security` — refuses links and virtual datasets that reach outside the folder.
"""
