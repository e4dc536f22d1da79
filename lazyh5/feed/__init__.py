"""The feed path: batches for training, computed block by block.

- :mod:`.plan` — ``BlockPlan``: blocks of rows aligned to HDF5 chunks;
- :mod:`.shuffle` — epoch orders (random block order, shuffle across a window of blocks,
  the rows of each shard);
- :mod:`.shard` — which shard a process feeds (``shard=``, ``"auto"``);
- :mod:`.state` — the loader's epoch count and its saved state (``state_dict``);
- :mod:`.checks` — the loader's argument checks;
- :mod:`.prefetch` — background computation with a bounded number of blocks held;
- :mod:`.sources` — where a block's rows come from (the file directly, a whole small
  column, or dask), behind one interface;
- :mod:`.direct` — reading a plain view of its file without dask;
- :mod:`.buffers` — reused block buffers;
- :mod:`.loader` — :class:`BatchLoader`;
- :mod:`.keras`, :mod:`.tf`, :mod:`.jax`, :mod:`.torch` — Keras 3 ``PyDataset``,
  ``tf.data``, JAX device and PyTorch ``DataLoader`` adapters (the loader's ``jax()``
  and ``torch()`` are in :mod:`.adapters`).
"""
