"""--device on a machine as CI has it (CPU only): `cpu` and `auto` compute the same, to the bit, as
before; a GPU asked for where there is none, or a device name that means nothing, is refused before
anything is written. tests/test_gpu.py checks the GPU itself where one exists."""

from __future__ import annotations

import json

import pytest
import torch

from gnnmd.cli import main
from gnnmd.devices import resolve_device
from gnnmd.models.checkpoint import read_checkpoint

TINY = ["--model", "mpnn", "--hyper", "hidden=8", "--hyper", "layers=1", "--epochs", "1", "--no-progress"]


def train(water_run, runs, name, *extra):
    return main(["train", "--data", str(water_run), "--runs-dir", str(runs), "--name", name, *TINY, *extra])


def test_cpu_and_auto_train_and_evaluate_alike(water_run, tmp_path):
    assert train(water_run, tmp_path, "cpu", "--device", "cpu") == 0
    assert train(water_run, tmp_path, "auto") == 0
    cpu, auto = (read_checkpoint(tmp_path / name / "best.pt")["state_dict"] for name in ("cpu", "auto"))
    if resolve_device("auto").type == "cpu":
        assert all(torch.equal(cpu[k], auto[k]) for k in cpu)
    assert all(t.device.type == "cpu" for t in cpu.values())
    results = []
    for device in ("cpu", "auto"):
        out = tmp_path / f"eval-{device}.json"
        args = ["evaluate", "--model", str(tmp_path / "cpu" / "best.pt"), "--data", str(water_run), "--out", str(out)]
        assert main([*args, "--device", device, "--no-progress"]) == 0
        results.append(json.loads(out.read_text())["force_mae"])
    assert results[0] == pytest.approx(results[1], rel=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_a_gpu_where_there_is_none_is_refused_before_anything_is_written(water_run, tmp_path, capsys):
    assert train(water_run, tmp_path, "gpu", "--device", "cuda") == 2
    err = capsys.readouterr().err
    assert "--device cuda" in err and "no CUDA device" in err and "Traceback" not in err
    assert not (tmp_path / "gpu").exists()


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cpu:0 "])
def test_a_device_name_that_means_nothing(water_run, tmp_path, capsys, spec):
    assert train(water_run, tmp_path, "bad", "--device", spec) == 2
    err = capsys.readouterr().err
    assert "--device" in err and repr(spec) in err and not (tmp_path / "bad").exists()
