"""Which shard of the rows this process feeds: ``shard=(index, count)`` or ``"auto"``.

``"auto"`` asks the framework that is active, in this order: ``torch.distributed``
(when initialised), JAX (when it runs more than one process), Keras' distribution
(``keras.distribution.distribution()``, when one is set) and the ``TF_CONFIG``
environment variable of ``tf.distribute``'s multi-worker strategies; without any of
them, the single shard ``(0, 1)``. Frameworks are asked only when the program has
already imported them: none is imported here.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidArgumentError

MODES = ("pad", "drop")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``, and where that came from (for ``repr``)."""

    index: int = 0
    count: int = 1
    source: str = ""

    def __str__(self) -> str:
        where = f" (from {self.source})" if self.source else ""
        return f"shard {self.index} of {self.count}{where}"


def _torch() -> tuple[int, int, str] | None:
    if "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), "torch.distributed"
    return None


def _jax() -> tuple[int, int, str] | None:
    if "jax" not in sys.modules:
        return None
    import jax

    if jax.process_count() > 1:
        return jax.process_index(), jax.process_count(), "jax.process_index()"
    return None


def _keras() -> tuple[int, int, str] | None:
    if "keras" not in sys.modules:
        return None
    import keras

    dist = keras.distribution.distribution()
    if dist is None:
        return None
    count = getattr(dist, "num_data_shards", None) or dist.num_processes
    return dist.data_shard_id, count, "keras.distribution"


def _tf_config() -> tuple[int, int, str] | None:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
        cluster, task = config["cluster"], config["task"]
        chiefs, workers = len(cluster.get("chief", [])), len(cluster.get("worker", []))
        count, kind, index = chiefs + workers, task["type"], int(task["index"])
        if kind in ("chief", "worker") and count:
            if not 0 <= index < (chiefs if kind == "chief" else workers):
                raise ValueError(f"task {task!r} is not in the cluster")
            index += chiefs if kind == "worker" else 0
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise InvalidArgumentError(
            f"shard='auto' cannot read TF_CONFIG ({err!r}): expected JSON with 'cluster' "
            "({'chief': [...], 'worker': [...]}) and 'task' ({'type': ..., 'index': ...})"
        ) from None
    if kind not in ("chief", "worker") or count < 1:
        return None
    return index, count, "TF_CONFIG"


def detect() -> Shard:
    """The shard of this process according to the active framework (see the module)."""
    for probe in (_torch, _jax, _keras, _tf_config):
        found = probe()
        if found is not None:
            return Shard(int(found[0]), int(found[1]), found[2])
    return Shard(0, 1, "no distributed framework active")


def parse(shard: Any, where: str) -> Shard:
    """``shard=`` as a :class:`Shard`, or a clear error naming ``where``."""
    if shard is None:
        return Shard()
    if isinstance(shard, str) and shard == "auto":
        return detect()
    if isinstance(shard, Shard):
        return shard
    ok = (
        isinstance(shard, tuple | list)
        and len(shard) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
    )
    if not ok or not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise InvalidArgumentError(
            f"cannot feed {where}: shard must be (index, count) with 0 <= index < count, "
            f"or 'auto'; got {shard!r}"
        )
    return Shard(int(shard[0]), int(shard[1]))


def check_mode(mode: Any, where: str) -> str:
    """``shard_batches=`` checked."""
    if mode not in MODES:
        raise InvalidArgumentError(
            f"cannot feed {where}: shard_batches must be 'pad' (repeat rows so that every "
            f"shard has as many batches) or 'drop' (leave the extra rows out); got {mode!r}"
        )
    return mode
