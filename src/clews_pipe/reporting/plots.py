"""The segment-level figure (as the paper's Fig. 2): NAR (log axis) and MAP against query length.

One or several evaluations are overlaid, each with its own label; the 95% CI bands are clipped to
the metric's range ([0, 1] for MAP, [0, 100] for NAR) and the chance MAP of a random ranking is
drawn as a dashed line, so a curve is read against what guessing gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clews_pipe.errors import ClewsError


@dataclass(frozen=True)
class SegmentCurve:
    """One evaluation's segment-level rows (keys tau, NAR, NAR_ci, MAP, MAP_ci, MAP_chance) and its label."""

    rows: tuple[dict, ...]
    label: str


def curve_from_eval_dir(eval_dir: str | Path, label: str | None = None) -> SegmentCurve:
    """The segment-level rows of ``EVAL_DIR/metrics.json``; ClewsError (one line) if it has none."""
    from clews_pipe.reporting.eval_dir import read_metrics

    path = Path(eval_dir) / "metrics.json"
    result = read_metrics(eval_dir)
    if result.get("level") != "segment" or not result.get("per_tau"):
        raise ClewsError(f"{path}: not a segment-level evaluation (run evaluate --level segment)")
    provenance = result.get("provenance") or {}
    name = label or Path(str(provenance.get("checkpoint") or "")).stem or Path(eval_dir).name
    return SegmentCurve(tuple(result["per_tau"]), name)


def _column(rows, key: str) -> np.ndarray:
    return np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=float)


def plot_segment_curves(curves: list[SegmentCurve], path: str | Path, title: str = "") -> Path:
    """Overlay ``curves`` in one PNG (NAR left, MAP right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_nar, ax_map) = plt.subplots(1, 2, figsize=(9.5, 3.8))
    all_positive = True
    chance_drawn = False
    for curve in curves:
        rows = sorted(curve.rows, key=lambda r: r["tau"])
        tau = _column(rows, "tau")
        for ax, key, top in ((ax_nar, "NAR", 100.0), (ax_map, "MAP", 1.0)):
            mean, ci = _column(rows, key), np.nan_to_num(_column(rows, f"{key}_ci"))
            line, = ax.plot(tau, mean, marker="o", label=curve.label)
            ax.fill_between(tau, np.clip(mean - ci, 0.0, top), np.clip(mean + ci, 0.0, top),
                            alpha=0.2, color=line.get_color())
        all_positive &= bool(np.all(_column(rows, "NAR") > 0))
        chance = _column(rows, "MAP_chance")
        if np.isfinite(chance).any():
            ax_map.plot(tau, chance, linestyle="--", color="grey", linewidth=1,
                        label=None if chance_drawn else "chance (random ranking)")
            chance_drawn = True
    for ax, ylabel in ((ax_nar, "NAR (%)"), (ax_map, "MAP")):
        ax.set_xlabel("query segment length τ [s]")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    ax_map.set_ylim(0.0, 1.0)
    if all_positive:
        ax_nar.set_yscale("log")
    ax_map.legend(loc="lower right", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_segment_level(rows: list[dict], path: str | Path, label: str = "model", title: str = "") -> Path:
    """The figure of one evaluation (``rows``: one metrics dict per tau)."""
    return plot_segment_curves([SegmentCurve(tuple(rows), label)], path, title=title)


def plot_eval_dirs(eval_dirs: list[Path], out: str | Path, labels: list[str] | None = None) -> Path:
    """``clews-pipe plot``: overlay the segment-level results of several evaluation folders."""
    if labels and len(labels) != len(eval_dirs):
        raise ClewsError(f"--labels gives {len(labels)} names for {len(eval_dirs)} evaluations")
    curves = [curve_from_eval_dir(d, labels[i] if labels else None) for i, d in enumerate(eval_dirs)]
    return plot_segment_curves(curves, out, title="segment level: " + ", ".join(c.label for c in curves))
