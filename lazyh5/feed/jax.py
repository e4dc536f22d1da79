"""JAX adapter: a BatchLoader's batches placed on device(s) ahead of use."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

from ..errors import InvalidArgumentError
from .state import make

try:
    import jax
except ImportError as err:  # pragma: no cover - exercised only without jax
    raise ImportError(
        "BatchLoader.jax() depends on JAX; install it with `pip install lazyh5[jax]`"
    ) from err


def _row_shapes(loader) -> list[tuple[int, ...]]:
    """The shape of one row of every fed variable (without the sample dimension)."""
    return [
        tuple(loader._ds[n].sizes[d] for d in loader._ds[n].dims if d != loader.dim)
        for n in loader._names
    ]


def _check_sharding(loader, sharding: Any) -> None:
    """Refuse, before reading anything, a sharding that cannot split the epoch's batches."""
    if sharding is None or isinstance(sharding, jax.Device):
        return
    if not isinstance(sharding, jax.sharding.Sharding):
        return  # a pytree of shardings: jax.device_put checks it per batch
    sizes = {loader.batch_size} if len(loader) else set()
    last = loader.epoch_rows % loader.batch_size
    if last and not loader.drop_remainder:
        sizes.add(last)
    for rows in sorted(sizes, reverse=True):
        for name, shape in zip(loader._names, _row_shapes(loader), strict=True):
            try:
                sharding.shard_shape((rows, *shape))
            except ValueError as err:
                hint = (
                    "pass drop_remainder=True to drop the epoch's last, smaller batch"
                    if rows != loader.batch_size
                    else "choose a batch_size that the sharding divides"
                )
                raise InvalidArgumentError(
                    f"cannot place batches of {rows} rows of {name!r} from {loader._where} "
                    f"with {sharding}: {err}; {hint}"
                ) from None


class DeviceBatches:
    """An epoch's batches as ``jax.Array``, put on the device(s) ``prefetch`` ahead.

    ``state_dict()`` is the loader's state after the batches this iterator has
    yielded (not those put on the device ahead of them): see
    :meth:`lazyh5.BatchLoader.state_dict`.
    """

    def __init__(self, loader, prefetch: int, sharding: Any) -> None:
        self._loader = loader
        batches = iter(loader)
        self._epoch, self._first = loader._current  # where this epoch starts
        self._yielded = 0
        self._stream = _stream(batches, prefetch, sharding)

    def __iter__(self) -> DeviceBatches:
        return self

    def __next__(self) -> Any:
        batch = next(self._stream)
        self._yielded += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        """The loader's state after the batches yielded so far (JSON-serialisable)."""
        return make(self._loader, self._epoch, self._first + self._yielded)


def device_batches(loader, prefetch: int = 2, sharding: Any = None) -> DeviceBatches:
    """The batches of the loader's next epoch as ``jax.Array``, ``prefetch`` ahead.

    Each batch (a tuple or dict of arrays, as the loader yields) is given to
    ``jax.device_put(batch, sharding)`` as soon as it is read; ``device_put`` returns at
    once and copies in the background, so keeping ``prefetch`` batches put ahead of the
    one in use overlaps the transfers with the training step. ``sharding`` is ``None``
    (the default device), a ``jax.Device``, a ``jax.sharding.Sharding`` (for example
    ``NamedSharding(mesh, PartitionSpec("data"))``: each batch split over the mesh's
    devices along its first axis) or a pytree of them matching the batch. As everywhere
    in JAX, 64-bit arrays become 32-bit unless ``jax_enable_x64`` is set. The
    iterator's ``state_dict()`` counts the batches it has yielded, not those put ahead.

    Examples
    --------
    >>> import numpy as np, jax, lazyh5
    >>> ds = lazyh5.create("jaxd.h5", {"image": ((100, 4), "f4"), "label": ((100,), "i8")})
    >>> ds["label"].h5[:] = np.arange(100)
    >>> loader = lazyh5.BatchLoader(ds, "image", "label", batch_size=32, seed=0)
    >>> batches = list(loader.jax())
    >>> len(batches), all(isinstance(y, jax.Array) for _, y in batches)
    (4, True)
    >>> sorted(int(v) for _, y in batches for v in y) == list(range(100))
    True
    """
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
        raise InvalidArgumentError(
            f"BatchLoader.jax() over {loader._where} needs prefetch >= 0 (batches put on "
            f"the device ahead), got {prefetch!r}"
        )
    _check_sharding(loader, sharding)
    return DeviceBatches(loader, prefetch, sharding)


def _stream(batches: Iterator[Any], prefetch: int, sharding: Any) -> Iterator[Any]:
    queue: deque[Any] = deque()
    for batch in batches:
        queue.append(jax.device_put(batch, sharding))
        if len(queue) > prefetch:
            yield queue.popleft()
    while queue:
        yield queue.popleft()
