"""``lazyh5 show FILE VAR``: a picture of a dataset's contents, reading only what it shows."""

from __future__ import annotations

import argparse
import math

import numpy as np

from ..errors import DimensionError, InvalidArgumentError

_DEFAULT_IMAGES = 16
_DEFAULT_POINTS = 100_000


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="draw a dataset (image grid, line + histogram) into a PNG")
    p.add_argument("file", help="HDF5 file")
    p.add_argument("var", help="dataset name (inside --group)")
    p.add_argument("--group", default=None, help="group holding the dataset")
    p.add_argument(
        "--index",
        default=None,
        help="rows along the first axis: 'START:STOP[:STEP]' or 'I,J,K' "
        f"(default: the first {_DEFAULT_IMAGES} images, or up to {_DEFAULT_POINTS:,} values)",
    )
    p.add_argument("-o", "--output", default=None, help="PNG to write (default: VAR.png)")
    p.set_defaults(run=run)


def parse_index(spec: str | None, n: int, default: int) -> slice | list[int]:
    """``"2:10:2"`` → slice, ``"1,5,9"`` → list; validated against the axis length ``n``."""
    if spec is None:
        return slice(0, min(n, default))
    expected = f"--index {spec!r}: expected START:STOP[:STEP] or I,J,K (integers)"
    try:
        if "," in spec or spec.strip().lstrip("-").isdigit():
            rows = [int(s) for s in spec.split(",") if s.strip()]
        else:
            parts = [int(p) if p.strip() else None for p in spec.split(":")]
    except ValueError:
        raise InvalidArgumentError(expected) from None
    if "," in spec or spec.strip().lstrip("-").isdigit():
        bad = [r for r in rows if not -n <= r < n]
        if bad:
            raise InvalidArgumentError(f"--index {spec!r}: rows {bad} out of range for length {n}")
        return [r % n for r in rows]
    if len(parts) > 3:
        raise InvalidArgumentError(expected)
    return slice(*parts)


def _is_image_stack(shape: tuple[int, ...]) -> bool:
    if len(shape) == 3:
        return shape[1] > 1 and shape[2] > 1
    return len(shape) == 4 and shape[3] in (1, 3, 4)


def render(values: np.ndarray, title: str, output: str) -> str:
    """Draw ``values`` (rows along axis 0) and save a PNG; returns the kind of plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if values.ndim >= 3 and _is_image_stack(values.shape):
        kind = "images"
        n = len(values)
        cols = min(8, max(n, 1))
        rows = max(1, math.ceil(n / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.6 * rows + 0.4), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, img in zip(axes.flat, values, strict=False):
            img = img.astype("f8")
            lo, hi = np.nanmin(img), np.nanmax(img)
            img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
            if img.ndim == 3 and img.shape[-1] == 1:
                img = img[..., 0]
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
    elif values.ndim == 1:
        kind = "line"
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
        ax1.plot(values, lw=0.8)
        ax1.set_xlabel("row")
        ax2.hist(values[np.isfinite(values)] if values.dtype.kind == "f" else values, bins=50)
        ax2.set_xlabel("value")
    else:
        kind = "heatmap"
        flat = values.reshape(len(values), -1).astype("f8")
        fig, ax = plt.subplots(figsize=(8, 4))
        im = ax.imshow(flat, aspect="auto", interpolation="nearest")
        fig.colorbar(im, ax=ax)
        ax.set_ylabel("row")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return kind


def run(args: argparse.Namespace) -> int:
    from ..errors import ObjectNotFoundError, UnsupportedDtypeError
    from ..open import open_dataset

    ds = open_dataset(args.file, group=args.group)
    if args.var not in ds.variables:
        raise ObjectNotFoundError(
            f"no variable '{args.var}' in '{args.file}'"
            + (f" group '{args.group}'" if args.group else "")
            + f"; available: {sorted(map(str, ds.data_vars))}"
        )
    var = ds[args.var]
    if var.dtype.kind not in "biuf":
        raise UnsupportedDtypeError(
            f"cannot draw '{args.var}' in '{args.file}': dtype {var.dtype} is not numeric"
        )
    if var.ndim == 0:
        raise DimensionError(f"cannot draw '{args.var}' in '{args.file}': it is a scalar")
    default = _DEFAULT_IMAGES if _is_image_stack(var.shape) else _DEFAULT_POINTS
    try:
        index = parse_index(args.index, var.shape[0], default)
    except InvalidArgumentError as err:
        raise type(err)(f"cannot draw '{args.var}' in '{args.file}': {err}") from None
    values = var[{var.dims[0]: index}].values  # reads only these rows
    if values.ndim == var.ndim - 1:
        values = values[None]
    output = args.output or f"{args.var.replace('/', '_')}.png"
    kind = render(values, f"{args.file}:{args.var} rows {args.index or 'default'}", output)
    print(f"wrote {output} ({kind}, {len(values)} rows of {args.var} {tuple(var.shape)})")
    return 0
