"""On a GPU (skipped where there is none, as in CI): every family's forces on the GPU equal those on the
CPU, a training epoch runs on the GPU and its checkpoint loads and evaluates on the CPU, and a PME model
evaluates the same on both."""

from __future__ import annotations

import json

import pytest
import torch

from gnnmd.cli import main
from gnnmd.data import build_graph, load_frames
from gnnmd.models import MODELS, build_model
from gnnmd.models.checkpoint import load_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("family", sorted(MODELS))
def test_forces_on_the_gpu_equal_those_on_the_cpu(water_run, family):
    frames = load_frames(water_run)
    torch.manual_seed(0)
    model = build_model(family, cutoff=4.0).eval()
    model.fit_priors(frames)
    graph = build_graph(frames.topology, frames.positions[0], frames.cells[0], 4.0)
    with torch.enable_grad() if model.needs_grad else torch.no_grad():
        cpu = model(graph)["forces"].detach()
        gpu = model.to("cuda")(graph.to("cuda"))["forces"].detach().cpu()
    assert torch.allclose(gpu, cpu, atol=1e-4 * float(cpu.abs().max()), rtol=0)


def test_gpu_training_gives_a_checkpoint_the_cpu_evaluates(water_run, tmp_path):
    args = ["train", "--data", str(water_run), "--runs-dir", str(tmp_path), "--name", "gpu", "--model", "nequip"]
    args += ["--hyper", "channels=4", "--hyper", "layers=1", "--cutoff", "4.0", "--epochs", "1", "--no-progress"]
    assert main([*args, "--device", "cuda"]) == 0
    model, info = load_model(tmp_path / "gpu" / "best.pt")
    assert all(t.device.type == "cpu" for t in model.state_dict().values()) and info.electrostatics
    maes = []
    for device in ("cpu", "cuda"):
        out = tmp_path / f"eval-{device}.json"
        command = ["evaluate", "--model", str(tmp_path / "gpu" / "best.pt"), "--data", str(water_run)]
        assert main([*command, "--out", str(out), "--device", device, "--no-progress"]) == 0
        maes.append(json.loads(out.read_text())["force_mae"])
    assert maes[1] == pytest.approx(maes[0], rel=1e-4)


def test_md_forces_on_the_gpu_equal_those_on_the_cpu(water_run, tmp_path):
    """The force function MD calls (tabulated nequip, Verlet list, walls) on the GPU and on the CPU."""
    from gnnmd.inference.forces import ModelForces
    from gnnmd.models.checkpoint import save_checkpoint

    frames = load_frames(water_run)
    torch.manual_seed(0)
    model = build_model("nequip", cutoff=4.0, channels=8, layers=2, repulsion=1.0)
    normalisation = {"model_fit": model.fit_priors(frames)}
    path = save_checkpoint(
        tmp_path / "m.pt", model, type_table=frames.topology.type_table(), normalisation=normalisation
    )
    positions, cell = frames.positions[0].astype("float64"), frames.cells[0].astype("float64")
    cpu, e_cpu = ModelForces(path, frames.topology, device="cpu")(positions, cell)
    gpu, e_gpu = ModelForces(path, frames.topology, device="cuda")(positions, cell)
    scale = abs(cpu).max()
    assert abs(gpu - cpu).max() < 1e-4 * scale and abs(e_gpu - e_cpu) < 1e-5 * abs(e_cpu)
