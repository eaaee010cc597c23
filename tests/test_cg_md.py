"""CG MD through `gnnmd md --forcefield` (docs/coarse_grain.md, 3): a coarse-grain fit's cg.ff and cg.data
run in plain LAMMPS on one rank and on two (mpiexec from the mpich wheel, a real domain decomposition),
with gnnmd md's settings, outputs, failures and --out safety; model options are refused."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gnnmd.cli import main

MPIEXEC = Path(sys.executable).parent / "mpiexec"
TARGET = 300.0  # K, the NVT target


def _md_args(fit: Path, out: Path, *extra: str) -> list[str]:
    """`gnnmd md` of the fit's CG system under its force field: 200 steps of NVT at TARGET."""
    args = ["md", "--forcefield", str(fit / "cg.ff"), "--system", str(fit / "cg.data"), "--out", str(out)]
    return [*args, "--steps", "200", "--ensemble", "nvt", "--temperature", str(TARGET), "--no-progress", *extra]


def _thermo(out: Path) -> np.ndarray:
    return np.loadtxt(out / "thermo.txt", comments="#", ndmin=2)


def _on_two_ranks(args: list[str], timeout: float = 90.0) -> tuple[int, str, str]:
    """`mpiexec -n 2 python -m gnnmd.cli ARGS`: exit status, stdout, stderr. A run past `timeout` (a rank
    waiting for another that has given up) fails the test; mpiexec is ended with SIGTERM, on which it ends
    its ranks (a SIGKILL would leave them running)."""
    command = [str(MPIEXEC), "-n", "2", sys.executable, "-m", "gnnmd.cli", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as run:
        try:
            stdout, stderr = run.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            run.terminate()
            stdout, stderr = run.communicate()
            pytest.fail(f"mpiexec -n 2 gnnmd md ran past {timeout:g} s; stderr: {stderr[-2000:]}")
    return run.returncode, stdout, stderr


@pytest.fixture(scope="module")
def one_rank(water_cg_fit, tmp_path_factory):
    """The NVT run on one rank (in this process): its exit status and folder."""
    out = tmp_path_factory.mktemp("cg_md") / "one"
    return main(_md_args(water_cg_fit, out)), out


@pytest.mark.slow
def test_cg_nvt_runs_on_one_rank(one_rank, water_cg_fit):
    status, out = one_rank
    assert status == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "gnnmd-md" and summary["forcefield"] == str(water_cg_fit / "cg.ff")
    assert summary["atoms"] == 32 and summary["mpi_ranks"] == 1 and summary["ensemble"] == "nvt"
    assert not summary["blown_up"] and summary["failed_at_step"] is None and summary["failure"] is None
    assert abs(summary["mean_temperature"] - TARGET) < 0.15 * TARGET
    assert _thermo(out).shape == (201, 7)
    assert (out / "trajectory.lammpstrj").read_text().count("ITEM: TIMESTEP") == 21
    assert "1 by 1 by 1 MPI processor grid" in (out / "log.lammps").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not MPIEXEC.is_file(), reason="no mpiexec in this environment (the mpich wheel has one)")
def test_cg_nvt_on_two_ranks_is_the_one_rank_run(one_rank, water_cg_fit, tmp_path):
    """LAMMPS divides the box over two ranks; the first alone writes the folder and speaks; the same start
    (velocities drawn alike on any number of ranks) gives the same energies."""
    status, one = one_rank
    assert status == 0
    two = tmp_path / "two"
    returncode, stdout, stderr = _on_two_ranks(_md_args(water_cg_fit, two))
    assert returncode == 0, (returncode, stderr[-3000:])
    assert stdout.count(str(two)) == 1  # one summary line, from the first rank
    grid = re.search(r"(\d+) by (\d+) by (\d+) MPI processor grid", (two / "log.lammps").read_text())
    assert grid and np.prod([int(n) for n in grid.groups()]) == 2
    assert json.loads((two / "summary.json").read_text())["mpi_ranks"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two"]  # no working folder or lock left beside it
    pe = [_thermo(out)[:20, 2] for out in (one, two)]
    assert np.abs(pe[1] - pe[0]).max() <= 1e-6 * np.abs(pe[0]).max()
    assert pe[0].std() > 1e-4 * np.abs(pe[0]).max()  # the energies changed: the check is not empty


@pytest.mark.slow
def test_a_blow_up_is_kept_and_exits_1(water_cg_fit, tmp_path, capsys):
    """40 fs steps overlap the sites: the temperature jump stops the run, kept as a result, exit 1."""
    out = tmp_path / "md"
    args = ["md", "--forcefield", str(water_cg_fit / "cg.ff"), "--system", str(water_cg_fit / "cg.data")]
    assert main([*args, "--out", str(out), "--steps", "100", "--timestep", "40", "--temperature", "300"]) == 1
    assert "temperature jumped" in capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["blown_up"] and summary["failed_at_step"] < 100 and "temperature jumped" in summary["failure"]


@pytest.mark.parametrize(
    "option", [["--precision", "float64"], ["--coulomb", "lammps"], ["--lj-tail", "10"], ["--allow-unknown-types"]]
)
def test_model_options_are_refused_with_a_forcefield(water_cg_fit, tmp_path, capsys, option):
    """Even a model option's default value, said aloud, is refused before anything is written."""
    out = tmp_path / "md"
    assert main([*_md_args(water_cg_fit, out), *option]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and option[0] in err and "--forcefield" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_out_over_a_folder_gnnmd_md_did_not_write_is_refused(water_cg_fit, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):
        assert main([*_md_args(water_cg_fit, out), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(out) in err
    assert "--overwrite replaces only a folder gnnmd md wrote" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
