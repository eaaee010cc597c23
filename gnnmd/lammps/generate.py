"""`gnnmd generate`: datasets of the reference study's four systems, or of your own liquid (custom.py),
made by running LAMMPS.

A dataset is a directory: one sub-directory per independent segment (its LAMMPS data file, dump,
energies and log), manifest.json (system, every parameter, seeds, LAMMPS version, frame count) and
frames.npz (the frames read back with MDAnalysis)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from gnnmd import __version__
from gnnmd.data.dataset_folder import dataset_target, write_dataset
from gnnmd.data.forcefield import ForceField
from gnnmd.lammps.custom import (
    LiquidProtocol,
    check_force_field,
    checked,
    liquid_variables,
    run_problems,
    write_masses,
)
from gnnmd.lammps.engine import check_lammps_path, lammps_input, run_input
from gnnmd.progress import hidden

SYSTEMS = ("water", "big-water", "argon", "argon-train")


@dataclass(frozen=True)
class Protocol:
    """How one system is simulated. `frames` counts all dumped frames over all segments."""

    system: str
    input_file: str
    forcefield: str
    count: int  # water molecules or argon atoms
    box: tuple[float, float, float]
    segments: int
    frames: int
    stride: int
    equil_steps: int
    timestep: float
    temperature: tuple[float, float]  # water: range drawn per segment; argon: (start, target) of the ramp
    pressure: float
    seed: int
    tdamp: float = 100.0
    pdamp: float = 1000.0

    @property
    def frames_per_segment(self) -> int:
        return self.frames // self.segments

    @property
    def atoms(self) -> int:
        return self.count * 3 if self.input_file == "water.lmp" else self.count


# The study's protocols (docs/design.md); water dumped from right after minimisation (equil_steps=0).
WATER = dict(input_file="water.lmp", forcefield="spcfw.ff", timestep=2.0, temperature=(280.0, 360.0), pressure=1.0)
ARGON = dict(input_file="argon.lmp", forcefield="argon.ff", timestep=1.0, temperature=(1.0, 90.0), pressure=3.0)
STUDY = {
    "water": Protocol(
        "water", **WATER, count=216, box=(18.0, 18.0, 40.0), segments=100, frames=10100, stride=5, equil_steps=0, seed=1
    ),
    "big-water": Protocol(
        "big-water", **WATER, count=1600, box=(36.344,) * 3, segments=1, frames=100, stride=50, equil_steps=5000, seed=2
    ),
    "argon": Protocol(
        "argon", **ARGON, count=400, box=(26.28,) * 3, segments=1, frames=100, stride=100, equil_steps=20000, seed=3
    ),
    "argon-train": Protocol(
        "argon-train",
        **ARGON,
        count=400,
        box=(26.28,) * 3,
        segments=1,
        frames=3000,
        stride=100,
        equil_steps=1000,
        seed=4,
    ),
}

# Defaults: minutes, not hours, and equilibrated before the first frame; fewer, less correlated frames.
DEFAULTS = {
    "water": replace(STUDY["water"], segments=10, frames=510, stride=20, equil_steps=5000),
    "big-water": replace(STUDY["big-water"], frames=20),  # 5000 steps: 1600 molecules need them to settle
    "argon": STUDY["argon"],
    "argon-train": replace(STUDY["argon-train"], frames=1000),
}


def protocol_for(
    system: str,
    study: bool = False,
    count: int | None = None,
    frames: int | None = None,
    segments: int | None = None,
    stride: int | None = None,
    equil_steps: int | None = None,
    timestep: float | None = None,
    temperature: tuple[float, float] | None = None,
    seed: int | None = None,
    box: tuple[float, float, float] | None = None,
) -> Protocol:
    """The default (or study) protocol of `system` with overrides applied and checked."""
    if system not in SYSTEMS:
        raise ValueError(f"unknown system {system!r}; choose one of {', '.join(SYSTEMS)}")
    base = (STUDY if study else DEFAULTS)[system]
    changes = {
        name: value
        for name, value in dict(
            count=count,
            frames=frames,
            segments=segments,
            stride=stride,
            equil_steps=equil_steps,
            timestep=timestep,
            temperature=temperature,
            seed=seed,
        ).items()
        if value is not None
    }
    protocol = replace(base, **changes)
    if box is None and count is not None:
        # keep the study's starting density when only the molecule/atom count changes
        scale = (count / base.count) ** (1.0 / 3.0)
        box = tuple(round(length * scale, 4) for length in base.box)
    if box is not None:
        protocol = replace(protocol, box=tuple(float(b) for b in box))
    problems = [f"count must be positive, got {protocol.count}"] if protocol.count < 1 else []
    return checked(protocol, problems + run_problems(protocol))


def protocol_from_options(
    system: str,
    study: bool = False,
    molecules: int | None = None,
    atoms: int | None = None,
    temperature: tuple[float, float] | None = None,
    box=None,
    **overrides,
) -> Protocol:
    """The Protocol that `gnnmd generate` options ask for: --molecules for water systems, --atoms for argon,
    a single argon temperature is the ramp's target. `overrides`: frames, segments, stride, equil_steps,
    timestep, seed (None: the protocol's)."""
    water = system in ("water", "big-water")
    if (molecules is not None and not water) or (atoms is not None and water):
        raise ValueError(f"use --molecules for water systems and --atoms for argon ({system})")
    if temperature is not None and not water and temperature[0] == temperature[1]:
        temperature = (protocol_for(system, study=study).temperature[0], temperature[1])
    return protocol_for(
        system,
        study=study,
        count=molecules if water else atoms,
        temperature=temperature,
        box=tuple(box) if box else None,
        **overrides,
    )


def segment_variables(protocol: Protocol, seed: int, folder: Path) -> dict:
    """The -var settings of one segment for the system's input file."""
    lx, ly, lz = protocol.box
    variables = dict(
        lx=lx,
        ly=ly,
        lz=lz,
        seed=seed,
        dt=protocol.timestep,
        equil=protocol.equil_steps,
        steps=(protocol.frames_per_segment - 1) * protocol.stride,
        stride=protocol.stride,
        press=protocol.pressure,
        tdamp=protocol.tdamp,
        pdamp=protocol.pdamp,
        forcefield=lammps_input(protocol.forcefield),
        datafile=folder / "system.data",
        dumpfile=folder / "frames.lammpstrj",
        energyfile=folder / "energy.txt",
    )
    if protocol.input_file == "water.lmp":
        variables.update(
            nmol=protocol.count,
            tmin=protocol.temperature[0],
            tmax=protocol.temperature[1],
            molfile=lammps_input("spcfw_water.mol"),
        )
    else:
        variables.update(natoms=protocol.count, tstart=protocol.temperature[0], temp=protocol.temperature[1])
    return variables


def run_segment(
    protocol: Protocol | LiquidProtocol, k: int, seed: int, work: Path, threads: int, progress: bool
) -> dict:
    """Run segment k with LAMMPS into work/segment_kkk; its manifest entry."""
    folder = work / f"segment_{k:03d}"
    folder.mkdir()
    total_steps = protocol.equil_steps + (protocol.frames_per_segment - 1) * protocol.stride
    liquid = isinstance(protocol, LiquidProtocol)
    variables = liquid_variables(protocol, seed, folder) if liquid else segment_variables(protocol, seed, folder)
    if isinstance(variables.get("masses"), Path):
        write_masses(protocol, variables["masses"])
    try:
        result = run_input(
            lammps_input(protocol.input_file),
            variables,
            folder / "log.lammps",
            total_steps,
            desc=f"segment {k + 1}/{protocol.segments}",
            threads=threads,
            progress=progress,
            read_variables=("temp",) if protocol.input_file in ("water.lmp", "liquid.lmp") else (),
        )
    finally:
        if isinstance(variables.get("masses"), Path):
            variables["masses"].unlink(missing_ok=True)  # the log echoes the masses; the folder keeps only its own
    if result["natoms"] != protocol.atoms:
        hint = "; a lower --density or a larger --box helps" if liquid else ""
        raise RuntimeError(
            f"LAMMPS placed {result['natoms']} atoms instead of {protocol.atoms} (box {protocol.box} too small "
            f"for random insertion?{hint}); see {folder / 'log.lammps'}"
        )
    return {
        "seed": seed,
        "temperature": result.get("temp", protocol.temperature[1]),
        "data_file": f"{folder.name}/system.data",
        "dump_file": f"{folder.name}/frames.lammpstrj",
        "energy_file": f"{folder.name}/energy.txt",
        "log_file": f"{folder.name}/log.lammps",
        "lammps_version": result["version"],
    }


def generate(
    protocol: Protocol | LiquidProtocol, out: Path, overwrite: bool = False, threads: int = 2, progress: bool = True
) -> dict:
    """Run every segment with LAMMPS into a fresh folder, read the frames back, write the manifest.

    Work happens in a hidden sibling folder (`.NAME.partial`) that replaces `out` only when complete, so a
    failed or interrupted run never damages an existing dataset; `out` is replaced only with `overwrite`,
    and only if gnnmd made it. An OS lock keeps a second writer out."""
    out = dataset_target(out, overwrite, check_lammps_path)  # refused before anything is written
    if isinstance(protocol, LiquidProtocol):
        check_force_field(protocol)  # a line LAMMPS cannot take: one error naming it, before any run
    return write_dataset(out, lambda work: _generate_into(protocol, work, threads, progress))


def _generate_into(protocol: Protocol | LiquidProtocol, work: Path, threads: int, progress: bool) -> dict:
    """Every segment, the frames read back and the manifest, in `work`."""
    from gnnmd.data.frames_cache import frames_record
    from gnnmd.data.reader import read_run

    force_field = _force_field(protocol)  # read before the runs: the file they use
    seeds = np.random.default_rng(protocol.seed).integers(1, 900_000_000, size=protocol.segments)
    started = time.time()
    outer = tqdm(
        range(protocol.segments), desc=f"{protocol.system} segments", disable=hidden(progress and protocol.segments > 1)
    )
    segments = [run_segment(protocol, k, int(seeds[k]), work, threads, progress) for k in outer]
    version = [segment.pop("lammps_version") for segment in segments][-1]
    manifest = {
        "source": "LAMMPS",
        "lammps_version": version,
        "gnnmd_version": __version__,
        "system": protocol.system,
        "protocol": asdict(protocol),
        "lammps_input": protocol.input_file,
        "force_field": force_field.to_dict(),
        "frames_per_segment": protocol.frames_per_segment,
        "segments": segments,
        "simulation_seconds": round(time.time() - started, 1),
    }
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2))
    frames = read_run(work, progress=progress)
    if len(frames) != protocol.frames:
        raise RuntimeError(f"expected {protocol.frames} frames but read {len(frames)} from {work}")
    manifest["frame_count"] = len(frames)
    manifest["atoms"] = frames.topology.n_atoms
    manifest["type_table"] = frames.topology.type_table()
    manifest["mean_abs_force"] = float(np.abs(frames.forces).mean())
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2))
    frames.save(work / "frames.npz", meta=frames_record(work))  # the cache records its sources
    return manifest


def _force_field(protocol: Protocol | LiquidProtocol) -> ForceField:
    """The reference force field: the user's file for a custom liquid, else the shipped one."""
    if isinstance(protocol, LiquidProtocol):
        return ForceField.read(protocol.forcefield)
    return ForceField.shipped(protocol.forcefield)
