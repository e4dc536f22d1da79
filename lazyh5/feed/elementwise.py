"""Variables that are an elementwise function of a stored view, fed without dask.

``ds["image"].astype("f4") / 255`` is a chain of dask blockwise layers over the file's
rows. Computed by dask, each block costs a graph, a scheduler run, a fresh 16 MiB array
per operation (page faults, and more than the CPU's cache) and a join of its dask
chunks: several times what ``h5py`` plus numpy spend on 32 rows at a time. When every
layer applies a function **to each element alone** (numpy ufuncs, the ``operator``
module, ``astype``, ``where``, ``clip``) with scalar constants, any subset of rows of the
input gives the same rows of the result. The loader then reads the input's rows with
its direct path (:mod:`lazyh5.feed.direct`) and runs the layers' own tasks on a few rows
at a time (:class:`lazyh5.feed.sources.MappedRows`), in cache and in reused buffers.

Any other graph (a reduction, ``map_blocks``, a function not listed, two inputs, a
constant array) is computed by dask, block by block, as before.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from dask._task_spec import DataNode, GraphNode, Task, TaskRef
from dask.array import chunk
from dask.blockwise import Blockwise, blockwise_token
from dask.highlevelgraph import HighLevelGraph
from xarray.core import indexing

from ..backend.array import H5BackendArray
from ..backend.encoding import storage_label
from ..backend.view import unwrap
from .direct import DirectSource, direct_source

# Functions that compute each output element from the same element of their inputs.
_OPERATORS = (
    *("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs"),
    *("invert", "and_", "or_", "xor", "lshift", "rshift"),
    *("lt", "le", "gt", "ge", "eq", "ne"),
)
_ELEMENTWISE = {getattr(operator, f) for f in _OPERATORS} | {chunk.astype, np.where, np.clip}
# xarray's wrappers that only index the file's array (others decode values: CF masks,
# scales, byte order).
_PLAIN = (
    indexing.ImplicitToExplicitIndexingAdapter,
    indexing.CopyOnWriteArray,
    indexing.MemoryCachedArray,
    indexing.LazilyIndexedArray,
)


@dataclass(frozen=True)
class Mapped:
    """A variable computed elementwise from ``base``, a stored view of a file.

    ``source`` reads ``base``'s rows straight from the file; ``apply(rows)`` gives the
    variable's values at ``rows`` of ``base`` (any rows), and a :meth:`runner` gives
    them piece by piece in reused buffers.
    """

    base: xr.DataArray
    source: DirectSource
    steps: list[Step]

    @property
    def row_shape(self) -> tuple[int, ...]:
        return tuple(self.base.shape[1:])

    @property
    def dtype(self) -> np.dtype:
        return self.base.dtype

    def apply(self, rows: np.ndarray) -> np.ndarray:
        """The variable's values at ``rows`` of ``base`` (a fresh array)."""
        return Runner(self.steps, self.base.data.name, 0)(rows).copy()

    def runner(self, rows: int) -> Runner:
        """Runs the function on up to ``rows`` rows at a time in buffers of its own."""
        return Runner(self.steps, self.base.data.name, rows)


def mapped(view: xr.DataArray, dim: Hashable) -> Mapped | None:
    """How to feed ``view`` as a function of a stored view, or ``None`` (dask computes it).

    Examples
    --------
    >>> import lazyh5
    >>> ds = lazyh5.create("mapped.h5", {"x": ((10, 3), "u1")})
    >>> m = mapped(ds["x"].astype("f4") / 255, "sample")
    >>> m.base.dtype, m.apply(np.full((2, 3), 255, "u1"))
    (dtype('uint8'), array([[1., 1., 1.],
           [1., 1., 1.]], dtype=float32))
    >>> mapped(ds["x"] - ds["x"].mean(), "sample") is None
    True
    """
    data = view.variable._data
    if not isinstance(data, da.Array) or not view.dims or view.dims[0] != dim:
        return None
    found = _chain(data)
    if found is None:
        return None
    base_name, layers = found
    base = _base_view(data, base_name, view)
    if base is None:
        return None
    source = direct_source(base, dim)
    if source is None:
        return None
    like = np.zeros((1, *base.shape[1:]), base.dtype)
    return Mapped(base, source, _steps(base_name, layers, like))


def mapped_views(ds: xr.Dataset, names: list[Hashable], dim: Hashable) -> dict[Hashable, Mapped]:
    """:func:`mapped` of each variable ``names`` of ``ds`` that is fed that way."""
    found = {n: mapped(ds[n], dim) for n in names}
    return {n: m for n, m in found.items() if m is not None}


def _chain(arr: da.Array) -> tuple[str, list[tuple[str, Blockwise]]] | None:
    """The one layer the elementwise layers ending at ``arr`` start from, and those
    layers in an order to run them; ``None`` if ``arr`` is not such a chain."""
    graph = arr.__dask_graph__()
    if not isinstance(graph, HighLevelGraph):
        return None
    blocks = tuple(arr.numblocks)
    order: list[tuple[str, Blockwise]] = []
    bases: set[str] = set()
    seen: set[str] = set()
    stack: list[tuple[str, bool]] = [(arr.name, False)]
    while stack:  # depth first; a layer is listed after its inputs
        name, done = stack.pop()
        layer = graph.layers.get(name)
        if done:
            order.append((name, layer))
            continue
        if name in seen:
            continue
        seen.add(name)
        if not _elementwise(layer, blocks):
            bases.add(name)
            continue
        stack.append((name, True))
        stack.extend((dep, False) for dep, idx in layer.indices if idx is not None)
    if len(bases) != 1 or not order:
        return None
    return bases.pop(), order


def _elementwise(layer: Any, blocks: tuple[int, ...]) -> bool:
    """Whether a layer applies a listed function block by block to aligned inputs and
    scalar constants (so to each element alone)."""
    if not isinstance(layer, Blockwise) or layer.new_axes or layer.concatenate:
        return False
    task = layer.task
    if not isinstance(task, Task) or not (
        isinstance(task.func, np.ufunc) or task.func in _ELEMENTWISE
    ):
        return False
    tokens = {blockwise_token(i) for i in range(len(layer.indices))}
    if not set(task.dependencies) <= tokens:
        return False
    nested = [*task.args, *task.kwargs.values()]
    if any(isinstance(a, GraphNode) and not isinstance(a, TaskRef) for a in nested):
        return False
    for dep, idx in layer.indices:
        if idx is None:
            if isinstance(dep, GraphNode | TaskRef) or np.ndim(dep) != 0:
                return False  # an array constant may vary along the rows
        elif tuple(idx) != tuple(layer.output_indices) or layer.numblocks.get(dep) != blocks:
            return False  # transposed, broadcast or differently chunked
    return True


# Operators whose numpy ufunc can write into a given buffer (``a / b`` on arrays is
# ``np.true_divide(a, b)``); ``pow`` is not listed: numpy computes ``x ** 2`` and
# ``x ** 0.5`` with other ufuncs.
_UFUNCS = {
    operator.add: np.add,
    operator.sub: np.subtract,
    operator.mul: np.multiply,
    operator.truediv: np.true_divide,
    operator.floordiv: np.floor_divide,
    operator.mod: np.remainder,
    operator.neg: np.negative,
    operator.abs: np.absolute,
    operator.lt: np.less,
    operator.le: np.less_equal,
    operator.gt: np.greater,
    operator.ge: np.greater_equal,
    operator.eq: np.equal,
    operator.ne: np.not_equal,
}


@dataclass(frozen=True)
class Ref:
    """An argument of a step: the values of layer ``name``."""

    name: str


@dataclass
class Step:
    """One layer's task as a plain call: ``func(*args, **kwargs)``, where a
    :class:`Ref` stands for a layer's values; ``into`` writes it into a buffer (a
    ufunc's ``out=``, or a cast for ``astype``); ``dtype`` and ``row_shape`` are its
    values' (found by a probe)."""

    name: str
    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    into: Callable[..., Any] | None = None
    dtype: np.dtype | None = None
    row_shape: tuple[int, ...] = ()


def _steps(base: str, layers: list[tuple[str, Blockwise]], like: np.ndarray) -> list[Step]:
    """``layers``' tasks as steps, their dtypes and shapes found by running them on
    ``like`` (one row of ``base``)."""
    steps = []
    for name, layer in layers:
        token = {
            blockwise_token(i): dep if idx is None else Ref(dep)
            for i, (dep, idx) in enumerate(layer.indices)
        }
        task = layer.task
        kwargs = {k: _arg(v, token) for k, v in task.kwargs.items()}
        into = _UFUNCS.get(task.func, task.func if isinstance(task.func, np.ufunc) else None)
        if into is not None and into.nout != 1:
            into = None
        if task.func is chunk.astype and set(kwargs) == {"astype_dtype"}:
            into = _cast
        args = tuple(_arg(a, token) for a in task.args)
        steps.append(Step(name, task.func, args, kwargs, into))
    with np.errstate(all="ignore"):  # the probe's values do not matter, its types do
        values = Runner(steps, base, 0).values(like)
    for s in steps:
        s.dtype, s.row_shape = values[s.name].dtype, values[s.name].shape[1:]
    return steps


def _arg(a: Any, token: dict[str, Any]) -> Any:
    return token[a.key] if isinstance(a, TaskRef) else a


def _cast(x: np.ndarray, *, out: np.ndarray, astype_dtype: Any = None) -> None:
    np.copyto(out, x, casting="unsafe")  # what ndarray.astype does, into a buffer


class Runner:
    """Runs steps on pieces of rows of ``base``, each step's values written into a
    buffer of its own (reused for every piece: no allocation, in cache) where it can."""

    def __init__(self, steps: list[Step], base: str, rows: int) -> None:
        self.steps, self.base = steps, base
        self.buffers = {
            s.name: np.empty((rows, *s.row_shape), s.dtype)
            for s in steps
            if rows and s.into is not None
        }

    def values(self, rows: np.ndarray, out: np.ndarray | None = None) -> dict[str, Any]:
        """Every step's values on ``rows``; the last one's written into ``out`` when
        given and of its dtype."""
        values: dict[str, Any] = {self.base: rows}
        last = self.steps[-1]
        for s in self.steps:
            args = [values[a.name] if isinstance(a, Ref) else a for a in s.args]
            kwargs = {k: values[v.name] if isinstance(v, Ref) else v for k, v in s.kwargs.items()}
            dest = self.buffers.get(s.name)
            if s is last and out is not None and out.dtype == s.dtype and s.into is not None:
                dest = out
            if dest is None:
                values[s.name] = np.asarray(s.func(*args, **kwargs))
            else:
                dest = dest[: len(rows)]
                s.into(*args, out=dest, **kwargs)
                values[s.name] = dest
        return values

    def __call__(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """The function's values on ``rows``: written into ``out`` when given (then
        returned), else in a buffer reused by the next call."""
        result = self.values(rows, out)[self.steps[-1].name]
        if out is not None and result is not out:
            out[...] = result
            return out
        return result


def _base_view(arr: da.Array, name: str, like: xr.DataArray) -> xr.DataArray | None:
    """The layer ``name`` of ``arr``'s graph as a DataArray with the encoding of the
    file's variable (so :func:`~lazyh5.feed.direct.direct_source` can trace it), when
    it reads one dataset through xarray's plain indexing wrappers."""
    graph = arr.__dask_graph__().cull_layers([name])
    values = list(dict(graph).values())  # materialised once: it costs per dask chunk
    found = {(a.store.filename, a.path): a for a in map(unwrap, values) if a is not None}
    if len(found) != 1:
        return None
    h5 = found.popitem()[1]
    if h5.element_ndim or not _plain(values):
        return None
    base = da.Array(graph, name, arr.chunks, meta=np.empty((0,) * arr.ndim, h5.dtype))
    with h5.store.lock:
        dset = h5._dataset_unlocked()
        chunks, storage = dset.chunks, storage_label(dset)
    encoding = {
        "source": h5.store.filename,
        "lazyh5_path": h5.path,
        "lazyh5_dims": tuple(like.dims),
        "original_shape": h5.shape,
        "chunksizes": chunks,
        "lazyh5_storage": storage,
    }
    view = xr.DataArray(base, dims=like.dims, name=like.name)
    view.encoding = encoding
    return view


def _plain(values: list[Any]) -> bool:
    """Whether every graph value that holds a file's array holds it through indexing
    wrappers only (no decoding of the stored values)."""
    for value in values:
        obj = value.value if isinstance(value, DataNode) else value
        if isinstance(obj, Task):
            continue
        chain = []
        while obj is not None and not isinstance(obj, H5BackendArray) and len(chain) < 12:
            chain.append(obj)
            obj = getattr(obj, "array", None)
        if isinstance(obj, H5BackendArray) and not all(isinstance(c, _PLAIN) for c in chain):
            return False
    return True
