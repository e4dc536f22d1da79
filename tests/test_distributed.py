"""lazyh5 on a real dask.distributed LocalCluster (2 worker processes).

Every result is compared with the same computation on dask's local threaded scheduler.
"""

from __future__ import annotations

import os
import signal
import time

import dask
import dask.array as da
import h5py
import numpy as np
import pytest
import xarray as xr

import lazyh5

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.distributed

N = 2048


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            worker_class=distributed.Nanny,
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    """gzip+shuffle images (parallel decode), lzf labels (h5py fallback), a partial edge chunk."""
    path = tmp_path_factory.mktemp("dist") / "data.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.create_dataset(
            "image",
            data=rng.integers(0, 255, (N, 8, 8, 3)).astype("f4") / 255,
            chunks=(100, 8, 8, 3),
            compression="gzip",
            shuffle=True,
        )
        f.create_dataset("label", data=rng.integers(0, 10, N), chunks=(300,), compression="lzf")
    return path


def _local(obj):
    with dask.config.set(scheduler="threads"):
        return obj.compute()


def _open(path, rows=600, **kwargs):
    # 600 rows: whole HDF5 chunks of both datasets (100 and 300 rows).
    return lazyh5.open_dataset(path, chunks={"sample": rows}, **kwargs)


def test_compute_and_reductions_match_local_scheduler(client, data_file):
    ds = _open(data_file)
    assert dask.base.get_scheduler() == client.get  # the cluster is the default here
    on_cluster = ds.compute()
    xr.testing.assert_identical(on_cluster, _local(ds))
    for expr in (
        ds["image"].mean(dim=("sample", "image_dim_3")),
        ds["image"].isel(sample=slice(37, 1900, 3)).std(),
        ds["image"].where(ds["label"] > 4).mean(dim=("image_dim_1", "image_dim_2")),
        ds["image"].isel(sample=[5, 400, 401, 2047]),
    ):
        np.testing.assert_array_equal(expr.compute().values, _local(expr).values)
    ds.close()


def _open_files(path):
    """(pid, id) of the h5py handles for ``path`` in this process's xarray file cache."""
    from xarray.backends.file_manager import FILE_CACHE

    return sorted(
        (os.getpid(), id(f))
        for f in list(FILE_CACHE.values())
        if isinstance(f, h5py.File) and f.id.valid and f.filename == str(path)
    )


_META = np.empty((0, 0, 0, 0), "f4")  # given, so dask does not call _gated to learn it


def _gated(block, release: str):
    """``block``, once the file ``release`` exists: tasks wait there until the test has
    seen what it looks for."""
    while not os.path.exists(release):
        time.sleep(0.01)  # polling interval
    return block


def _wait_until(found, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not found():
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.01)  # polling interval


def test_files_reopen_by_path_and_stay_cached_per_worker(client, data_file, tmp_path):
    ds = _open(data_file, rows=200, drop_variables="label")  # 11 tasks
    release = tmp_path / "release"
    expr = ds["image"].data.map_blocks(_gated, release=str(release), meta=_META).sum()
    future = client.compute(expr)
    seen: dict[str, set] = {}

    def look() -> bool:
        for worker, handles in client.run(_open_files, str(data_file)).items():
            assert len(handles) <= 1, handles  # never two handles for one file
            seen.setdefault(worker, set()).update(handles)
        return any(seen.values())

    _wait_until(look, "worker holding the file")  # tasks wait at the gate meanwhile
    release.touch()
    while not future.done():
        look()
    np.testing.assert_allclose(future.result(), _local(expr), rtol=1e-6)
    # Each worker that ran tasks opened the file itself, by path, in its own process,
    # and kept using that one handle for all of the computation's tasks.
    busy = {w: h for w, h in seen.items() if h}
    assert busy, seen
    for handles in busy.values():
        assert len(handles) == 1, busy
        ((pid, _),) = handles
        assert pid != os.getpid()
    ds.close()


def test_workers_decode_in_their_task_thread(client):
    """On workers, the cluster already runs a task per core: one decode thread each."""
    from lazyh5.backend.threads import decode_threads

    futures = [client.submit(decode_threads, pure=False) for _ in range(4)]
    assert client.gather(futures) == [1, 1, 1, 1]


def test_connect_by_scheduler_address(client, data_file):
    """What users with an existing cluster do: Client("tcp://host:8786")."""
    address = client.scheduler.address
    assert address.startswith("tcp://")
    with distributed.Client(address, set_as_default=False) as other:
        ds = _open(data_file)
        total = other.compute(ds["image"].sum()).result()
        np.testing.assert_allclose(total.values, _local(ds["image"].sum()).values, rtol=1e-6)
        ds.close()


def test_writable_store_uses_a_distributed_lock_per_file(client, data_file, tmp_path):
    from lazyh5.backend.locks import ClusterFileLock
    from lazyh5.backend.store import H5Store

    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", (64, 4), "i8", chunks=(8, 4), fillvalue=-1)
    store = H5Store(path, "r+")
    assert store.cluster_locked and isinstance(store.lock, ClusterFileLock)
    dist = store.lock.cluster_locks
    assert len(dist) == 1 and isinstance(dist[0], distributed.Lock)
    assert dist[0].name == str(path)
    # Opening read what it needed inside the lock and closed the file on release:
    # the client does not keep it open, so the workers can open it.
    assert _open_files(path) == []

    def write_rows(store, rows):
        # Every access holds the file's cluster-wide lock; the file is opened inside
        # it and closed (flushed) when it is released, so each worker opens it afresh.
        for r in rows:
            with store.lock:
                store.acquire(needs_lock=False)["x"][r] = r
        return os.getpid(), _open_files(store.filename)

    client.wait_for_workers(2, timeout=60)
    workers = sorted(client.scheduler_info()["workers"])[:2]
    futures = [  # even rows on one worker, odd rows on the other, at the same time
        client.submit(write_rows, store, list(range(w, 64, 2)), workers=[workers[w]], pure=False)
        for w in (0, 1)
    ]
    (pid0, left0), (pid1, left1) = client.gather(futures)
    assert len({pid0, pid1, os.getpid()}) == 3  # two worker processes wrote
    assert left0 == left1 == []  # nothing left open on the workers
    with store.lock:  # re-entrant in one thread: the file closes at the outer release
        with store.lock:
            values = store.acquire(needs_lock=False)["x"][...]
        assert _open_files(path)
    assert _open_files(path) == []
    np.testing.assert_array_equal(values, np.repeat(np.arange(64), 4).reshape(64, 4))
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["x"][...], values)


def _write_inputs(tmp_path, name):
    path = tmp_path / name
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(4000.0).reshape(1000, 4), chunks=(100, 4))
        f.create_dataset("y", data=np.zeros((1000, 4)), chunks=(100, 4), compression="gzip")
    return path


def test_to_hdf5_on_the_cluster_matches_local(client, tmp_path):
    src = _write_inputs(tmp_path, "src.h5")
    ds = lazyh5.open_dataset(src)
    result = (ds * 2 + 1).astype("f4")
    with dask.config.set(scheduler="threads"):
        lazyh5.to_hdf5(tmp_path / "local.h5", result, progress=False)
    lazyh5.to_hdf5(tmp_path / "cluster.h5", result, progress=False)
    ds.close()
    local = lazyh5.open_dataset(tmp_path / "local.h5").load()
    on_cluster = lazyh5.open_dataset(tmp_path / "cluster.h5").load()
    xr.testing.assert_identical(on_cluster, local)


def _assignments(path, dims):
    """Write-through assignments that read the file they write, as users write them."""
    ds = lazyh5.open_dataset(path, mode="r+", dims=dims, chunks={"sample": 200})
    ds["y"].h5[:] = ds["x"] * 3 + ds["y"]  # in place: each block reads only itself
    x = ds["x"]
    ds["x"].h5[:] = (x - x.mean()) / x.std()  # reductions first, then in place
    ds["y"].h5[1:] = ds["y"].data[:-1] * 0.5 + ds["x"].data[1:]  # a shift: staged, then copied
    ds.isel(sample=slice(300, 500))["x"].h5[10:20, 1] = np.arange(10.0)  # numpy values
    on_here = ds.compute()  # reading a writable file, on whatever scheduler is active
    ds.close()
    return on_here


def test_h5_accessor_assignment_on_the_cluster_matches_local(client, tmp_path):
    dims = {"x": ("sample", "c"), "y": ("sample", "c")}
    # 8 KiB blocks (a budget of 64 KiB shared by 8): 200 rows (two HDF5 chunks), five
    # blocks per variable.
    with lazyh5.set_options(memory_budget="64KiB"):
        with dask.config.set(scheduler="threads"):  # opened and written without the cluster
            local = _assignments(_write_inputs(tmp_path, "local.h5"), dims)
        path = _write_inputs(tmp_path, "cluster.h5")
        # Read-only first, as users explore before writing: the workers' read-only
        # handles close a moment after the computation; opening r+ waits for that.
        ro = lazyh5.open_dataset(path, chunks={"sample": 200})
        ro.sum().compute()
        ro.close()
        with distributed.get_task_stream(client) as stream:
            on_cluster = _assignments(path, dims)
    xr.testing.assert_identical(on_cluster, local)
    # The workers did the reading, computing and writing; nothing is left open.
    names = {t["key"][0] if isinstance(t["key"], tuple) else t["key"] for t in stream.data}
    assert any(n.startswith("_write_block") for n in names), names
    assert {t["worker"] for t in stream.data}
    assert _open_files(path) == []
    assert all(not handles for handles in client.run(_open_files, str(path)).values())
    with h5py.File(path, "r") as f, h5py.File(tmp_path / "local.h5", "r") as g:
        for name in ("x", "y"):
            np.testing.assert_array_equal(f[name][...], g[name][...])
        np.testing.assert_array_equal(f["x"][310:320, 1], np.arange(10.0))


def test_assignment_to_a_file_opened_before_the_client_runs_locally(client, tmp_path):
    """Its lock works in one process only, which holds the file: computed here instead."""
    from lazyh5.backend.view import h5_sources

    path = _write_inputs(tmp_path, "early.h5")
    with dask.config.set(scheduler="threads"):  # as if no Client existed yet
        ds = lazyh5.open_dataset(path, mode="r+", dims={"x": ("sample", "c"), "y": ("sample", "c")})
    (source,) = h5_sources(ds["x"].data)
    assert source.store.mode == "r+" and not source.store.cluster_locked
    with distributed.get_task_stream(client) as stream:
        ds["y"].h5[:] = ds["x"] * 3 + ds["y"] + 1
    assert stream.data == []  # nothing ran on the cluster
    ds.close()
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["y"][...], np.arange(4000.0).reshape(1000, 4) * 3 + 1)


def test_batch_loader_on_the_cluster_matches_local(client, data_file):
    ds = lazyh5.open_dataset(data_file)
    loader = lazyh5.BatchLoader(
        ds, "image", "label", batch_size=100, seed=3, block_size="128KiB", window=2
    )
    assert len(loader.plan) > 4  # several blocks, computed on the workers

    def epoch(ld):
        return [(x.copy(), y.copy()) for x, y in ld.batches(epoch=1)]

    with distributed.get_task_stream(client) as stream:
        on_cluster = epoch(loader)
    assert {t["worker"] for t in stream.data} and len(stream.data) >= len(loader.plan)
    with dask.config.set(scheduler="threads"):
        local = epoch(loader)
    assert len(on_cluster) == len(local) == -(-N // 100)
    for (xc, yc), (xl, yl) in zip(on_cluster, local, strict=True):
        np.testing.assert_array_equal(xc, xl)
        np.testing.assert_array_equal(yc, yl)
    # every row exactly once
    labels = np.concatenate([y for _, y in on_cluster])
    assert (
        np.bincount(labels, minlength=10).tolist()
        == np.bincount(ds["label"].values, minlength=10).tolist()
    )
    ds.close()


def test_killing_a_worker_mid_computation_still_gives_the_right_result(client, data_file, tmp_path):
    ds = _open(data_file, rows=200, drop_variables="label")  # 11 tasks
    release = tmp_path / "release"
    gated = ds["image"].data.map_blocks(_gated, release=str(release), meta=_META)
    expr = ds["image"].copy(data=gated).sum(dim="sample")
    release.touch()
    expected = _local(expr)
    release.unlink()
    future = client.compute(expr)
    pids = client.run(os.getpid)
    busy: list[str] = []

    def find_busy() -> bool:
        busy[:] = [w for w, tasks in client.processing().items() if tasks]
        return bool(busy)

    _wait_until(find_busy, "busy worker")  # its tasks wait at the gate
    os.kill(pids[busy[0]], signal.SIGKILL)
    assert not future.done()  # the kill came while the compute was running
    release.touch()
    result = future.result(timeout=60)
    np.testing.assert_array_equal(result.values, expected.values)
    # The nanny restarted the killed process (under a new address): the cluster is whole.
    client.wait_for_workers(2, timeout=30)
    assert busy[0] not in client.scheduler_info()["workers"]
    ds.close()


def test_blocks_in_flight_on_a_cluster_stay_within_the_window(client):
    """to_hdf5 on a cluster writes blocks here as they arrive: the futures this process
    holds (blocks submitted and not yet written) never exceed the window."""
    from lazyh5.write.graph import store_blocks

    x = da.arange(40 * 64 * 16, dtype="f4").reshape(40 * 64, 16).rechunk((64, 16)) * 2
    base = len(client.futures)
    held: list[int] = []
    out = np.zeros(x.shape, "f4")

    def write(idx, region, block):
        held.append(len(client.futures) - base)
        out[region] = block

    assert store_blocks(x, write, progress=False) == 40
    np.testing.assert_array_equal(out, np.arange(40 * 64 * 16, dtype="f4").reshape(-1, 16) * 2)
    assert len(held) == 40 and 0 < max(held) <= 2 * sum(client.nthreads().values()), held
