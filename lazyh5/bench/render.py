"""The bench report as text: a table of rates, the layout, the limits, the recommendation."""

from __future__ import annotations

from typing import Any

from .variables import human


def _header(report: dict[str, Any]) -> list[str]:
    variables = ", ".join(
        f"{k}={v['name']} {tuple(v['shape'])} {v['dtype']}"
        for k, v in zip(("x", "y"), report["chunks"].values(), strict=False)
    )
    budget = (
        f"{report['seconds_per_method']:g} s per method"
        if report["seconds_per_method"]
        else "one pass per method"
    )
    return [
        f"lazyh5 bench: {report['file']}  {variables}",
        f"rows 0:{report['rows']} of {report['rows_in_file']} along '{report['dim']}', "
        f"batch {report['batch_size']}, {budget}, after a warm-up read "
        f"({report['warm_up_seconds']:.1f} s)",
    ]


def _layout(report: dict[str, Any]) -> list[str]:
    lines = ["layout"]
    for v in report["chunks"].values():
        comp = v["compression"] or "uncompressed"
        if v["chunks"] is None:
            lines.append(f"  {v['name']:<10} contiguous, {comp}")
            continue
        lines.append(
            f"  {v['name']:<10} chunks {'x'.join(map(str, v['chunks']))}: "
            f"{v['rows_per_chunk']} row{'s' if v['rows_per_chunk'] != 1 else ''}, "
            f"{human(v['chunk_bytes'])} per chunk, {comp}; "
            f"chunk cache {human(v['chunk_cache_bytes'])}"
        )
    b = report["loader_block"]
    lines.append(
        f"  loader     blocks of {b['rows']} rows ({human(b['bytes'])}), "
        f"{b['blocks']} in the measured rows"
    )
    return lines


def render(report: dict[str, Any]) -> str:
    """The human-readable report: a table of rates, the layout, limits, recommendation."""
    lines = [*_header(report), "", f"{'method':<17}{'samples/s':>12}{'x h5py':>9}  what"]
    for name, m in report["methods"].items():
        lines.append(
            f"{name:<17}{m['samples_per_s']:>12,.0f}{m['ratio_vs_h5py']:>8.2f}x  {m['what']}"
        )
    lines += ["", *_layout(report), "", "what limits this feed"]
    lines.extend(f"  - {text}" for text in report["limits"])
    lines += ["", "recommendation", f"  {report['recommendation']}"]
    return "\n".join(lines)
