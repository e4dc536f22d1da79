"""The demo's model: a small convolutional network, trained from the preprocessed file.

Keras reads the file through :class:`lazyh5.BatchLoader` (a chunk-aware shuffle and a
validation split); a callback draws a progress bar per epoch and records every batch's loss
and the time spent training and validating, for the summary.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..feed.loader import BatchLoader
from ..open import open_dataset
from .images import CLASSES, IMAGE_SHAPE
from .report import Report, bar, filtered_stderr, say, say_peak_memory

BATCH_SIZE = 128


def build_model(keras: Any) -> Any:
    """Three convolutions and a global max pooling: the compiled Keras model."""
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
    return model


def train(path: Path, epochs: int, report: Report) -> Any:
    """Fit the model from the file at ``path``; returns it (``None`` without Keras)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    try:
        with filtered_stderr():
            import keras
    except ImportError:
        say("Keras is not installed (pip install 'lazyh5[keras,tensorflow]'): skipped")
        return None

    ds = open_dataset(path)
    loader = BatchLoader(ds, "image", "label", batch_size=BATCH_SIZE, seed=0)
    train_rows, val = loader.split(0.8)
    say(
        f"{train_rows.rows:,} training rows (chunk-aware shuffle), {val.rows:,} validation "
        f"rows, batches of {BATCH_SIZE}; Keras {keras.__version__} on {keras.backend.backend()}"
    )
    model = build_model(keras)
    recorder = _recorder(keras, train_rows, epochs, report)
    with filtered_stderr():  # the progress bars go to stdout
        model.fit(
            train_rows.keras(),
            validation_data=val.keras(),
            epochs=epochs,
            verbose=0,
            callbacks=[recorder],
            shuffle=False,  # the loader shuffles; fit would ask for batches at random
        )
    fit_s, val_s = sum(recorder.train_s), sum(recorder.val_s)
    train_rate, val_rate = train_rows.rows * epochs / fit_s, val.rows * epochs / val_s
    report.val_accuracy = report.history["val_accuracy"][-1]
    say(
        f"training {train_rate:,.0f} samples/s, validation {val_rate:,.0f} samples/s "
        f"({fit_s:.1f} s + {val_s:.1f} s)"
    )
    say(f"validation accuracy {report.val_accuracy:.3f} (chance: 0.100)")
    say_peak_memory()
    report.add("training (Keras fit)", f"{train_rate:,.0f} samples/s (validation {val_rate:,.0f})")
    report.add("validation accuracy", f"{report.val_accuracy:.3f} after {epochs} epoch(s)")
    return model


def _recorder(keras: Any, train_rows: Any, epochs: int, report: Report) -> Any:
    """A Keras callback: a progress bar per epoch, per-batch losses and timings."""
    steps, rows = len(train_rows), train_rows.rows
    sizes = [min(BATCH_SIZE, rows - i * BATCH_SIZE) for i in range(steps)]
    report.steps_per_epoch = steps

    class Recorder(keras.callbacks.Callback):
        train_s: list[float]
        val_s: list[float]

        def on_train_begin(self, logs: dict | None = None) -> None:
            self.train_s, self.val_s = [], []

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.bar = bar(steps, f"epoch {epoch + 1}/{epochs}", "batch")
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
            say(
                f"epoch {epoch + 1}: loss {logs.get('loss', np.nan):.3f}, accuracy "
                f"{logs.get('accuracy', np.nan):.3f}, val_loss {logs.get('val_loss', np.nan):.3f},"
                f" val_accuracy {logs.get('val_accuracy', np.nan):.3f} ({now - self.t:.1f} s)"
            )

    return Recorder()
