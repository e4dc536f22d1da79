"""The demo's steps, in order: the h5py and Keras 2 recipe, redone with lazyh5.

1. create an HDF5 file as that recipe does (``image (N, 32, 32, 3) uint8`` and ``label (N,)``),
   fill it block by block through write-through assignment, and assign a slice;
2. open it lazily, look around, and compute per-channel statistics in one streaming pass;
3. preprocess out of core (uint8 → normalised float16) into a new file with ``to_hdf5``;
4. train a small Keras model from that file through ``BatchLoader``, with a validation split;
5. draw ``summary.png``: sample images with their labels (and predictions), the loss curves
   and the figures of the run.

The images do not compress (:mod:`lazyh5.demo.images`), so both files are written
uncompressed: the file on disk is as big as the data.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..open import open_dataset
from ..options import memory_budget, threads
from ..write.create import create
from ..write.to_hdf5 import to_hdf5
from .images import CLASSES, IMAGE_SHAPE, synthetic_images
from .model import train
from .plot import summary_png
from .report import MB, Report, bar, dask_bar, gb, peak_rss_mib, say, say_peak_memory, step


def run_demo(n: int, out: Path, epochs: int = 2, fit: bool = True) -> Report:
    """Run the demo on ``n`` images in the folder ``out``; returns what it measured.

    Leaves ``images.h5``, ``images_float16.h5`` and ``summary.png`` in ``out``; ``fit=False``
    skips the training step.
    """
    out.mkdir(parents=True, exist_ok=True)
    raw_path, prep_path = out / "images.h5", out / "images_float16.h5"
    png_path = out / "summary.png"
    report = Report(n=n, out=out)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    print(
        f"lazyh5 demo: the h5py and Keras 2 recipe, redone with lazyh5, on {n:,} generated "
        f"{'×'.join(map(str, IMAGE_SHAPE))} uint8 images ({gb(n * np.prod(IMAGE_SHAPE))}) "
        f"in {out}/, {os.cpu_count()} CPUs",
        flush=True,
    )

    step(f"1. create {raw_path.name}: image ({n:,}, 32, 32, 3) uint8 and label ({n:,},) int64")
    _create(raw_path, n, rng, report)

    step(f"2. open {raw_path.name} lazily and look around")
    ds, mean, std = _explore(raw_path, report)

    step(f"3. preprocess out of core into {prep_path.name}: (image / 255 - mean) / std")
    _preprocess(ds, mean, std, prep_path, report)
    report.add("peak memory before training", f"{peak_rss_mib():,.0f} MiB")

    model = None
    if not fit:
        step("4. training skipped (--no-train)")
    else:
        step(f"4. train a small Keras model from {prep_path.name} through BatchLoader")
        model = train(prep_path, epochs, report)

    report.disk = {p.name: p.stat().st_size for p in (raw_path, prep_path)}
    disk = " + ".join(gb(size) for size in report.disk.values())
    report.add("disk", f"{disk} = {gb(sum(report.disk.values()))} (raw + preprocessed)")
    report.add("peak memory", f"{peak_rss_mib():,.0f} MiB (resident, whole process)")

    step(f"5. draw {png_path.name}")
    summary_png(raw_path, prep_path, model, report, png_path)

    step("summary")
    for what, figures in report.lines:
        say(f"{what:<28} {figures}")
    say(f"{'total time':<28} {time.perf_counter() - t0:.1f} s")
    print(f"\nfiles in {out.resolve()}/: {', '.join(report.disk)}, {png_path.name}", flush=True)
    return report


def _create(path: Path, n: int, rng: np.random.Generator, report: Report) -> None:
    """Step 1: create the file, fill it block by block, then assign rows 10..19."""
    ds = create(
        path,
        {"image": ((n, *IMAGE_SHAPE), "u1"), "label": ((n,), "i8")},
        dims={"image": ("sample", "y", "x", "channel")},
        mode="w",  # no compression: noisy images do not compress (lzf: 100% of the size)
    )
    try:
        rows = ds["image"].encoding["chunksizes"][0]
        say(f"HDF5 chunks of {rows} images ({rows * 3072 / 2**20:.1f} MiB), uncompressed")
        labels = rng.integers(0, len(CLASSES), n)
        ds["label"].h5[:] = labels
        t = time.perf_counter()
        writing = _fill(ds, labels, rows * max(1, 4096 // rows), rng)
        took = time.perf_counter() - t
        # The recipe's `image_set[10:20] = ...` / `label_set[10:20] = ...`: assign a slice.
        ds["image"].h5[10:20] = synthetic_images(np.arange(10), rng)
        ds["label"].h5[10:20] = np.arange(10)
    finally:
        ds.close()
    nbytes = n * int(np.prod(IMAGE_SHAPE))
    size = path.stat().st_size
    say(f"generated and wrote {n:,} images in {took:.1f} s ({n / took:,.0f} images/s)")
    say(
        f"write throughput {nbytes / writing / MB:,.0f} MB/s ({writing:.1f} s in .h5[...] = "
        f"assignments, the rest generating images)"
    )
    say("assigned rows 10..19: one image of each class, labels 0..9 (ds[v].h5[10:20] = ...)")
    say(f"{path.name}: {gb(size)} on disk ({size / (nbytes + 8 * n):.0%} of the data)")
    say_peak_memory()
    report.add("images", f"{n:,} ({gb(size)} on disk)")
    report.add(
        "write", f"{nbytes / writing / MB:,.0f} MB/s ({n / took:,.0f} images/s incl. making them)"
    )


def _fill(ds: Any, labels: np.ndarray, block: int, rng: np.random.Generator) -> float:
    """Write generated images in blocks of ``block`` rows (whole HDF5 chunks); returns the
    seconds spent in the assignments."""
    n, writing = len(labels), 0.0
    with bar(n, "writing images", "img", unit_scale=True) as progress:
        for start in range(0, n, block):
            stop = min(start + block, n)
            images = synthetic_images(labels[start:stop], rng)
            tw = time.perf_counter()
            ds["image"].h5[start:stop] = images  # write-through: only these rows
            writing += time.perf_counter() - tw
            progress.update(stop - start)
    return writing


def _explore(path: Path, report: Report) -> tuple[Any, float, float]:
    """Step 2: open lazily, slice, and compute the pixels' mean and std in one pass."""
    t = time.perf_counter()
    ds = open_dataset(path)  # dask chunks sized by lazyh5's memory budget
    say(f"opened in {1000 * (time.perf_counter() - t):.0f} ms: metadata only, no image read")
    rows, hdf5_rows = ds["image"].chunks[0][0], ds["image"].encoding["chunksizes"][0]
    say(
        f"dask chunks of {rows:,} rows = {rows // hdf5_rows} HDF5 chunks: the memory budget "
        f"({memory_budget() >> 20} MiB) shared by {threads()} threads, counted as float64"
    )
    print(ds, flush=True)

    some = ds.isel(sample=slice(10, 20))  # lazy: a view of rows 10..19
    names = [CLASSES[i] for i in some["label"].values]  # reads 80 bytes
    say(f"ds.isel(sample=slice(10, 20)).label → {', '.join(names)}")
    counts = np.bincount(ds["label"].values, minlength=len(CLASSES))
    say(
        f"images per class: {', '.join(f'{c} {k:,}' for c, k in zip(CLASSES, counts, strict=True))}"
    )
    image = ds["image"]
    t = time.perf_counter()
    mean, std = _mean_std(image)
    took = time.perf_counter() - t
    rate = f"{image.nbytes / took / MB:,.0f} MB/s"
    say(
        f"mean {mean:.4f}, std {std:.4f} (of image / 255) in {took:.1f} s: "
        f"{rate}, {len(image) / took:,.0f} images/s"
    )
    say_peak_memory()
    report.add("mean/std pass (read)", f"{rate} ({len(image) / took:,.0f} images/s)")
    return ds, mean, std


def _mean_std(image: Any) -> tuple[float, float]:
    """Mean and standard deviation of ``image / 255``, in one streaming pass over the file.

    Two lazy reductions of the uint8 data, accumulated in float64, computed together.
    """
    import xarray as xr

    moments = xr.Dataset(
        {"mean": image.mean(dtype="f8"), "mean_sq": (image.astype("u2") ** 2).mean(dtype="f8")}
    )
    with (
        bar(0, "mean and std", "task") as progress,
        dask_bar(progress, lambda name: True, grow=True),
    ):
        moments = moments.compute()
    mean = float(moments["mean"]) / 255
    std = float(np.sqrt(moments["mean_sq"] - moments["mean"] ** 2)) / 255
    return mean, std


def _preprocess(ds: Any, mean: float, std: float, path: Path, report: Report) -> None:
    """Step 3: stream the normalised images into a new float16 file with ``to_hdf5``.

    float16 keeps the 256 levels of the uint8 data distinct (its spacing near 2 is 0.002,
    a level is 0.013 apart) in half the bytes of float32: the file is 2× the raw one
    instead of 4×, preprocessing and training read less, and Keras layers cast their
    inputs to float32.
    """
    mean, std = np.float32(mean), np.float32(std)
    image = ((ds["image"].astype("float32") / np.float32(255) - mean) / std).astype("float16")
    image.attrs.update(description="(image / 255 - mean) / std", mean=float(mean), std=float(std))
    prepped = ds.assign(image=image)
    n = len(image)
    t = time.perf_counter()
    with (
        bar(0, "preprocessing", "block") as progress,
        dask_bar(progress, lambda name: "lazyh5-store" in name, grow=True),
    ):
        # to_hdf5 writes each block as soon as it is computed (image, then label)
        to_hdf5(path, prepped, mode="w", progress=False)
    took = time.perf_counter() - t
    read, written, size = ds["image"].nbytes, image.nbytes, path.stat().st_size
    say(f"{n:,} images in {took:.1f} s: {n / took:,.0f} images/s")
    say(
        f"read {read / took / MB:,.0f} MB/s of uint8, wrote {written / took / MB:,.0f} MB/s of "
        f"float16 ({gb(written)}, {gb(size)} on disk)"
    )
    say_peak_memory()
    report.add(
        "preprocess (to_hdf5)",
        f"{n / took:,.0f} images/s, read {read / took / MB:,.0f} MB/s, "
        f"wrote {written / took / MB:,.0f} MB/s",
    )
