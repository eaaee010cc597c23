"""`gnnmd figures --run DIR`: the study's figures for a training run: loss curves (Fig. 2) and the
learned single interactions against the force field (Figs. 3 and 4)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from gnnmd.analysis.plotting import pyplot
from gnnmd.analysis.probes import argon_probe, plot_probes, probe_curve, water_probes


def read_metrics(path: Path) -> dict[str, np.ndarray]:
    """metrics.csv as columns of floats."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics.csv (is this a gnnmd run directory?)")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path}: no epochs recorded yet")
    return {
        key: np.array([float(row[key]) if row[key] not in ("", None) else np.nan for row in rows]) for key in rows[0]
    }


def plot_loss_curves(metrics: dict[str, np.ndarray], path: Path, title: str = "") -> Path:
    """Train and validation loss, and force MAE, per epoch."""
    plt = pyplot()

    epochs = metrics["epoch"]
    fig, (loss_ax, mae_ax) = plt.subplots(1, 2, figsize=(9, 3.6))
    loss_ax.semilogy(epochs, metrics["train_loss"], "o-", ms=3, label="train")
    loss_ax.semilogy(epochs, metrics["val_loss"], "o-", ms=3, label="validation")
    loss_ax.set(xlabel="epoch", ylabel="loss (normalised forces)", title="loss")
    loss_ax.legend()
    mae_ax.plot(epochs, metrics["train_force_mae"], "o-", ms=3, label="train")
    mae_ax.plot(epochs, metrics["val_force_mae"], "o-", ms=3, label="validation")
    mae_ax.set(xlabel="epoch", ylabel="force MAE (kcal/mol/Å)", title="force error")
    mae_ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def probes_for(type_table: list[dict]):
    """The study's probes that the run's system has: water (O-O, H-H, O-H bond) and/or Ar-Ar."""
    names = {row["name"]: row for row in type_table}
    probes = water_probes(type_table) if {"O", "H"} <= set(names) else []
    if "Ar" in names:
        probes.append(argon_probe(names["Ar"]))
    return probes


def run_figures(run_dir: Path, out: Path) -> list[Path]:
    """All figures of one run into `out`; returns their paths."""
    from gnnmd.models.checkpoint import read_checkpoint

    run_dir, out = Path(run_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = run_dir.name
    written = [plot_loss_curves(read_metrics(run_dir / "metrics.csv"), out / f"{name}_loss.png", name)]
    best = run_dir / "best.pt"
    probes = probes_for(read_checkpoint(best)["type_table"])
    if probes:
        curves = [probe_curve(best, probe) for probe in probes]
        path = out / f"{name}_interactions.png"
        plot_probes(curves, path, f"{name}: learned pair interactions")
        written.append(path)
    return written
