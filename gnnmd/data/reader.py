"""Reading LAMMPS output with MDAnalysis: a data file (topology, charges, Pair Coeffs) plus dumps with
forces, and the per-frame potential energies gnnmd's inputs write beside them.

Every problem is reported as a DataError naming the file, the frame and what is wrong."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np

from gnnmd.data.frames import ADDED_SEGMENTS, DataWarning, Frames
from gnnmd.data.topology import Topology
from gnnmd.progress import hidden

# element guessed from the mass, for readable type tables; anything else is called "type<N>"
KCAL_PER_EV = 23.060547830619029  # kcal/mol per eV (metal units' energy)
KNOWN_MASSES = {"H": 1.008, "O": 15.9994, "Ar": 39.948, "C": 12.011, "N": 14.007}


class DataError(ValueError):
    """Bad input data; the message names the file, the frame and the field."""


def _check_not_empty(path: Path) -> None:
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")


def _guess_name(type_id: int, mass: float) -> str:
    for name, ref in KNOWN_MASSES.items():
        if abs(mass - ref) < 0.05:
            return name
    return f"type{type_id}"


def read_pair_coeffs(data_file: Path) -> dict[int, tuple[float, float]]:
    """epsilon, sigma per type from the data file's `Pair Coeffs` (or the i-i rows of `PairIJ Coeffs`).

    MDAnalysis does not read these sections, so they are parsed here."""
    coeffs: dict[int, tuple[float, float]] = {}
    lines = Path(data_file).read_text().splitlines()
    section = None
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if words[0][0].isalpha():
            section = " ".join(words[:2]) if words[0] in ("Pair", "PairIJ") else words[0]
            continue
        if section not in ("Pair Coeffs", "PairIJ Coeffs"):
            continue
        try:
            if section == "Pair Coeffs":
                coeffs[int(words[0])] = (float(words[1]), float(words[2]))
            elif words[0] == words[1]:
                coeffs[int(words[0])] = (float(words[2]), float(words[3]))
        except (IndexError, ValueError) as err:
            raise DataError(f"{data_file}, line {number}: cannot read pair coefficients from {raw!r}") from err
    return coeffs


def declared_units(data_file) -> str | None:
    """The unit system a data file's header names (`write_data` writes "units = real"), or None."""
    with open(data_file, errors="replace") as file:
        found = re.search(r"units\s*=\s*(\w+)", file.readline())
    return found.group(1) if found else None


def _check_declared_units(data_file: Path, units: str) -> None:
    declared = declared_units(data_file)
    if declared is not None and declared != units:
        raise DataError(
            f"{data_file}: written in LAMMPS units {declared}, but read as {units}; gnnmd works in real units "
            f"(kcal/mol, A): turn it into a dataset with `gnnmd import --units {declared}`"
            + (", which converts metal" if declared == "metal" else "")
        )


def read_topology(data_file: str | Path, units: str = "real", pair_coeffs: dict | None = None) -> Topology:
    """Types, charges, molecules, bonds, angles and per-type (mass, charge, epsilon, sigma), in real units.
    A data file whose header names other units than `units` is refused; `units="metal"` (for `gnnmd
    import`) converts epsilon from eV to kcal/mol. `pair_coeffs` ({type id: (epsilon, sigma)}) stands in
    for the Pair Coeffs a data file lacks: a CG system for a table prior (coarse-grain fit's cg.data) has
    none, and its sites are the types of the model that runs it."""
    import MDAnalysis as mda

    data_file = Path(data_file)
    if not data_file.is_file():
        raise DataError(f"{data_file}: LAMMPS data file not found")
    _check_not_empty(data_file)
    _check_declared_units(data_file, units)
    try:
        universe = mda.Universe(str(data_file), format="DATA")
    except Exception as err:
        raise DataError(f"{data_file}: not a readable LAMMPS data file ({err})") from err
    atoms = universe.atoms
    type_ids = np.array([int(t) for t in atoms.types], dtype=np.int64)
    table_type_ids = np.unique(type_ids)
    coeffs = {**(pair_coeffs or {}), **read_pair_coeffs(data_file)}
    missing = [int(t) for t in table_type_ids if int(t) not in coeffs]
    if missing:
        raise DataError(
            f"{data_file}: atom type(s) {missing} have no Pair Coeffs; gnnmd takes epsilon and sigma "
            "from the data file (write it with `write_data FILE pair ii`)"
        )
    # MDAnalysis keeps charges in float32; data files hold them to a few decimals
    charges = np.round(np.asarray(atoms.charges, dtype=np.float64), 6)
    masses = np.asarray(atoms.masses, dtype=np.float64)
    rows = np.searchsorted(table_type_ids, type_ids)
    table_masses = np.array([masses[rows == k][0] for k in range(len(table_type_ids))])
    table_charges = np.array([round(charges[rows == k].mean(), 6) for k in range(len(table_type_ids))])
    table_eps = np.array([coeffs[int(t)][0] for t in table_type_ids]) * (KCAL_PER_EV if units == "metal" else 1.0)
    table_sig = np.array([coeffs[int(t)][1] for t in table_type_ids])

    def connectivity(group, width):
        try:
            indices = np.asarray(group.indices, dtype=np.int64)
        except AttributeError:
            indices = np.zeros((0, width), dtype=np.int64)
        return indices.reshape(-1, width)

    return Topology(
        types=rows.astype(np.int64),
        charges=charges,
        epsilon=table_eps[rows],
        sigma=table_sig[rows],
        molecules=np.asarray(atoms.resids, dtype=np.int64),
        bonds=connectivity(getattr(universe, "bonds", None), 2),
        angles=connectivity(getattr(universe, "angles", None), 3),
        table_type_ids=table_type_ids,
        table_names=np.array([_guess_name(int(t), m) for t, m in zip(table_type_ids, table_masses)]),
        table_masses=table_masses,
        table_charges=table_charges,
        table_epsilon=table_eps,
        table_sigma=table_sig,
    )


def read_energies(energy_file: Path) -> dict[int, float]:
    """timestep -> potential energy, from a `fix ave/time ... c_thermo_pe file` output."""
    energy_file = Path(energy_file)
    if not energy_file.is_file():
        raise DataError(f"{energy_file}: energy file not found")
    _check_not_empty(energy_file)
    try:
        table = np.loadtxt(energy_file, comments="#", ndmin=2)
    except ValueError as err:
        raise DataError(f"{energy_file}: cannot read timestep/energy columns ({err})") from err
    if table.size and table.shape[1] < 2:
        raise DataError(f"{energy_file}: expected two columns (timestep, potential energy)")
    return {int(step): float(energy) for step, energy in table[:, :2]}


def _dump_complete_lines(dump_file: Path, n_atoms: int) -> tuple[int, bool]:
    """(number of complete frames, whether a truncated frame follows them), from the line count."""
    lines = 0
    ends_with_newline = True
    with open(dump_file, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 24), b""):
            lines += chunk.count(b"\n")
            ends_with_newline = chunk.endswith(b"\n")
    per_frame = n_atoms + 9
    complete = lines // per_frame
    truncated = lines % per_frame != 0 or not ends_with_newline
    return complete, truncated


def _open_dump(data_file: Path, dump_file: Path, topology: Topology):
    """The dump's MDAnalysis trajectory (unscaled coordinates, the type column) against the data file."""
    import MDAnalysis as mda

    if not dump_file.is_file():
        raise DataError(f"{dump_file}: dump file not found")
    _check_not_empty(dump_file)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Reader has no dt information")
            universe = mda.Universe(
                str(data_file),
                str(dump_file),
                topology_format="DATA",
                format="LAMMPSDUMP",
                lammps_coordinate_convention="unscaled",
                additional_columns=["type"],
                dt=1.0,  # timesteps are kept as LAMMPS step numbers; MDAnalysis' time is not used
            )
    except Exception as err:
        raise DataError(f"{dump_file}: cannot be read against {data_file} ({err})") from err
    if universe.trajectory.n_atoms != topology.n_atoms:
        raise DataError(
            f"{dump_file}: {universe.trajectory.n_atoms} atoms in the dump but {topology.n_atoms} in {data_file}"
        )
    return universe.trajectory


def _check_frame(ts, where: str, topology: Topology, data_file: Path) -> None:
    """Forces present, the data file's types in the data file's order, every number finite."""
    if not ts.has_forces:
        raise DataError(f"{where}: no force columns (the dump needs fx fy fz)")
    dump_types = ts.data["type"].astype(np.int64)
    unknown = sorted(set(np.unique(dump_types).tolist()) - set(int(t) for t in topology.table_type_ids))
    if unknown:
        raise DataError(f"{where}: atom type(s) {unknown} are not in {data_file}")
    expected_types = topology.table_type_ids[topology.types]
    if not np.array_equal(dump_types, expected_types):
        first = int(np.flatnonzero(dump_types != expected_types)[0])
        raise DataError(
            f"{where}: atom {first + 1} has type {dump_types[first]} but {expected_types[first]} in {data_file}"
        )
    for name, values in (("positions", ts.positions), ("forces", ts.forces), ("box", ts.dimensions)):
        if not np.all(np.isfinite(values)):
            raise DataError(f"{where}: {name} contain NaN or inf")


def _energies_at(energy_file: Path, timesteps: np.ndarray, dump_file: Path) -> np.ndarray:
    """The potential energy of each dumped timestep, from the energy file written beside the dump."""
    by_step = read_energies(energy_file)
    missing = [int(s) for s in timesteps if int(s) not in by_step]
    if missing:
        raise DataError(f"{energy_file}: no energy for timestep(s) {missing[:5]} of {dump_file}")
    energies = np.array([by_step[int(s)] for s in timesteps], dtype=np.float64)
    if not np.all(np.isfinite(energies)):
        raise DataError(f"{energy_file}: energies contain NaN or inf")
    return energies


def read_lammps(
    data_file: str | Path,
    dump_file: str | Path,
    energy_file: str | Path | None = None,
    segment: int = 0,
    topology: Topology | None = None,
    progress: bool = False,
) -> Frames:
    """Frames of one LAMMPS dump (columns id, type, x y z, fx fy fz; unscaled coordinates) read with
    MDAnalysis against the data file's topology. A truncated last frame is dropped with a warning."""
    from tqdm.auto import tqdm

    data_file, dump_file = Path(data_file), Path(dump_file)
    if topology is None:
        topology = read_topology(data_file)
    trajectory = _open_dump(data_file, dump_file, topology)
    n_complete, truncated = _dump_complete_lines(dump_file, topology.n_atoms)
    if truncated:
        warnings.warn(
            f"{dump_file}: the last frame (frame {n_complete}) is truncated; using the {n_complete} "
            "complete frames before it",
            DataWarning,
            stacklevel=2,
        )
    if n_complete == 0:
        raise DataError(f"{dump_file}: no complete frame")
    n_atoms = topology.n_atoms
    positions = np.empty((n_complete, n_atoms, 3), dtype=np.float32)
    forces = np.empty((n_complete, n_atoms, 3), dtype=np.float32)
    cells = np.empty((n_complete, 3, 3), dtype=np.float32)
    timesteps = np.empty(n_complete, dtype=np.int64)
    for index in tqdm(range(n_complete), desc=f"reading {dump_file.name}", disable=hidden(progress), leave=False):
        where = f"{dump_file}, frame {index}"
        try:
            ts = trajectory[index]
        except Exception as err:
            raise DataError(f"{where}: cannot be read ({err})") from err
        _check_frame(ts, where, topology, data_file)
        positions[index], forces[index], cells[index] = ts.positions, ts.forces, ts.triclinic_dimensions
        timesteps[index] = ts.data["step"]
    energies = None if energy_file is None else _energies_at(Path(energy_file), timesteps, dump_file)
    return Frames(
        topology=topology,
        positions=positions,
        forces=forces,
        cells=cells,
        energies=energies,
        timesteps=timesteps,
        segments=np.full(n_complete, segment, dtype=np.int64),
    )


def concatenate(parts: list[Frames]) -> Frames:
    """One Frames from several runs of the same system; their topologies must agree."""
    first = parts[0]
    has_energy = all(p.energies is not None for p in parts)
    return Frames(
        topology=first.topology,
        positions=np.concatenate([p.positions for p in parts]),
        forces=np.concatenate([p.forces for p in parts]),
        cells=np.concatenate([p.cells for p in parts]),
        energies=np.concatenate([p.energies for p in parts]) if has_energy else None,
        timesteps=np.concatenate([p.timesteps for p in parts]),
        segments=np.concatenate([p.segments for p in parts]),
    )


SEGMENT_FILES = ("data_file", "dump_file", "energy_file")  # what each segment of a manifest names
OPTIONAL_FILES = ("energy_file",)  # may be null: a run without per-frame energies (forces only)
ADDED_ORIGIN = "active-learning"  # a segment's "origin" when its frames were added later (always training frames)


def read_manifest(directory: str | Path) -> dict:
    """A dataset's manifest.json, checked for what reading the dataset needs: a "segments" list, each
    segment naming its data_file, dump_file and energy_file (paths relative to the dataset folder)."""
    directory = Path(directory)
    manifest_file = directory / "manifest.json"
    if not manifest_file.is_file():
        raise DataError(f"{directory}: no manifest.json; not a dataset written by `gnnmd generate`")
    try:
        manifest = json.loads(manifest_file.read_text())
    except ValueError as err:  # not UTF-8 or not JSON
        raise DataError(f"{manifest_file}: not JSON ({err})") from err
    segments = manifest.get("segments") if isinstance(manifest, dict) else None
    if not isinstance(segments, list):
        raise DataError(
            f'{manifest_file}: no "segments" list (one entry per LAMMPS run, with its {", ".join(SEGMENT_FILES)})'
        )
    if not segments:
        raise DataError(f'{manifest_file}: the "segments" list is empty')
    for k, segment in enumerate(segments):
        for key in SEGMENT_FILES:
            if isinstance(segment, dict) and key in OPTIONAL_FILES and segment.get(key) is None:
                continue
            if not isinstance(segment, dict) or not isinstance(segment.get(key), str) or not segment[key]:
                raise DataError(f"{manifest_file}: segment {k} has no {key} (a file name)")
    return manifest


def read_run(directory: str | Path, progress: bool = True) -> Frames:
    """All segments of a dataset written by `gnnmd generate` (as listed in its manifest.json)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    parts: list[Frames] = []
    for k, segment in enumerate(manifest["segments"]):
        data_file = directory / segment["data_file"]
        topology = read_topology(data_file)
        if parts and not topology.same_as(parts[0].topology):
            raise DataError(f"{data_file}: topology differs from {directory / manifest['segments'][0]['data_file']}")
        parts.append(
            read_lammps(
                data_file,
                directory / segment["dump_file"],
                None if segment.get("energy_file") is None else directory / segment["energy_file"],
                segment=k if segment.get("origin") != ADDED_ORIGIN else ADDED_SEGMENTS + k,
                topology=topology,
                progress=progress,
            )
        )
    return concatenate(parts)
