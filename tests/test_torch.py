"""BatchLoader.torch(): a real torch DataLoader with worker processes (fork and spawn) on
real files: every row once per epoch, a new order each epoch, shards, pinning, resuming
(also through torchdata's StatefulDataLoader), and Keras' torch backend."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

import lazyh5
from lazyh5 import BatchLoader
from lazyh5.errors import InvalidArgumentError, UnsupportedDtypeError
from tests._files import dict_loader

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# torchdata calls an API this torch deprecates, once per DataLoader iterator
pytestmark = pytest.mark.filterwarnings("ignore:'set_vital' is deprecated:UserWarning")


def _loader(path, **kwargs) -> BatchLoader:
    """Small blocks: several windows per epoch, so each worker gets some."""
    kwargs = {"batch_size": 50, "seed": 0, "block_size": "8KiB", **kwargs}
    return BatchLoader(lazyh5.open_dataset(path), "image", "label", **kwargs)


def _labels(batches) -> list[tuple[int, ...]]:
    return [tuple(y.tolist()) for _, y in batches]


def _check_rows(path, batches) -> np.ndarray:
    """The batches' rows are the file's (as h5py reads them), x paired with its y."""
    labels = np.concatenate([y.numpy() for _, y in batches])
    images = np.concatenate([x.numpy() for x, _ in batches])
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(images, f["image"][...][labels])
    return labels


@pytest.mark.parametrize(
    ("context", "persistent"), [("fork", False), ("spawn", True)], ids=["fork", "spawn-persistent"]
)
def test_workers_serve_the_loaders_batches_every_row_once_new_order_each_epoch(
    feed_file, context, persistent
):
    loader = _loader(feed_file)
    dataset = loader.torch()
    dl = DataLoader(
        dataset,
        batch_size=None,
        num_workers=2,
        multiprocessing_context=context,
        persistent_workers=persistent,
    )
    assert len(dl) == len(loader) == 40
    orders = []
    for epoch in range(2):
        batches = list(dl)
        assert all(isinstance(x, torch.Tensor) and x.dtype == torch.float32 for x, _ in batches)
        labels = _check_rows(feed_file, batches)
        np.testing.assert_array_equal(np.sort(labels), np.arange(2000))  # each row once
        # the loader's own batches of that epoch, interleaved by the DataLoader
        assert sorted(_labels(batches)) == sorted(_labels(loader.batches(epoch)))
        assert _labels(batches) != _labels(loader.batches(epoch))  # two workers
        orders.append(labels)
    assert not np.array_equal(orders[0], orders[1])  # a new order each epoch


def test_forked_workers_open_the_file_anew(feed_file):
    """No HDF5 handle the parent opened is used in a forked worker: the worker closes its
    copy of it and reads through a file it opened itself; the parent's still works."""
    from xarray.backends.file_manager import FILE_CACHE

    loader = _loader(feed_file)
    list(loader.batches(0))  # the parent has the file open
    mine = ("lazyh5", os.path.abspath(feed_file))  # other tests' files may be open too
    (parent,) = [f for k, f in FILE_CACHE.items() if k[-1][:2] == mine]

    def inspect(batch):  # runs in the worker, on each batch
        from lazyh5.feed import torch as adapter

        inherited = [f for f in adapter._INHERITED if id(f) == id(parent)]
        own = [f for k, f in FILE_CACHE.items() if k[-1][:2] == mine]
        closed = len(inherited) == 1 and not inherited[0].id.valid
        fresh = len(own) == 1 and own[0] is not parent and own[0].id.valid
        return batch, closed, fresh, os.getpid()

    dl = DataLoader(
        loader.torch(),
        batch_size=None,
        num_workers=2,
        collate_fn=inspect,
        multiprocessing_context="fork",
    )
    seen = list(dl)
    assert all(closed and fresh for _, closed, fresh, _ in seen)
    assert {pid for *_, pid in seen} - {os.getpid()} and len({pid for *_, pid in seen}) == 2
    assert parent.id.valid and len(list(loader.batches(1))) == 40  # the parent reads on


def test_workers_forked_while_another_thread_reads_do_not_hang(feed_file):
    """A fork waits until no thread holds the HDF5 lock: a worker forked mid-read would
    otherwise inherit the lock held, and hang at its first read."""
    import threading
    import time

    from xarray.backends.locks import HDF5_LOCK

    from lazyh5.backend import locks

    main = threading.get_ident()
    held, forked = threading.Event(), threading.Event()

    def fork_waits() -> bool:  # the main thread waits in the fork hook for the lock
        frame = sys._current_frames().get(main)
        while frame is not None and frame.f_code is not locks._take_before_fork.__code__:
            frame = frame.f_back
        return frame is not None

    def read_in_progress() -> None:  # holds the lock until the fork waits for it
        with HDF5_LOCK:
            held.set()
            while not (forked.is_set() or fork_waits()):
                time.sleep(0.001)

    loader = _loader(feed_file, shuffle=True)
    reader = threading.Thread(target=read_in_progress)
    reader.start()
    held.wait()
    dl = DataLoader(
        loader.torch(),
        batch_size=None,
        num_workers=1,
        multiprocessing_context="fork",
        timeout=60,  # a hung worker fails the test instead of hanging it
    )
    batches = iter(dl)  # forks the worker
    forked.set()
    reader.join()
    assert sorted(_check_rows(feed_file, list(batches)).tolist()) == list(range(2000))


def test_shards_split_among_workers_cover_the_epoch_with_as_many_batches(tmp_path):
    from tests._files import write_feed

    path = write_feed(tmp_path / "odd.h5", n=1999)  # not a multiple of 2: padded
    per_shard = []
    for index in range(2):
        loader = _loader(path, shard=(index, 2))
        dl = DataLoader(loader.torch(), batch_size=None, num_workers=2)
        batches = list(dl)
        assert len(batches) == len(loader) == 20
        per_shard.append(_check_rows(path, batches))
    labels = np.concatenate(per_shard)
    rows, counts = np.unique(labels, return_counts=True)
    np.testing.assert_array_equal(rows, np.arange(1999))  # together: every row
    assert sorted(counts)[-2:] == [1, 2]  # one row repeated, to give both 20 batches


def test_drop_remainder_with_workers_drops_only_the_epochs_last_batch(feed_file):
    loader = _loader(feed_file, batch_size=64, drop_remainder=True)  # 2000 = 31 * 64 + 16
    batches = list(DataLoader(loader.torch(), batch_size=None, num_workers=2))
    assert len(batches) == len(loader) == 31 and all(len(y) == 64 for _, y in batches)
    assert sorted(_labels(batches)) == sorted(_labels(loader.batches(0)))


_DDP_RANK = """
import json, os, sys
import torch.distributed as dist
from torch.utils.data import DataLoader
import lazyh5

dist.init_process_group("gloo", init_method="tcp://127.0.0.1:" + sys.argv[2],
                        rank=int(sys.argv[3]), world_size=2)
loader = lazyh5.BatchLoader(lazyh5.open_dataset(sys.argv[1]), "image", "label",
                            batch_size=50, seed=0, block_size="8KiB", shard="auto")
dataset = loader.torch()
epochs = []
for epoch in range(2):
    dataset.set_epoch(epoch)
    epochs.append([y.tolist() for _, y in DataLoader(dataset, batch_size=None, num_workers=2)])
print(json.dumps({"shard": str(loader.shard), "epochs": epochs}))
dist.destroy_process_group()
"""


def test_ddp_ranks_take_their_shard_from_torch_distributed(tmp_path):
    """Two real processes joined by torch.distributed (gloo on loopback), each feeding
    shard="auto" through a DataLoader with 2 workers: together every row once per
    epoch, as many batches on each rank, a new order each epoch."""
    import socket

    from tests._files import write_feed

    path = write_feed(tmp_path / "ddp.h5", n=1999)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", _DDP_RANK, str(path), str(port), str(rank)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outs = [p.communicate(timeout=240) for p in ranks]
    assert all(p.returncode == 0 for p in ranks), [err[-2000:] for _, err in outs]
    got = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert [g["shard"] for g in got] == [
        f"shard {r} of 2 (from torch.distributed)" for r in range(2)
    ]
    for epoch in range(2):
        per_rank = [g["epochs"][epoch] for g in got]
        assert len(per_rank[0]) == len(per_rank[1]) == 20  # 1000 rows each (one padded)
        labels = np.concatenate([np.concatenate(batches) for batches in per_rank])
        np.testing.assert_array_equal(np.unique(labels), np.arange(1999))
    assert got[0]["epochs"][0] != got[0]["epochs"][1]


def test_main_process_yields_the_loaders_epochs_in_its_order(feed_file):
    loader = _loader(feed_file)
    dataset = loader.torch()
    for epoch in range(2):
        got = list(DataLoader(dataset, batch_size=None))
        assert _labels(got) == _labels(loader.batches(epoch))
    dataset.set_epoch(7)
    assert _labels(dataset) == _labels(loader.batches(7))
    assert dataset.state_dict()["epoch"] == 8


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker:UserWarning")
@pytest.mark.parametrize("persistent", [False, True])
def test_set_epoch_reaches_every_worker(feed_file, persistent):
    loader = _loader(feed_file)
    dataset = loader.torch()
    dl = DataLoader(dataset, batch_size=None, num_workers=2, persistent_workers=persistent)
    for epoch in (5, 2):
        dataset.set_epoch(epoch)
        assert sorted(_labels(dl)) == sorted(_labels(loader.batches(epoch)))
    # without set_epoch, each iteration is the next epoch, whatever the worker count
    assert sorted(_labels(DataLoader(dataset, batch_size=None))) == sorted(
        _labels(loader.batches(3))
    )
    dl3 = DataLoader(dataset, batch_size=None, num_workers=3)
    assert sorted(_labels(dl3)) == sorted(_labels(loader.batches(4)))


@pytest.mark.filterwarnings("ignore:.*pin_memory.*:UserWarning")
def test_pin_memory(feed_file):
    loader = _loader(feed_file)
    batches = list(DataLoader(loader.torch(), batch_size=None, num_workers=2, pin_memory=True))
    # With CUDA the batches arrive in pinned memory; without an accelerator torch skips
    # pinning (recent releases warn that it does) and hands them over as they are.
    pinned = torch.cuda.is_available()
    assert all(x.is_pinned() == pinned and y.is_pinned() == pinned for x, y in batches)
    np.testing.assert_array_equal(np.sort(_check_rows(feed_file, batches)), np.arange(2000))


def test_dict_inputs_and_sample_weight_keep_their_structure(feed_file):
    loader = dict_loader(feed_file)
    (x, _, w), (x2, y2, _) = DataLoader(loader.torch(), batch_size=None, num_workers=1)
    assert set(x) == {"pixels"} and isinstance(x["pixels"], torch.Tensor)
    assert x2["pixels"].shape == (36, 4, 4) and float(w.sum()) == 64.0
    np.testing.assert_array_equal(y2.numpy(), np.arange(64, 100))


def test_resume_in_the_main_process_through_json(feed_file):
    dataset = _loader(feed_file).torch()
    first = []
    for batch in dataset:
        first.append(batch)
        if len(first) == 7:
            break
    state = json.loads(json.dumps(dataset.state_dict()))
    assert (state["epoch"], state["batch"]) == (0, 7)
    resumed = _loader(feed_file).torch()
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert _labels(first + rest) == _labels(_loader(feed_file).batches(0))
    assert _labels(resumed) == _labels(_loader(feed_file).batches(1))  # then epoch 1


def test_a_loaders_state_is_split_among_workers(feed_file):
    """A loader restored from its state (or a dataset given it) serves, over all
    workers, exactly the batches the loader had left in that epoch."""
    loader = _loader(feed_file)
    it = iter(loader)
    done = [next(it) for _ in range(11)]
    resumed = _loader(feed_file)
    resumed.load_state_dict(loader.state_dict())
    rest = list(DataLoader(resumed.torch(), batch_size=None, num_workers=2))
    assert sorted(_labels(done) + _labels(rest)) == sorted(_labels(loader.batches(0)))


@pytest.mark.parametrize("workers", [0, 2])
def test_stateful_dataloader_resumes_mid_epoch(feed_file, workers):
    stateful = pytest.importorskip("torchdata.stateful_dataloader")

    def dataloader():
        return stateful.StatefulDataLoader(
            _loader(feed_file).torch(), batch_size=None, num_workers=workers
        )

    original = dataloader()
    epochs = [_labels(original) for _ in range(2)]
    run = dataloader()
    before = []
    for batch in run:
        before.append(batch)
        if len(before) == 13:
            state = copy.deepcopy(run.state_dict())  # saved with the model
            break
    resumed = dataloader()
    resumed.load_state_dict(state)
    assert _labels(before) + _labels(resumed) == epochs[0]  # the same batches, same order
    assert _labels(resumed) == epochs[1]  # then the next epoch as the original run


def test_errors_are_clear(feed_file, tmp_path):
    dataset = _loader(feed_file).torch()
    with pytest.raises(InvalidArgumentError, match="set_epoch needs an epoch >= 0"):
        dataset.set_epoch(-1)
    unseeded = _loader(feed_file, seed=None).torch()
    with pytest.raises(InvalidArgumentError, match=r"seed=None.*BatchLoader\(\.\.\., seed=0\)"):
        unseeded.state_dict()
    worker_state = {**dataset.state_dict(), "worker": [1, 2]}
    with pytest.raises(InvalidArgumentError, match=r"worker 1 of 2 .* same num_workers"):
        dataset.load_state_dict(worker_state)
    other = _loader(feed_file, batch_size=64).torch()
    with pytest.raises(InvalidArgumentError, match="batch_size=50"):
        other.load_state_dict(dataset.state_dict())
    if np.dtype(np.longdouble).itemsize > 8:  # a dtype numpy has and torch lacks
        with h5py.File(tmp_path / "long.h5", "w") as f:
            f.create_dataset("x", data=np.zeros(10, np.longdouble))
        wide = BatchLoader(lazyh5.open_dataset(tmp_path / "long.h5"), "x", batch_size=4).torch()
        with pytest.raises(UnsupportedDtypeError, match=r"float128 from .*long\.h5.*astype"):
            next(iter(wide))
    no_torch = "import sys; sys.modules['torch'] = None\n" + textwrap.dedent(
        f"""
        import lazyh5
        loader = lazyh5.BatchLoader(lazyh5.open_dataset({str(feed_file)!r}), "label")
        try:
            loader.torch()
        except ImportError as err:
            print(err)
        """
    )
    out = _python(no_torch, tmp_path)
    assert "pip install lazyh5[torch]" in out.stdout, out.stderr[-2000:]


def test_unseeded_shuffle_is_one_order_for_all_workers(feed_file):
    loader = _loader(feed_file, seed=None)
    batches = list(DataLoader(loader.torch(), batch_size=None, num_workers=2))
    np.testing.assert_array_equal(np.sort(_check_rows(feed_file, batches)), np.arange(2000))


def _python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``python -c CODE`` with lazyh5 importable from this checkout."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=240,
    )


_KERAS_FIT = """
import numpy as np, h5py, keras, lazyh5
rng = np.random.default_rng(0)
x = rng.normal(size=(2000, 8)).astype("f4")
with h5py.File("fit.h5", "w") as f:
    f.create_dataset("x", data=x, chunks=(250, 8))
    f.create_dataset("y", data=(x[:, 0] + x[:, 1] > 0).astype("i8"))
loader = lazyh5.BatchLoader(lazyh5.open_dataset("fit.h5"), "x", "y", batch_size=64, seed=0)
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
model.compile(keras.optimizers.SGD(0.1), loss)
history = model.fit(loader.keras(), epochs=4, shuffle=False, verbose=0)
print("backend", keras.backend.backend(), "losses", history.history["loss"])
"""


@pytest.mark.keras
def test_keras_fit_on_the_torch_backend(tmp_path):
    pytest.importorskip("keras")
    out = _python(_KERAS_FIT, tmp_path, KERAS_BACKEND="torch")
    assert out.returncode == 0, out.stderr[-3000:]
    m = re.search(r"backend torch losses \[(.*)\]", out.stdout)
    assert m, out.stdout + out.stderr[-2000:]
    losses = [float(v) for v in m[1].split(",")]
    assert len(losses) == 4 and losses[-1] < 0.6 * losses[0]  # it learns


class _DecodeThreads(torch.utils.data.IterableDataset):
    def __iter__(self):
        from lazyh5.backend.threads import decode_threads

        yield decode_threads()


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker:UserWarning")
@pytest.mark.parametrize("workers", [2, 3])
def test_dataloader_workers_share_the_cpus_for_decoding(workers):
    """Each of k workers decodes with cpus // k threads (at least 1), not with all."""
    from lazyh5.backend.threads import decode_threads

    cpus = len(os.sched_getaffinity(0))
    assert decode_threads() == cpus  # the training process: all of them
    got = list(DataLoader(_DecodeThreads(), batch_size=None, num_workers=workers))
    assert got == [max(1, cpus // workers)] * workers
