"""The write path: new files (:func:`create`), write-through assignment (the ``.h5``
accessor) and :func:`to_hdf5`.

- :mod:`lazyh5.write.layout`: one :class:`~lazyh5.write.layout.VariableLayout` per
  variable (HDF5 chunks, filters, dims) and the datasets laid out with dimension scales;
- :mod:`lazyh5.write.create`: :func:`lazyh5.create`, new files and groups;
- :mod:`lazyh5.write.assign`: validate and write values region by region (into a
  :class:`~lazyh5.backend.view.Target`);
- :mod:`lazyh5.write.graph`: dask-graph helpers (shared reductions first, block store);
- :mod:`lazyh5.write.accessor`: ``DataArray.h5`` / ``Dataset.h5``;
- :mod:`lazyh5.write.to_hdf5`: stream lazy results into a new file, resumably.
"""

from __future__ import annotations

from . import accessor  # noqa: F401  (registers .h5)
