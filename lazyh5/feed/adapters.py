"""BatchLoader's entry points to the frameworks that need their own iterator (JAX,
PyTorch); each imports its adapter module, and with it the framework, on first use."""

from __future__ import annotations

from typing import Any


class Adapters:
    """``jax()``, ``torch()`` and ``torch_batches()`` for :class:`~lazyh5.feed.loader.BatchLoader`.

    Examples
    --------
    >>> import numpy as np, lazyh5
    >>> ds = lazyh5.create("adapt.h5", {"label": ((100,), "i8")})
    >>> ds["label"].h5[:] = np.arange(100)
    >>> lazyh5.BatchLoader(ds, "label", batch_size=30).rows
    100
    """

    def jax(self, prefetch: int = 2, sharding: Any = None) -> Any:
        """The next epoch's batches as ``jax.Array``, put on the device(s) ``prefetch`` ahead
        of use, split over devices by a ``sharding``: see :func:`.jax.device_batches`.

        Examples
        --------
        >>> import lazyh5
        >>> loader = lazyh5.BatchLoader(lazyh5.open_dataset("adapt.h5"), "label", batch_size=30)
        >>> [y.shape for y in loader.jax(prefetch=2)]
        [(30,), (30,), (30,), (10,)]
        """
        from .jax import device_batches

        return device_batches(self, prefetch, sharding)

    def torch(self) -> Any:
        """The loader as a ``torch.utils.data.IterableDataset`` of tensor batches, for
        ``DataLoader(loader.torch(), batch_size=None, num_workers=k)``: the workers split
        each epoch's blocks among them, every row comes once per epoch, and
        ``set_epoch``/``state_dict`` work across workers; see
        :class:`.torch.LoaderDataset`. Pass ``batch_size=None`` to the ``DataLoader``:
        the items are batches already (with its default ``batch_size=1``, each comes with
        an extra leading axis of 1).

        Examples
        --------
        >>> import lazyh5, torch
        >>> loader = lazyh5.BatchLoader(lazyh5.open_dataset("adapt.h5"), "label", batch_size=30)
        >>> batches = list(torch.utils.data.DataLoader(loader.torch(), batch_size=None))
        >>> [tuple(y.shape) for y in batches], batches[0].dtype
        ([(30,), (30,), (30,), (10,)], torch.int64)
        """
        from .torch import LoaderDataset

        return LoaderDataset(self)

    def torch_batches(self, **dataloader_kwargs: Any) -> Any:
        """The loader's batches as torch tensors from ``DataLoader`` workers that hand
        over runs of up to a block's batches, cut into batches in this process: far
        fewer hand-overs between processes than :meth:`torch`'s one per batch (5-7x
        the batches per second on a 2-core machine). ``dataloader_kwargs`` go to the
        ``DataLoader`` (``num_workers=2``, ...; ``persistent_workers`` defaults to
        ``True`` with workers);
        ``len()``, ``set_epoch``, ``state_dict`` and ``load_state_dict`` work as for
        :meth:`torch`. See :class:`.torch_batches.TorchBatches`.

        Examples
        --------
        >>> import lazyh5
        >>> loader = lazyh5.BatchLoader(lazyh5.open_dataset("adapt.h5"), "label", batch_size=30)
        >>> batches = loader.torch_batches(num_workers=0)
        >>> [tuple(y.shape) for y in batches], len(batches)
        ([(30,), (30,), (30,), (10,)], 4)
        """
        from .torch_batches import TorchBatches

        return TorchBatches(self, **dataloader_kwargs)
