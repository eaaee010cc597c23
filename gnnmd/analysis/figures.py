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
    from gnnmd.models.checkpoint import read_info

    run_dir, out = Path(run_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    name = run_dir.name
    written = [plot_loss_curves(read_metrics(run_dir / "metrics.csv"), out / f"{name}_loss.png", name)]
    best = run_dir / "best.pt"
    probes = probes_for(read_info(best).type_table)
    if probes:
        curves = [probe_curve(best, probe) for probe in probes]
        path = out / f"{name}_interactions.png"
        plot_probes(curves, path, f"{name}: learned pair interactions")
        written.append(path)
    if read_info(best).family == "csnequip":
        written.append(plot_reduced_pair_curve(best, out / f"{name}_reduced_pair.png", name))
    return written


def plot_reduced_pair_curve(checkpoint: Path, path: Path, title: str = "") -> Path:
    """A corresponding-states model's learned pair function g(x) (energy / eps_ij against r / sigma_ij)
    beside the Lennard-Jones curve 4 (x^-12 - x^-6) that water's O-O pairs and argon's both follow in these
    units, over the reduced distances its training reached (the reduced wall marks the shortest)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from gnnmd.models.checkpoint import load_model

    model, _ = load_model(checkpoint)
    shortest = float(model.pair_core) / model.core_margin if float(model.pair_core) > 0 else 0.8
    x = torch.linspace(max(0.7 * shortest, 0.5), model.pair_cutoff, 400, dtype=model.type_scale.dtype)
    with torch.no_grad():
        learned = model.pair_function(x).numpy()
    x = x.numpy()
    reference = 4 * (x**-12 - x**-6)
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(x, reference, "k--", label="Lennard-Jones, 4 (x^-12 - x^-6)")
    axis.plot(x, learned, label="learned g(x)")
    axis.axvline(shortest, color="grey", lw=0.8, label="shortest training pair")
    axis.set_ylim(-1.5, 3.0)
    axis.set_xlabel("r / sigma_ij")
    axis.set_ylabel("pair energy / eps_ij")
    axis.set_title(title or "learned reduced pair curve")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
