"""``lazyh5 demo``: the h5py and Keras 2 recipe, redone with lazyh5, on ~1 GB of images.

1. create an HDF5 file as that recipe does (``image (N, 32, 32, 3) uint8`` and ``label (N,)``),
   fill it block by block through write-through assignment, and assign a slice;
2. open it lazily, look around, and compute per-channel statistics in one streaming pass;
3. preprocess out of core (uint8 → normalised float16) into a new file with ``to_hdf5``;
4. train a small Keras model from that file through ``BatchLoader``, with a validation split;
5. draw ``summary.png``: sample images with their labels (and predictions), the loss curves
   and the figures of the run.

Every step prints what it did, how fast (MB/s, images/s, samples/s) and the peak memory of
the process so far. The images are coloured shapes (ten classes) on noisy backgrounds: the
noise keeps them from compressing (lzf stores them at 100% of their size), so both files are
written uncompressed: the file on disk is as big as the data.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: Named sizes (number of images). 350,000 images of 32×32×3 bytes are 1.08 GB.
SIZES = {"tiny": 1_000, "small": 20_000, "medium": 100_000, "large": 350_000}
DEFAULT_SIZE = "large"
CLASSES = (
    "disc",
    "square",
    "ring",
    "plus",
    "cross",
    "h-stripes",
    "v-stripes",
    "triangle",
    "checker",
    "diamond",
)
IMAGE_SHAPE = (32, 32, 3)
BATCH_SIZE = 128
MB = 1e6


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``lazyh5 demo`` and its options on the ``lazyh5`` command line."""
    names = ", ".join(f"{k}={v:,}" for k, v in SIZES.items())
    p = sub.add_parser(
        "demo",
        help="the h5py and Keras 2 recipe, redone with lazyh5, on generated images (about 1 GB)",
        description="Create, assign, open lazily, preprocess out of core and train a Keras "
        "model on generated images; leaves the files and summary.png in --out.",
    )
    p.add_argument(
        "--size",
        default=DEFAULT_SIZE,
        help=f"number of images (e.g. 50000 or 50k), or one of {names} "
        f"(default: {DEFAULT_SIZE}, {SIZES[DEFAULT_SIZE] * 3072 / 1e9:.2f} GB of images)",
    )
    p.add_argument("--out", default="lazyh5-demo", help="output folder (default: lazyh5-demo)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs (default: 2)")
    p.add_argument("--no-train", action="store_true", help="skip the Keras training step")
    p.set_defaults(run=run)


def parse_size(spec: str) -> int:
    """The number of images for ``--size``: a name of :data:`SIZES`, ``N``, ``Nk`` or ``NM``.

    Raises
    ------
    ValueError
        For anything else, or fewer than 100 images (the demo assigns rows 10..19 and
        splits off a validation set).
    """
    spec = str(spec).strip()
    if spec.lower() in SIZES:
        return SIZES[spec.lower()]
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kKmM]?)", spec.replace(",", "").replace("_", ""))
    if not m:
        raise ValueError(
            f"--size {spec!r}: expected a number of images or one of {', '.join(SIZES)}"
        )
    n = int(float(m.group(1)) * {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2).lower()])
    if n < 100:
        raise ValueError(f"--size {spec!r}: the demo needs at least 100 images")
    return n


# --------------------------------------------------------------------------- the data


_YY, _XX = np.mgrid[0:32, 0:32].astype(np.float32)


def _shape_masks(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boolean masks ``(n, 32, 32)`` of one shape per image, of class ``labels[i]``.

    Each shape gets a random centre, size and (for stripes and checkers) period.
    """
    n = len(labels)
    cy = rng.uniform(11, 21, n).astype(np.float32)[:, None, None]
    cx = rng.uniform(11, 21, n).astype(np.float32)[:, None, None]
    r = rng.uniform(6, 10, n).astype(np.float32)[:, None, None]
    period = rng.uniform(4, 7, n).astype(np.float32)[:, None, None]
    out = np.zeros((n, 32, 32), bool)
    for c in range(len(CLASSES)):
        i = np.flatnonzero(labels == c)
        if len(i):
            out[i] = _mask(c, _YY - cy[i], _XX - cx[i], r[i], period[i])
    return out


def _mask(c: int, dy: np.ndarray, dx: np.ndarray, r: np.ndarray, period: np.ndarray) -> np.ndarray:
    """The mask of class ``c`` given offsets from the centre, radius and stripe period."""
    ady, adx, w = np.abs(dy), np.abs(dx), r / 3.5
    dist = np.sqrt(dy * dy + dx * dx)
    if c == 0:  # disc
        return dist <= r
    if c == 1:  # square
        return np.maximum(ady, adx) <= 0.8 * r
    if c == 2:  # ring
        return np.abs(dist - 0.8 * r) <= 0.8 * w
    if c == 3:  # plus
        return (np.minimum(ady, adx) <= 0.7 * w) & (np.maximum(ady, adx) <= r)
    if c == 4:  # cross
        return (np.abs(ady - adx) <= 0.9 * w) & (dist <= 1.2 * r)
    if c == 7:  # triangle
        return (dy <= 0.7 * r) & (dy >= 1.6 * adx - r)
    if c == 9:  # diamond
        return ady + adx <= r
    rows_on = np.mod(dy, period) < period / 2  # stripes and checkers
    cols_on = np.mod(dx, period) < period / 2
    if c == 5:
        return rows_on
    if c == 6:
        return cols_on
    return rows_on ^ cols_on


def synthetic_images(labels: np.ndarray, rng: np.random.Generator, noise: int = 96) -> np.ndarray:
    """uint8 images ``(n, 32, 32, 3)``: a shape of class ``labels[i]`` on a noisy background.

    Foreground and background colours are random (each channel differs by at least 40), so
    a model has to learn the shapes, not the colours; the noise (``±noise/2``) makes the
    images nearly incompressible, like real photographs.
    """
    n = len(labels)
    mask = _shape_masks(np.asarray(labels), rng)
    bg = rng.integers(0, 256, (n, 3), dtype=np.int16)
    fg = (bg + rng.integers(40, 217, (n, 3), dtype=np.int16)) % 256
    img = np.where(mask[..., None], fg[:, None, None, :], bg[:, None, None, :])
    img += rng.integers(-noise // 2, noise // 2 + 1, img.shape, dtype=np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- reporting


def _peak_rss_mib() -> float:
    """The peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def _say(text: str) -> None:
    print(f"   {text}", flush=True)


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes / MB:.1f} MB"


def _bar(total: int, desc: str, unit: str, **kwargs: Any) -> Any:
    """A tqdm progress bar on stdout, with the demo's messages (redrawn less often when
    stdout is not a terminal)."""
    from tqdm.auto import tqdm

    tty = sys.stdout.isatty()
    return tqdm(
        file=sys.stdout,
        total=total,
        desc=f"   {desc}",
        unit=unit,
        mininterval=0.1 if tty else 5.0,
        dynamic_ncols=tty,
        ncols=None if tty else 100,
        **kwargs,
    )


def _dask_bar(bar: Any, keep: Callable[[str], bool], grow: bool = False) -> Any:
    """A dask callback advancing ``bar`` by one for every finished task whose name ``keep``s.

    The bar is left open, so that one bar can follow several computations; with ``grow``,
    each computation adds its matching tasks to the bar's total when it starts.
    """
    from dask.callbacks import Callback

    def name(key: Any) -> str:
        return str(key[0] if isinstance(key, tuple) else key)

    class _DaskBar(Callback):
        def _start_state(self, dsk: Any, state: Any) -> None:
            if grow:
                bar.total = (bar.total or 0) + sum(keep(name(key)) for key in dsk)
                bar.refresh()

        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            if keep(name(key)):
                bar.update(1)

        def _finish(self, dsk: Any, state: Any, errored: bool) -> None:
            if grow and not errored:  # some tasks (fused, finalize) are not reported
                bar.update(bar.total - bar.n)

    return _DaskBar()


#: TensorFlow's native log lines that say nothing to a demo user, printed whatever
#: ``TF_CPP_MIN_LOG_LEVEL`` says: absl INFO lines and their preamble while Keras imports
#: TensorFlow, and oneDNN's note that float16 inputs use Eigen kernels on CPUs without
#: AVX-512 (logged at ERROR level, although nothing is wrong).
_NATIVE_CHATTER = re.compile(
    r"^I\d{4} |absl::InitializeLog\(\)|^To enable the following instructions:"
    r"|oneDNN supports DT_HALF only on platforms with AVX-512"
)


@contextlib.contextmanager
def _filtered_stderr(drop: re.Pattern[str] = _NATIVE_CHATTER) -> Iterator[None]:
    """Capture file descriptor 2 (native libraries write there) and re-emit what is not ``drop``.

    Everything else written meanwhile (warnings, errors) is printed when the block ends.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            sys.stderr.write(
                "".join(line for line in text.splitlines(True) if not drop.search(line))
            )
            sys.stderr.flush()


@dataclass
class Report:
    """What the demo measured, for the final summary and the PNG."""

    n: int
    out: Path
    lines: list[tuple[str, str]] = field(default_factory=list)
    disk: dict[str, int] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)
    batch_loss: list[float] = field(default_factory=list)
    steps_per_epoch: int = 0
    val_accuracy: float | None = None

    def add(self, what: str, figures: str) -> None:
        """Record a line of the summary table."""
        self.lines.append((what, figures))


# --------------------------------------------------------------------------- the steps


def run(args: argparse.Namespace) -> int:
    """Run the demo with parsed ``lazyh5 demo`` arguments; returns the exit code."""
    import lazyh5

    n = parse_size(args.size)
    if args.epochs < 1:
        raise ValueError(f"--epochs {args.epochs}: must be at least 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    raw_path, prep_path = out / "images.h5", out / "images_float16.h5"
    png_path = out / "summary.png"
    report = Report(n=n, out=out)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    print(
        f"lazyh5 demo: the h5py and Keras 2 recipe, redone with lazyh5, on {n:,} generated "
        f"{'×'.join(map(str, IMAGE_SHAPE))} uint8 images ({_gb(n * np.prod(IMAGE_SHAPE))}) "
        f"in {out}/, {os.cpu_count()} CPUs",
        flush=True,
    )

    _step(f"1. create {raw_path.name}: image ({n:,}, 32, 32, 3) uint8 and label ({n:,},) int64")
    _create(lazyh5, raw_path, n, rng, report)

    _step(f"2. open {raw_path.name} lazily and look around")
    ds, mean, std = _explore(lazyh5, raw_path, report)

    _step(f"3. preprocess out of core into {prep_path.name}: (image / 255 - mean) / std")
    _preprocess(lazyh5, ds, mean, std, prep_path, report)
    report.add("peak memory before training", f"{_peak_rss_mib():,.0f} MiB")

    model = None
    if args.no_train:
        _step("4. training skipped (--no-train)")
    else:
        _step(f"4. train a small Keras model from {prep_path.name} through BatchLoader")
        model = _train(lazyh5, prep_path, args.epochs, report)

    report.disk = {p.name: p.stat().st_size for p in (raw_path, prep_path)}
    disk = " + ".join(_gb(size) for size in report.disk.values())
    report.add("disk", f"{disk} = {_gb(sum(report.disk.values()))} (raw + preprocessed)")
    report.add("peak memory", f"{_peak_rss_mib():,.0f} MiB (resident, whole process)")

    _step(f"5. draw {png_path.name}")
    _summary_png(lazyh5, raw_path, prep_path, model, report, png_path)

    _step("summary")
    for what, figures in report.lines:
        _say(f"{what:<28} {figures}")
    _say(f"{'total time':<28} {time.perf_counter() - t0:.1f} s")
    print(f"\nfiles in {out.resolve()}/: {', '.join(report.disk)}, {png_path.name}", flush=True)
    return 0


def _create(lazyh5: Any, path: Path, n: int, rng: np.random.Generator, report: Report) -> None:
    """Step 1: create the file, fill it block by block, then assign rows 10..19."""
    ds = lazyh5.create(
        path,
        {"image": ((n, *IMAGE_SHAPE), "u1"), "label": ((n,), "i8")},
        dims={"image": ("sample", "y", "x", "channel")},
        mode="w",  # no compression: noisy images do not compress (lzf: 100% of the size)
    )
    try:
        rows = ds["image"].encoding["chunksizes"][0]
        _say(f"HDF5 chunks of {rows} images ({rows * 3072 / 2**20:.1f} MiB), uncompressed")
        labels = rng.integers(0, len(CLASSES), n)
        ds["label"].h5[:] = labels
        block = rows * max(1, 4096 // rows)  # whole HDF5 chunks per assignment
        t, writing = time.perf_counter(), 0.0
        with _bar(n, "writing images", "img", unit_scale=True) as bar:
            for start in range(0, n, block):
                stop = min(start + block, n)
                images = synthetic_images(labels[start:stop], rng)
                tw = time.perf_counter()
                ds["image"].h5[start:stop] = images  # write-through: only these rows
                writing += time.perf_counter() - tw
                bar.update(stop - start)
        took = time.perf_counter() - t
        # The recipe's `image_set[10:20] = ...` / `label_set[10:20] = ...`: assign a slice.
        ds["image"].h5[10:20] = synthetic_images(np.arange(10), rng)
        ds["label"].h5[10:20] = np.arange(10)
    finally:
        ds.close()
    nbytes = n * int(np.prod(IMAGE_SHAPE))
    size = path.stat().st_size
    _say(f"generated and wrote {n:,} images in {took:.1f} s ({n / took:,.0f} images/s)")
    _say(
        f"write throughput {nbytes / writing / MB:,.0f} MB/s ({writing:.1f} s in .h5[...] = "
        f"assignments, the rest generating images)"
    )
    _say("assigned rows 10..19: one image of each class, labels 0..9 (ds[v].h5[10:20] = ...)")
    ratio = size / (nbytes + 8 * n)
    _say(f"{path.name}: {_gb(size)} on disk ({ratio:.0%} of the data)")
    _say(f"peak memory so far {_peak_rss_mib():,.0f} MiB")
    report.add("images", f"{n:,} ({_gb(size)} on disk)")
    report.add(
        "write", f"{nbytes / writing / MB:,.0f} MB/s ({n / took:,.0f} images/s incl. making them)"
    )


def _explore(lazyh5: Any, path: Path, report: Report) -> tuple[Any, float, float]:
    """Step 2: open lazily, slice, and compute the pixels' mean and std in one pass."""
    import xarray as xr

    from lazyh5.options import memory_budget, threads

    t = time.perf_counter()
    ds = lazyh5.open_dataset(path)  # dask chunks sized by lazyh5's memory budget
    _say(f"opened in {1000 * (time.perf_counter() - t):.0f} ms: metadata only, no image read")
    rows, hdf5_rows = ds["image"].chunks[0][0], ds["image"].encoding["chunksizes"][0]
    _say(
        f"dask chunks of {rows:,} rows = {rows // hdf5_rows} HDF5 chunks: the memory budget "
        f"({memory_budget() >> 20} MiB) shared by {threads()} threads, counted as float64"
    )
    print(ds, flush=True)

    some = ds.isel(sample=slice(10, 20))  # lazy: a view of rows 10..19
    names = [CLASSES[i] for i in some["label"].values]  # reads 80 bytes
    _say(f"ds.isel(sample=slice(10, 20)).label → {', '.join(names)}")
    counts = np.bincount(ds["label"].values, minlength=len(CLASSES))
    _say(
        f"images per class: {', '.join(f'{c} {k:,}' for c, k in zip(CLASSES, counts, strict=True))}"
    )

    # Mean and standard deviation of all pixels, in one streaming pass over the file: two
    # lazy reductions of the uint8 data, accumulated in float64, computed together.
    image = ds["image"]
    moments = xr.Dataset(
        {"mean": image.mean(dtype="f8"), "mean_sq": (image.astype("u2") ** 2).mean(dtype="f8")}
    )
    t = time.perf_counter()
    with (
        _bar(0, "mean and std", "task") as bar,
        _dask_bar(bar, lambda name: True, grow=True),
    ):
        moments = moments.compute()
    took = time.perf_counter() - t
    mean = float(moments["mean"]) / 255
    std = float(np.sqrt(moments["mean_sq"] - moments["mean"] ** 2)) / 255
    nbytes = image.nbytes
    _say(
        f"mean {mean:.4f}, std {std:.4f} (of image / 255) in {took:.1f} s: "
        f"{nbytes / took / MB:,.0f} MB/s, {len(image) / took:,.0f} images/s"
    )
    _say(f"peak memory so far {_peak_rss_mib():,.0f} MiB")
    report.add(
        "mean/std pass (read)",
        f"{nbytes / took / MB:,.0f} MB/s ({len(image) / took:,.0f} images/s)",
    )
    return ds, mean, std


def _preprocess(lazyh5: Any, ds: Any, mean: float, std: float, path: Path, report: Report) -> None:
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
        _bar(0, "preprocessing", "block") as bar,
        _dask_bar(bar, lambda name: "lazyh5-store" in name, grow=True),
    ):
        # to_hdf5 writes each block as soon as it is computed (image, then label)
        lazyh5.to_hdf5(path, prepped, mode="w", progress=False)
    took = time.perf_counter() - t
    read, written, size = ds["image"].nbytes, image.nbytes, path.stat().st_size
    _say(f"{n:,} images in {took:.1f} s: {n / took:,.0f} images/s")
    _say(
        f"read {read / took / MB:,.0f} MB/s of uint8, wrote {written / took / MB:,.0f} MB/s of "
        f"float16 ({_gb(written)}, {_gb(size)} on disk)"
    )
    _say(f"peak memory so far {_peak_rss_mib():,.0f} MiB")
    report.add(
        "preprocess (to_hdf5)",
        f"{n / took:,.0f} images/s, read {read / took / MB:,.0f} MB/s, "
        f"wrote {written / took / MB:,.0f} MB/s",
    )


def _train(lazyh5: Any, path: Path, epochs: int, report: Report) -> Any:
    """Step 4: fit a small convolutional network from the file; returns the model."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    try:
        with _filtered_stderr():
            import keras
    except ImportError:
        _say("Keras is not installed (pip install 'lazyh5[keras,tensorflow]'): skipped")
        return None

    ds = lazyh5.open_dataset(path)
    loader = lazyh5.BatchLoader(ds, "image", "label", batch_size=BATCH_SIZE, seed=0)
    train, val = loader.split(0.8)
    _say(
        f"{train.rows:,} training rows (chunk-aware shuffle), {val.rows:,} validation rows, "
        f"batches of {BATCH_SIZE}; Keras {keras.__version__} on {keras.backend.backend()}"
    )
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input(IMAGE_SHAPE),
            layers.Conv2D(16, 3, strides=2, activation="relu"),
            layers.Conv2D(32, 3, strides=2, activation="relu"),
            layers.Conv2D(32, 3, activation="relu"),
            layers.GlobalMaxPooling2D(),
            layers.Dense(len(CLASSES), activation="softmax"),
        ]
    )
    model.compile(
        keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    recorder = _recorder(keras, train, epochs, report)
    with _filtered_stderr():  # the progress bars go to stdout
        model.fit(
            train.keras(),
            validation_data=val.keras(),
            epochs=epochs,
            verbose=0,
            callbacks=[recorder],
        )
    fit_s, val_s = sum(recorder.train_s), sum(recorder.val_s)
    report.val_accuracy = report.history["val_accuracy"][-1]
    _say(
        f"training {train.rows * epochs / fit_s:,.0f} samples/s, validation "
        f"{val.rows * epochs / val_s:,.0f} samples/s ({fit_s:.1f} s + {val_s:.1f} s)"
    )
    _say(f"validation accuracy {report.val_accuracy:.3f} (chance: 0.100)")
    _say(f"peak memory so far {_peak_rss_mib():,.0f} MiB")
    train_rate, val_rate = train.rows * epochs / fit_s, val.rows * epochs / val_s
    report.add("training (Keras fit)", f"{train_rate:,.0f} samples/s (validation {val_rate:,.0f})")
    report.add("validation accuracy", f"{report.val_accuracy:.3f} after {epochs} epoch(s)")
    return model


def _recorder(keras: Any, train: Any, epochs: int, report: Report) -> Any:
    """A Keras callback: a progress bar per epoch, per-batch losses and timings."""
    steps, rows = len(train), train.rows
    sizes = [min(BATCH_SIZE, rows - i * BATCH_SIZE) for i in range(steps)]
    report.steps_per_epoch = steps

    class Recorder(keras.callbacks.Callback):
        train_s: list[float]
        val_s: list[float]

        def on_train_begin(self, logs: dict | None = None) -> None:
            self.train_s, self.val_s = [], []

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.bar = _bar(steps, f"epoch {epoch + 1}/{epochs}", "batch")
            self.t = self.t_last = time.perf_counter()
            self.seen, self.total = 0, 0.0

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            # Keras logs the running mean of the epoch: recover this batch's own loss.
            mean = float((logs or {}).get("loss", np.nan))
            size = sizes[min(batch, steps - 1)]
            self.seen += size
            loss, self.total = (mean * self.seen - self.total) / size, mean * self.seen
            report.batch_loss.append(loss)
            self.bar.update(1)
            if batch % 25 == 0:
                self.bar.set_postfix(loss=f"{mean:.3f}", refresh=False)
            self.t_last = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.bar.close()
            now = time.perf_counter()
            self.train_s.append(self.t_last - self.t)
            self.val_s.append(now - self.t_last)
            logs = logs or {}
            for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
                report.history.setdefault(key, []).append(float(logs.get(key, np.nan)))
            _say(
                f"epoch {epoch + 1}: loss {logs.get('loss', np.nan):.3f}, accuracy "
                f"{logs.get('accuracy', np.nan):.3f}, val_loss {logs.get('val_loss', np.nan):.3f},"
                f" val_accuracy {logs.get('val_accuracy', np.nan):.3f} ({now - self.t:.1f} s)"
            )

    return Recorder()


# --------------------------------------------------------------------------- the picture


def _summary_png(
    lazyh5: Any, raw_path: Path, prep_path: Path, model: Any, report: Report, png_path: Path
) -> None:
    """Step 5: sample images with labels (and predictions), loss curves, the figures."""
    try:
        import matplotlib
    except ImportError:
        _say("matplotlib is not installed (pip install 'lazyh5[plot]'): no PNG")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows_, cols = 4, 6
    # Samples from the validation rows (the last 20%), the model never trained on them.
    raw = lazyh5.open_dataset(raw_path)
    n = raw.sizes["sample"]
    picks = np.linspace(int(0.8 * n), n - 1, rows_ * cols).astype(int)
    images = raw["image"].isel(sample=picks).values  # reads only these rows
    labels = raw["label"].isel(sample=picks).values
    raw.close()
    preds = None
    if model is not None:
        prepped = lazyh5.open_dataset(prep_path)
        x = prepped["image"].isel(sample=picks).values
        prepped.close()
        preds = model.predict(x, verbose=0).argmax(-1)

    fig = plt.figure(figsize=(15, 7.2), dpi=100)
    title = f"lazyh5 demo — {report.n:,} generated 32×32×3 images"
    if report.val_accuracy is not None:
        title += f", validation accuracy {report.val_accuracy:.3f}"
    fig.suptitle(title, fontsize=14, fontweight="bold")
    outer = fig.add_gridspec(
        1, 2, width_ratios=[1.05, 1], wspace=0.1, left=0.02, right=0.98, top=0.88, bottom=0.09
    )
    grid = outer[0].subgridspec(rows_, cols, wspace=0.1, hspace=0.45)
    for k, (img, lab) in enumerate(zip(images, labels, strict=True)):
        ax = fig.add_subplot(grid[k // cols, k % cols])
        ax.imshow(img, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        color = "black"
        if preds is not None:
            color = "#1a7f37" if preds[k] == lab else "#cf222e"
            if preds[k] != lab:
                ax.set_xlabel(f"→ {CLASSES[preds[k]]}", fontsize=9, color=color, labelpad=2)
            for spine in ax.spines.values():
                spine.set(color=color, linewidth=2)
        ax.set_title(CLASSES[lab], fontsize=9.5, color=color, pad=3)
    caption = "validation images and their labels"
    if preds is not None:
        caption += " — green: the model agrees; red: it does not (its answer below the image)"
    fig.text(0.26, 0.035, caption, ha="center", fontsize=9.5, style="italic")
    right = outer[1].subgridspec(2, 1, height_ratios=[1.5, 1], hspace=0.28)
    _loss_axes(fig.add_subplot(right[0]), report)
    text_ax = fig.add_subplot(right[1])
    text_ax.axis("off")
    table = "\n".join(f"{what:<28} {figures}" for what, figures in report.lines)
    text_ax.text(0, 1, table, family="monospace", fontsize=8.5, va="top", ha="left")
    fig.savefig(png_path)
    plt.close(fig)
    _say(f"{png_path}: {rows_ * cols} validation images with their labels, the loss curves")


def _loss_axes(ax: Any, report: Report) -> None:
    """Per-batch training loss (smoothed), per-epoch training and validation loss."""
    ax.set_title("loss (sparse categorical cross-entropy)", fontsize=11)
    if not report.batch_loss:
        ax.text(0.5, 0.5, "training skipped", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    steps = report.steps_per_epoch
    loss = np.asarray(report.batch_loss)
    x = np.arange(1, len(loss) + 1) / steps
    ax.plot(x, loss, color="#8fb8de", lw=0.6, alpha=0.7, label="training, per batch")
    window = max(1, len(loss) // 40)
    if window > 1:
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax.plot(x[window - 1 :], smooth, color="#1f5fa6", lw=2, label=f"training, mean of {window}")
    epochs = np.arange(1, len(report.history["loss"]) + 1)
    ax.plot(
        epochs - 0.5,
        report.history["loss"],
        "s",
        color="#1f5fa6",
        ms=7,
        label="training, epoch mean",
    )
    ax.plot(
        epochs, report.history["val_loss"], "o-", color="#e36c09", ms=8, lw=2, label="validation"
    )
    for e, v, acc in zip(
        epochs, report.history["val_loss"], report.history["val_accuracy"], strict=True
    ):
        ax.annotate(
            f"val. accuracy {acc:.3f}",
            (e, v),
            textcoords="offset points",
            xytext=(-10, 14),
            ha="right",
            fontsize=9,
            color="#e36c09",
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "#e36c09", "lw": 0.8},
            zorder=5,
        )
    positive = loss[np.isfinite(loss) & (loss > 0)]
    if len(positive) and positive.max() / max(positive.min(), 1e-6) > 20:
        ax.set_yscale("log")
        typical = min(np.nanmin(report.history["val_loss"]), np.percentile(positive, 5))
        ax.set_ylim(bottom=max(positive.min(), typical / 5))  # not down to the odd lucky batch
    ax.set_xlabel("epoch")
    ax.set_xlim(0, len(epochs) + 0.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lazyh5.cli.demo [options]``: the same as ``lazyh5 demo [options]``."""
    from .main import main as lazyh5_main

    return lazyh5_main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
