"""Parity plot: predicted against reference force components, one colour per atom type."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gnnmd.analysis.plotting import pyplot

SOFTWARE = "gnnmd parity plot"  # in the PNG's metadata: `gnnmd evaluate --overwrite` replaces only such files


def parity_plot(
    pred: np.ndarray, ref: np.ndarray, atom_type: np.ndarray, labels: list[str], path, title: str = ""
) -> Path:
    plt = pyplot()

    path = Path(path)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=120)
    rng = np.random.default_rng(0)
    for k, label in enumerate(labels):
        rows = np.flatnonzero(atom_type == k)
        if len(rows) == 0:
            continue
        if len(rows) > 20000:  # keep the file light; the metrics use every atom
            rows = rng.choice(rows, 20000, replace=False)
        mae = np.abs(pred[rows] - ref[rows]).mean()
        ax.scatter(ref[rows].ravel(), pred[rows].ravel(), s=2, alpha=0.3, label=f"{label} (MAE {mae:.2f})")
    lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("reference force component (kcal/mol/Å)")
    ax.set_ylabel("predicted force component (kcal/mol/Å)")
    ax.set_title(title, fontsize=9)
    ax.legend(markerscale=4, fontsize=8)
    ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": SOFTWARE})
    plt.close(fig)
    return path
