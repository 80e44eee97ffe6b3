"""The segment-level figure (as the paper's Fig. 2): NAR (log axis) and MAP against query length."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_segment_level(rows: list[dict], path: str | Path, label: str = "clews-pipe") -> Path:
    """``rows``: one metrics dict per tau (keys tau, NAR, NAR_ci, MAP, MAP_ci); writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r["tau"])
    tau = np.array([r["tau"] for r in rows], dtype=float)
    fig, (ax_nar, ax_map) = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, key, ylabel in ((ax_nar, "NAR", "NAR (%)"), (ax_map, "MAP", "MAP")):
        mean = np.array([r[key] for r in rows], dtype=float)
        ci = np.array([r[f"{key}_ci"] for r in rows], dtype=float)
        ax.plot(tau, mean, marker="o", label=label)
        ax.fill_between(tau, mean - ci, mean + ci, alpha=0.25)
        ax.set_xlabel("query segment length τ [s]")
        ax.set_ylabel(ylabel)
        ax.set_xticks(tau)
        ax.grid(alpha=0.3)
    if np.all(np.array([r["NAR"] for r in rows]) > 0):
        ax_nar.set_yscale("log")
    ax_map.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
