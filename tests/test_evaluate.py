"""`gnnmd evaluate`: metrics that agree with a direct computation, JSON + parity PNG, and clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gnnmd.cli import main
from gnnmd.data import load_frames
from gnnmd.inference.evaluate import evaluate_model
from gnnmd.models.checkpoint import load_model
from gnnmd.train.trainer import TrainConfig, train


@pytest.fixture(scope="module")
def checkpoint(water_run, tmp_path_factory):
    torch.set_num_threads(1)
    runs = tmp_path_factory.mktemp("runs")
    config = TrainConfig(
        data=str(water_run),
        runs_dir=str(runs),
        name="eq",
        model="eqforce",
        hyper={"hidden": 16},
        epochs=2,
        batch_size=2,
        lr=3e-3,
        warmup_epochs=1,
        progress=False,
        electrostatics="none",
    )
    train(config)
    return runs / "eq" / "best.pt"


def test_metrics_agree_with_a_direct_computation(checkpoint, water_run):
    model, info = load_model(checkpoint)
    frames = load_frames(water_run)
    result = evaluate_model(model, frames, info.cutoff, [0, 3, 7], batch_size=2, progress=False)
    with torch.no_grad():
        from gnnmd.data import FrameDataset

        ds = FrameDataset(frames, info.cutoff, [0, 3, 7])
        pred = np.concatenate([model(ds[k])["forces"].numpy() for k in range(3)])
    ref = frames.forces[[0, 3, 7]].reshape(-1, 3)
    types = np.tile(frames.topology.types, 3)
    err = pred.astype(np.float64) - ref
    assert result["force_mae"] == pytest.approx(np.abs(err).mean(), rel=1e-5)
    assert result["force_rmse"] == pytest.approx(np.sqrt((err**2).mean()), rel=1e-5)
    assert result["force_mae_y"] == pytest.approx(np.abs(err[:, 1]).mean(), rel=1e-5)
    oxygen = types == [row["name"] for row in frames.topology.type_table()].index("O")
    assert result["force_mae_O"] == pytest.approx(np.abs(err[oxygen]).mean(), rel=1e-5)
    assert result["force_rmse_H"] == pytest.approx(np.sqrt((err[~oxygen] ** 2).mean()), rel=1e-5)
    assert result["mean_abs_force"] == pytest.approx(np.abs(ref).mean(), rel=1e-5)
    assert result["relative_force_mae"] == pytest.approx(result["force_mae"] / result["mean_abs_force"])
    assert result["frames"] == 3 and result["atoms_per_second_model"] > 0


def test_cli_writes_json_table_and_parity_plot(checkpoint, water_run, argon_run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(checkpoint),
                "--data",
                str(water_run),
                "--split",
                "val",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "relative MAE" in printed and "\nO " in printed and "\nH " in printed
    result = json.loads(out.read_text())
    assert result["split"] == "val" and result["frames"] == 2 and result["family"] == "eqforce"
    for key in ("force_mae", "force_rmse_x", "force_mae_H", "relative_force_mae", "atoms_per_second_model"):
        assert result[key] > 0
    png = tmp_path / "eval.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    # another system: its own type table (argon), zero-shot; default output in the current folder, named
    # after the model's run and the data, and nothing written beside the model
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    beside_model = sorted(p.name for p in checkpoint.parent.iterdir())
    assert main(["evaluate", "--model", str(checkpoint), "--data", str(argon_run), "--no-progress",
                 "--allow-unknown-types"]) == 0  # fmt: skip
    name = f"eval-{checkpoint.parent.name}__{argon_run.name}-all"
    assert sorted(p.name for p in here.iterdir()) == [f"{name}.json", f"{name}.png"]
    argon = json.loads((here / f"{name}.json").read_text())
    assert argon["type_labels"] == ["Ar"] and argon["frames"] == 5
    assert sorted(p.name for p in checkpoint.parent.iterdir()) == beside_model


def test_cli_errors_name_the_file(checkpoint, water_run, tmp_path, capsys):
    corrupt = tmp_path / "broken.pt"
    corrupt.write_bytes(checkpoint.read_bytes()[:1000])
    assert main(["evaluate", "--model", str(corrupt), "--data", str(water_run), "--no-progress"]) == 2
    assert "broken.pt" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(tmp_path / "none.pt"), "--data", str(water_run), "--no-progress"]) == 2
    assert "none.pt" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(checkpoint), "--data", str(tmp_path / "nodata"), "--no-progress"]) == 2
    assert "nodata" in capsys.readouterr().err


def test_energy_errors_per_atom_for_energy_models_and_a_note_for_direct_ones(checkpoint, water_run):
    """An energy model's energies against the data's, per atom (with the mean offset, since a model
    trained on forces has an arbitrary energy zero); a direct-force model says it predicts none."""
    from gnnmd.models import build_model

    frames = load_frames(water_run)
    model, info = load_model(checkpoint)
    direct = evaluate_model(model, frames, info.cutoff, [0, 1], progress=False)
    assert direct["energy"] == "not predicted (a direct-force model)" and "energy_mae_per_atom" not in direct
    torch.manual_seed(0)
    nequip = build_model("nequip", channels=4, layers=1, cutoff=3.0)
    nequip.fit_priors(frames)
    result = evaluate_model(nequip.eval(), frames, 3.0, [0, 1, 2], batch_size=2, progress=False)
    predicted = []
    for k in (0, 1, 2):
        from gnnmd.data import FrameDataset

        predicted.append(float(nequip(FrameDataset(frames, 3.0, [k])[0])["energy"].sum()))
    errors = (np.array(predicted) - frames.energies[[0, 1, 2]]) / frames.topology.n_atoms
    assert result["energy"] == "evaluated"
    assert result["energy_mae_per_atom"] == pytest.approx(np.abs(errors).mean(), rel=1e-5)
    assert result["energy_offset_per_atom"] == pytest.approx(errors.mean(), rel=1e-5)
    assert result["energy_mae_per_atom_about_offset"] == pytest.approx(np.abs(errors - errors.mean()).mean(), rel=1e-4)


@pytest.mark.slow
def test_stress_against_lammps_whose_virial_is_its_energys_strain_derivative(water_run, tmp_path):
    """`gnnmd evaluate --stress`: the reference virial (a LAMMPS rerun) is minus the strain derivative of
    LAMMPS' own energy (checked by finite differences with change_box), and the reported errors are those
    of the model's virials against it."""
    from gnnmd.cli import main
    from gnnmd.inference.evaluate import model_virials, virial_errors
    from gnnmd.lammps.engine import lammps_path, load_system_commands, start_lammps
    from gnnmd.lammps.label import reference_virials

    reference = reference_virials(water_run, tmp_path / "rerun")
    frames = load_frames(water_run)
    assert reference.shape == (len(frames), 3, 3)
    segment = water_run / "segment_000"
    step = int(frames.timesteps[0])
    lmp = start_lammps()
    energies = {}
    try:
        lmp.commands_list(load_system_commands(segment / "system.data", "spcfw.ff"))
        lmp.command(f"read_dump {lammps_path(segment / 'frames.lammpstrj')} {step} x y z box yes")
        h = 1e-4
        for sign in (1, -1):
            lmp.command(f"change_box all x scale {1 + sign * h} remap")
            lmp.command("run 0")
            energies[sign] = lmp.get_thermo("pe")
            lmp.command(f"change_box all x scale {1 / (1 + sign * h)} remap")
    finally:
        lmp.close()
    assert reference[0, 0, 0] == pytest.approx(-(energies[1] - energies[-1]) / (2 * h), rel=2e-3)
    torch.manual_seed(0)
    runs = tmp_path / "runs"
    args = ["train", "--data", str(water_run), "--model", "nequip", "--hyper", "channels=4", "--hyper", "layers=1"]
    assert main([*args, "--cutoff", "3.0", "--epochs", "1", "--runs-dir", str(runs), "--name", "m", "--quiet"]) == 0
    out = tmp_path / "eval.json"
    model = runs / "m" / "best.pt"
    assert main(["evaluate", "--model", str(model), "--data", str(water_run), "--stress", "--out", str(out)]) == 0
    stress = json.loads(out.read_text())["stress"]
    expected = virial_errors(model_virials(model, frames), reference, frames)
    assert stress["virial_mae_per_atom"] == pytest.approx(expected["virial_mae_per_atom"], rel=1e-6)
    assert stress["pressure_mae_atm"] > 0 and stress["frames"] == len(frames)
