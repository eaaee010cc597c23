"""The reproduction's table and figures from its rows: the study's Figs. 2-4 for every water run and
fine-tuned family, parity plots, force error against system size and against fine-tuning frames."""

from __future__ import annotations

import shutil
from pathlib import Path

from gnnmd.analysis.plotting import pyplot

SYSTEM_NAMES = {"water": "water (216)", "big-water": "big water (1600)", "argon": "argon"}
TRAINED_ON = {"water": "water", "water+argon": "water → argon", "argon": "argon only (control)"}


def _cell(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown_table(rows: list[dict], study: list[dict]) -> str:
    """One line per evaluation, the study's own numbers first."""
    lines = [
        "| model | electrostatics | trained on | evaluated on | argon frames | encoders | force MAE | force RMSE "
        "| mean \\|F\\| | MAE / mean \\|F\\| | energy MAE / atom (about its offset) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in study:
        system = SYSTEM_NAMES[entry["eval_system"]] + (" val" if entry["split"] == "val" else "")
        mae = _cell(entry["force_mae"], 2) if entry["force_mae"] is not None else entry["note"]
        lines.append(f"| reference study (mpnn) | none | water | {system} | – | – | {mae} | – | – | – | – |")
    for row in rows:
        system = SYSTEM_NAMES[row["eval_system"]] + (" val" if row["split"] == "val" else "")
        trained = TRAINED_ON[row["train_system"]]
        frames = str(row["finetune_frames"]) if row["finetune_frames"] else "–"
        encoders = "–" if row["frozen"] is None else ("frozen" if row["frozen"] else "trained")
        lines.append(
            f"| {row['model']} | {row['electrostatics']} | {trained} | {system} | {frames} | {encoders} | "
            f"{_cell(row['force_mae'])} | {_cell(row['force_rmse'])} | {_cell(row['mean_abs_force'])} | "
            f"{_cell(row['force_mae'] / row['mean_abs_force'])} | {_energy_cell(row)} |"
        )
    lines.append("")
    lines.append(
        "Forces in kcal/mol/Å; mean |F| is the mean absolute force component of the evaluated frames. Energies "
        "in kcal/mol per atom: models trained on forces alone have an arbitrary energy zero, so the error "
        "about the mean offset is what MD feels; direct-force models predict no energy."
    )
    return "\n".join(lines)


def _energy_cell(row: dict) -> str:
    if row.get("energy_mae_per_atom") is None:
        return "not predicted" if row.get("energy", "").startswith("not predicted") else "–"
    return f"{_cell(row['energy_mae_per_atom'])} ({_cell(row['energy_mae_per_atom_about_offset'])})"


def plot_error_vs_size(rows: list[dict], study: list[dict], path: Path) -> Path:
    """Force MAE of each water-trained model on water (216) and big water (1600), beside the study's."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    water_rows = [r for r in rows if r["train_system"] == "water" and r["eval_system"] in ("water", "big-water")]
    for run in dict.fromkeys(r["run"] for r in water_rows):
        points = sorted((r["atoms"], r["force_mae"]) for r in water_rows if r["run"] == run)
        ax.plot(*zip(*points), "o-", label=run)
    study_points = [e["force_mae"] for e in study if e["eval_system"] in ("water", "big-water")]
    atoms = sorted({r["atoms"] for r in water_rows})
    if len(atoms) == len(study_points):
        ax.plot(atoms, study_points, "ks--", label="reference study")
    ax.set(xscale="log", yscale="log", xlabel="atoms", ylabel="force MAE (kcal/mol/Å)", title="error vs system size")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_error_vs_finetune_frames(rows: list[dict], path: Path) -> Path:
    """Argon force MAE after fine-tuning on N frames (encoders trained or frozen), zero-shot dashed."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for k, parent in enumerate(dict.fromkeys(r["parent"] for r in rows if r["parent"])):
        color = f"C{k}"
        for frozen, style in ((False, "o-"), (True, "s:")):
            points = sorted(
                (r["finetune_frames"], r["force_mae"]) for r in rows if r["parent"] == parent and r["frozen"] == frozen
            )
            if points:
                label = f"{parent.removesuffix('-water')}, encoders {'frozen' if frozen else 'trained'}"
                ax.plot(*zip(*points), style, color=color, label=label)
        zero_shot = [r["force_mae"] for r in rows if r["run"] == parent and r["eval_system"] == "argon"]
        if zero_shot:
            ax.axhline(zero_shot[0], color=color, ls="--", lw=0.8)
        family = next(r["model"] for r in rows if r["parent"] == parent)
        control = sorted((r["finetune_frames"], r["force_mae"]) for r in rows
                         if r["train_system"] == "argon" and r["model"] == family)  # fmt: skip
        if control:
            ax.plot(*zip(*control), "x-.", color=color, label=f"{family}, argon only (control)")
    ax.axhline(0.02, color="0.5", lw=0.8, ls="-.", label="target 0.02")
    ax.set(xscale="log", yscale="log", xlabel="argon training frames", ylabel="argon force MAE (kcal/mol/Å)",
           title="fine-tuning on argon (dashed: zero-shot)")  # fmt: skip
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_argon_probes(parent: Path, finetuned: dict[str, Path], argon_type: dict, path: Path, title: str) -> Path:
    """The study's Fig. 4: the learned Ar-Ar force, zero-shot and after fine-tuning, against LJ."""
    from gnnmd.analysis.probes import argon_probe, plot_probes, probe_curve

    probe = argon_probe(argon_type)
    curve = probe_curve(parent, probe)
    curve["models"] = {"zero-shot (water model)": curve["learned"]}
    for label, checkpoint in finetuned.items():
        curve["models"][label] = probe_curve(checkpoint, probe)["learned"]
    plot_probes([curve], path, title)
    return path


def write_figures(repro, rows: list[dict], out: Path) -> list[Path]:
    """Every figure of a reproduction into `out` (`repro`: a gnnmd.reproduce.Reproduction)."""
    import json

    from gnnmd.analysis.figures import run_figures
    from gnnmd.study.scales import STUDY

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for run in repro.water_runs:
        written += run_figures(repro.runs / run, out)  # loss curves (Fig. 2) and water probes (Fig. 3)
    written.append(plot_error_vs_size(rows, STUDY, out / "error_vs_system_size.png"))
    written.append(plot_error_vs_finetune_frames(rows, out / "error_vs_finetune_frames.png"))
    argon_type = json.loads((repro.data / "argon" / "manifest.json").read_text())["type_table"][0]
    parents = repro.finetune_parents()
    for parent in parents:
        finetuned = {
            f"fine-tuned, {n} frames": repro.runs / repro.finetune_name(parent, n, False) / "best.pt"
            for n in repro.scale.finetune_frames
        }
        path = out / f"argon_interactions_{parent.removesuffix('-water')}.png"
        written.append(
            plot_argon_probes(repro.runs / parent / "best.pt", finetuned, argon_type, path, f"Ar-Ar: {parent}")
        )
    # parity plots: every water model on water and big water, every fine-tuned family on argon
    middle = repro.scale.finetune_frames[len(repro.scale.finetune_frames) // 2]
    picks = [(run, system, "val" if system == "water" else "all") for run in repro.water_runs
             for system in ("water", "big-water", "argon")]  # fmt: skip
    picks += [(repro.finetune_name(parent, middle, False), "argon", "all") for parent in parents]
    for run, system, split in picks:
        source = repro.evals / f"{run}__{system}-{split}.png"
        if source.exists():
            target = out / f"parity_{run}__{system}.png"
            shutil.copyfile(source, target)
            written.append(target)
    return written
