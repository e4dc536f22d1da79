"""The demo's ``summary.png``: sample images with their labels (and the model's answers),
the loss curves and the table of figures of the run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..open import open_dataset
from .images import CLASSES
from .report import Report, say

_ROWS, _COLS = 4, 6  # the grid of sample images
_GOOD, _BAD = "#1a7f37", "#cf222e"  # the model agrees with the label, or not
_TRAIN, _VAL = "#1f5fa6", "#e36c09"  # the loss curves


def summary_png(
    raw_path: Path, prep_path: Path, model: Any, report: Report, png_path: Path
) -> None:
    """Draw sample images with labels (and predictions), loss curves, the figures."""
    try:
        import matplotlib
    except ImportError:
        say("matplotlib is not installed (pip install 'lazyh5[plot]'): no PNG")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, labels, preds = _samples(raw_path, prep_path, model)
    fig = plt.figure(figsize=(15, 7.2), dpi=100)
    title = f"lazyh5 demo — {report.n:,} generated 32×32×3 images"
    if report.val_accuracy is not None:
        title += f", validation accuracy {report.val_accuracy:.3f}"
    fig.suptitle(title, fontsize=14, fontweight="bold")
    outer = fig.add_gridspec(
        1, 2, width_ratios=[1.05, 1], wspace=0.1, left=0.02, right=0.98, top=0.88, bottom=0.09
    )
    _image_grid(
        fig, outer[0].subgridspec(_ROWS, _COLS, wspace=0.1, hspace=0.45), images, labels, preds
    )
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
    say(f"{png_path}: {_ROWS * _COLS} validation images with their labels, the loss curves")


def _samples(
    raw_path: Path, prep_path: Path, model: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Images and labels of evenly spaced validation rows, and the model's answers."""
    # Samples from the validation rows (the last 20%), the model never trained on them.
    raw = open_dataset(raw_path)
    n = raw.sizes["sample"]
    picks = np.linspace(int(0.8 * n), n - 1, _ROWS * _COLS).astype(int)
    images = raw["image"].isel(sample=picks).values  # reads only these rows
    labels = raw["label"].isel(sample=picks).values
    raw.close()
    preds = None
    if model is not None:
        prepped = open_dataset(prep_path)
        x = prepped["image"].isel(sample=picks).values
        prepped.close()
        preds = model.predict(x, verbose=0).argmax(-1)
    return images, labels, preds


def _image_grid(
    fig: Any, grid: Any, images: np.ndarray, labels: np.ndarray, preds: np.ndarray | None
) -> None:
    """One small axes per image, titled with its label, framed by the model's verdict."""
    for k, (img, lab) in enumerate(zip(images, labels, strict=True)):
        ax = fig.add_subplot(grid[k // _COLS, k % _COLS])
        ax.imshow(img, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        color = "black"
        if preds is not None:
            color = _GOOD if preds[k] == lab else _BAD
            if preds[k] != lab:
                ax.set_xlabel(f"→ {CLASSES[preds[k]]}", fontsize=9, color=color, labelpad=2)
            for spine in ax.spines.values():
                spine.set(color=color, linewidth=2)
        ax.set_title(CLASSES[lab], fontsize=9.5, color=color, pad=3)


def _loss_axes(ax: Any, report: Report) -> None:
    """Per-batch training loss (smoothed), per-epoch training and validation loss."""
    ax.set_title("loss (sparse categorical cross-entropy)", fontsize=11)
    if not report.batch_loss:
        ax.text(0.5, 0.5, "training skipped", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    loss = np.asarray(report.batch_loss)
    x = np.arange(1, len(loss) + 1) / report.steps_per_epoch
    ax.plot(x, loss, color="#8fb8de", lw=0.6, alpha=0.7, label="training, per batch")
    window = max(1, len(loss) // 40)
    if window > 1:
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        ax.plot(x[window - 1 :], smooth, color=_TRAIN, lw=2, label=f"training, mean of {window}")
    epochs = np.arange(1, len(report.history["loss"]) + 1)
    ax.plot(
        epochs - 0.5, report.history["loss"], "s", color=_TRAIN, ms=7, label="training, epoch mean"
    )
    ax.plot(epochs, report.history["val_loss"], "o-", color=_VAL, ms=8, lw=2, label="validation")
    _annotate_accuracy(ax, epochs, report)
    positive = loss[np.isfinite(loss) & (loss > 0)]
    if len(positive) and positive.max() / max(positive.min(), 1e-6) > 20:
        ax.set_yscale("log")
        typical = min(np.nanmin(report.history["val_loss"]), np.percentile(positive, 5))
        ax.set_ylim(bottom=max(positive.min(), typical / 5))  # not down to the odd lucky batch
    ax.set_xlabel("epoch")
    ax.set_xlim(0, len(epochs) + 0.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")


def _annotate_accuracy(ax: Any, epochs: np.ndarray, report: Report) -> None:
    """Label each epoch's validation point with its accuracy."""
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
            color=_VAL,
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": _VAL, "lw": 0.8},
            zorder=5,
        )
