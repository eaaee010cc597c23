"""Shared fixtures: tiny datasets made by real LAMMPS runs (a few dozen molecules, tens of steps)."""

from __future__ import annotations

import numpy as np
import pytest

from gnnmd.data import load_frames
from gnnmd.lammps.generate import generate, protocol_for
from gnnmd.models import build_model
from gnnmd.models.checkpoint import save_checkpoint


@pytest.fixture(scope="session")
def water_run(tmp_path_factory):
    """32 SPC/Fw molecules, 2 segments x 6 frames, 10 steps apart, after 40 steps of equilibration."""
    out = tmp_path_factory.mktemp("water") / "run"
    protocol = protocol_for("water", count=32, segments=2, frames=12, stride=10, equil_steps=40, seed=7)
    generate(protocol, out, threads=1, progress=False)
    return out


# water_run's molecules as one CG site each, at their centre of mass (docs/coarse_grain.md)
WATER_COM_MAPPING = """molecules:
  - name: water
    types: [O, H, H]
    sites:
      - {name: W, atoms: [0, 1, 2], placement: com}
"""


@pytest.fixture(scope="session")
def water_cg_fit(water_run, tmp_path_factory):
    """water_run mapped by WATER_COM_MAPPING and force-matched (4.5 A pair table), as `gnnmd coarse-grain
    fit` writes it: the fit folder with cg.ff, cg.table and cg.data (32 sites in a 9.5 x 9.5 x 21 A box)."""
    from gnnmd.data.coarse_grain import coarse_grain, load_cg_frames
    from gnnmd.models.cg_fit import fit_cg, write_fit

    folder = tmp_path_factory.mktemp("cg_fit")
    (folder / "com.yaml").write_text(WATER_COM_MAPPING)
    coarse_grain(water_run, folder / "com.yaml", folder / "cg")
    frames = load_cg_frames(folder / "cg")
    write_fit(fit_cg(frames, cutoff=4.5, spacing=0.25), frames, folder / "fit")
    return folder / "fit"


@pytest.fixture(scope="session")
def argon_run(tmp_path_factory):
    """64 argon atoms, 5 frames 20 steps apart after 200 steps of heating."""
    out = tmp_path_factory.mktemp("argon") / "run"
    protocol = protocol_for("argon", count=64, frames=5, stride=20, equil_steps=200, seed=11)
    generate(protocol, out, threads=1, progress=False)
    return out


@pytest.fixture(scope="session")
def argon_model(argon_run, tmp_path_factory):
    """An untrained eqforce model for argon with forces of argon's size: MD with it does not blow up."""
    frames = load_frames(argon_run)
    model = build_model("eqforce", cutoff=6.0, hidden=16, layers=2, radial=8)
    path = tmp_path_factory.mktemp("model") / "argon.pt"
    rms = float(np.sqrt((frames.forces**2).mean()))
    save_checkpoint(path, model, type_table=frames.topology.type_table(), normalisation={"force_scale": rms})
    return path


def write_chains_data_file(path, rng):
    """12 charged four-atom chains (bonds 1-2, 2-3, 3-4, one angle each end) in a 16 A box."""
    atoms, bonds, angles = [], [], []
    for m in range(12):
        start = rng.uniform(0, 16, 3)
        for k in range(4):
            position = start + np.array([1.2 * k, 0.6 * (k % 2), 0.0])
            atoms.append(f"{4 * m + k + 1} {m + 1} {k % 2 + 1} {0.4 if k % 2 else -0.4} {' '.join(map(str, position))}")
        bonds += [f"{len(bonds) + j + 1} 1 {4 * m + j + 1} {4 * m + j + 2}" for j in range(3)]
        angles += [f"{len(angles) + 1} 1 {4 * m + 1} {4 * m + 2} {4 * m + 3}"]
    path.write_text(
        f"chains\n\n{len(atoms)} atoms\n2 atom types\n{len(bonds)} bonds\n1 bond types\n{len(angles)} angles\n"
        "1 angle types\n\n0 16 xlo xhi\n0 16 ylo yhi\n0 16 zlo zhi\n\nMasses\n\n1 12.011\n2 1.008\n\n"
        "Pair Coeffs\n\n1 0.066 3.5\n2 0.03 2.5\n\nAtoms # full\n\n" + "\n".join(atoms)
        + "\n\nBonds\n\n" + "\n".join(bonds) + "\n\nAngles\n\n" + "\n".join(angles) + "\n"
    )  # fmt: skip


@pytest.fixture
def chains_data_file(tmp_path):
    """A LAMMPS data file of twelve charged four-atom chains: bonds, 1-3 and 1-4 pairs (see write_chains_data_file)."""
    path = tmp_path / "chains.data"
    write_chains_data_file(path, np.random.default_rng(3))
    return path


def lammps_rerun(run_dir, tmp_path):
    """Forces and potential energies of the first segment's frames recomputed by a fresh LAMMPS `rerun`
    under the reference force field the dataset's manifest stores (what every later rerun uses)."""
    import json

    from gnnmd.data import read_lammps
    from gnnmd.data.forcefield import dataset_force_field
    from gnnmd.lammps.engine import load_system_commands, start_lammps

    manifest = json.loads((run_dir / "manifest.json").read_text())
    segment, stride = run_dir / "segment_000", manifest["protocol"]["stride"]
    out_dump, out_energy = tmp_path / "rerun.lammpstrj", tmp_path / "rerun_energy.txt"
    lmp = start_lammps(log=tmp_path / "rerun.log")
    lmp.commands_list(
        load_system_commands(segment / "system.data", dataset_force_field(run_dir))
        + [
            f"dump forces all custom {stride} {out_dump} id type x y z fx fy fz",
            "dump_modify forces sort id format float %.10g",
            f'fix energies all ave/time {stride} 1 {stride} c_thermo_pe file {out_energy} format " %.10g"',
            f"rerun {segment / 'frames.lammpstrj'} dump x y z box yes",
        ]
    )
    lmp.close()
    return read_lammps(segment / "system.data", out_dump, out_energy)
