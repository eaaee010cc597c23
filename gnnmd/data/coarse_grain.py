"""Coarse-graining a dataset: a mapping of each molecule's atoms onto sites turns atomistic frames into
CG frames (site positions and mapped forces) and a CG topology, written as a gnnmd dataset folder.

The mapping file (YAML) lists molecule types, each known by its atom-type sequence (LAMMPS type ids or
the type table's names, in atom order), and its sites: the atoms of each (0-based within the molecule)
and where the site sits, `com` (the atoms' centre of mass) or `atom` (on the first listed atom).

    molecules:
      - name: water
        types: [1, 2, 2]
        sites:
          - {name: W, atoms: [0, 1, 2], placement: com}

Every atom belongs to exactly one site (a non-overlapping mapping). The force on a site is the sum of
the forces on its atoms: for COM sites that is the force map consistent with the position map (Noid et
al., J. Chem. Phys. 128, 244114, 2008), so force matching estimates the many-body potential of mean
force; for `atom` placement of a many-atom site it is the usual united-atom choice."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gnnmd import __version__
from gnnmd.data.dataset_folder import dataset_target, write_dataset
from gnnmd.data.frames import ADDED_SEGMENTS, Frames, make_whole
from gnnmd.data.importing import _finish, write_segment
from gnnmd.data.reader import DataError, read_manifest, read_run, read_topology
from gnnmd.data.topology import Topology

PLACEMENTS = ("com", "atom")


@dataclass(frozen=True)
class Site:
    name: str
    atoms: tuple[int, ...]
    placement: str


@dataclass(frozen=True)
class MoleculeMap:
    name: str
    types: tuple  # LAMMPS type ids (int) or type names (str), in atom order
    sites: tuple[Site, ...]


def _site(raw, where: str, n_atoms: int) -> Site:
    if not isinstance(raw, dict) or not isinstance(raw.get("atoms"), list) or "name" not in raw:
        raise DataError(f"{where}: a site needs a name and an atoms list, got {raw!r}")
    atoms, placement = raw["atoms"], raw.get("placement", "com")
    if not atoms:
        raise DataError(f"{where}: site {raw['name']!r} is empty")
    if placement not in PLACEMENTS:
        raise DataError(f"{where}: site {raw['name']!r} placement must be com or atom, got {placement!r}")
    bad = [a for a in atoms if not isinstance(a, int) or not 0 <= a < n_atoms]
    if bad:
        raise DataError(f"{where}: site {raw['name']!r} atom index {bad[0]!r} out of range 0..{n_atoms - 1}")
    return Site(str(raw["name"]), tuple(atoms), placement)


def _molecule(raw, where: str) -> MoleculeMap:
    if not isinstance(raw, dict) or not isinstance(raw.get("types"), list) or not isinstance(raw.get("sites"), list):
        raise DataError(f"{where}: a molecule needs a types list and a sites list, got {raw!r}")
    types = tuple(raw["types"])
    where = f"{where} ({raw.get('name', 'unnamed')})"
    sites = tuple(_site(s, where, len(types)) for s in raw["sites"])
    counts = np.bincount([a for s in sites for a in s.atoms], minlength=len(types))
    if np.any(counts > 1):
        raise DataError(f"{where}: atom {int(np.argmax(counts > 1))} is in two sites (sites must not overlap)")
    if np.any(counts == 0):
        raise DataError(f"{where}: atom {int(np.argmin(counts))} is in no site (every atom needs one)")
    return MoleculeMap(str(raw.get("name", f"molecule{len(types)}")), types, sites)


def read_mapping(path) -> list[MoleculeMap]:
    """The molecule maps of a mapping YAML file (see the module's doc); a ValueError names what is wrong."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise DataError(f"{path}: cannot read the mapping ({type(err).__name__}: {str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("molecules"), list) or not raw["molecules"]:
        raise DataError(f"{path}: a mapping needs a non-empty 'molecules' list")
    return [_molecule(m, f"{path}: molecule {k}") for k, m in enumerate(raw["molecules"])]


@dataclass
class CGMap:
    """A mapping applied to one system: per site its atoms (global indices), placement atom weights, and
    the CG topology."""

    position_weights: object  # scipy sparse (S, N): COM mass fractions or 1 on the placement atom
    force_weights: object  # scipy sparse (S, N): 1 for each atom of the site
    topology: Topology
    site_names: list[str]  # per CG type


def _matches(entry: MoleculeMap, ids: np.ndarray, names: np.ndarray) -> bool:
    if len(entry.types) != len(ids):
        return False
    return all(t == (int(i) if not isinstance(t, str) else str(n)) for t, i, n in zip(entry.types, ids, names))


def _assign(topology: Topology, mapping: list[MoleculeMap], where: str):
    """(atoms of each site (global), site name, placement) over all molecules in atom order."""
    ids = np.asarray(topology.table_type_ids)[topology.types]
    names = np.asarray(topology.table_names)[topology.types]
    sites = []
    for molecule in np.unique(topology.molecules):
        atoms = np.flatnonzero(topology.molecules == molecule)
        entry = next((m for m in mapping if _matches(m, ids[atoms], names[atoms])), None)
        if entry is None:
            raise DataError(
                f"{where}: molecule {int(molecule)} ({len(atoms)} atoms, types {ids[atoms].tolist()}) "
                "matches no molecule of the mapping"
            )
        sites += [(atoms[list(s.atoms)], s.name, s.placement) for s in entry.sites]
    return sites


def build_map(topology: Topology, mapping: list[MoleculeMap], where: str = "mapping") -> CGMap:
    """The mapping applied to `topology`: weights and the CG topology (site type per distinct site name,
    mass and charge the sums over its atoms, bonds between sites whose atoms are bonded, angles from
    consecutive bonds)."""
    from scipy import sparse

    sites = _assign(topology, mapping, where)
    masses = np.asarray(topology.table_masses)[topology.types]
    rows, cols, pos_w = [], [], []
    for k, (atoms, _, placement) in enumerate(sites):
        weights = masses[atoms] / masses[atoms].sum() if placement == "com" else np.eye(len(atoms))[0]
        rows += [k] * len(atoms)
        cols += atoms.tolist()
        pos_w += weights.tolist()
    shape = (len(sites), topology.n_atoms)
    position_weights = sparse.csr_matrix((pos_w, (rows, cols)), shape=shape)
    force_weights = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)
    site_of_atom = np.empty(topology.n_atoms, dtype=np.int64)
    site_of_atom[cols] = rows
    cg, names = _cg_topology(topology, sites, site_of_atom, where)
    return CGMap(position_weights, force_weights, cg, names)


def _site_types(topology: Topology, sites, where: str):
    """Per site its type row, and per type its name, mass and charge (one type per site name)."""
    masses = np.asarray(topology.table_masses)[topology.types]
    names, rows, table = [], [], {}
    for atoms, name, _ in sites:
        mass, charge = float(masses[atoms].sum()), float(np.round(topology.charges[atoms].sum(), 6))
        if name not in table:
            table[name] = (len(names), mass, charge)
            names.append(name)
        elif abs(table[name][1] - mass) > 1e-6 or abs(table[name][2] - charge) > 1e-6:
            raise DataError(f"{where}: sites named {name!r} differ in mass or charge; give them different names")
        rows.append(table[name][0])
    return np.array(rows, dtype=np.int64), names, table


def _cg_bonds(topology: Topology, site_of_atom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    bonds = site_of_atom[np.asarray(topology.bonds, dtype=np.int64).reshape(-1, 2)]
    bonds = np.unique(np.sort(bonds[bonds[:, 0] != bonds[:, 1]], axis=1), axis=0).reshape(-1, 2)
    angles = set()
    for j in range(int(site_of_atom.max()) + 1 if len(site_of_atom) else 0):
        partners = np.concatenate([bonds[bonds[:, 0] == j, 1], bonds[bonds[:, 1] == j, 0]])
        for a in range(len(partners)):
            for b in range(a + 1, len(partners)):
                i, k = sorted((int(partners[a]), int(partners[b])))
                angles.add((i, j, k))
    return bonds, np.array(sorted(angles), dtype=np.int64).reshape(-1, 3)


def _cg_topology(topology: Topology, sites, site_of_atom: np.ndarray, where: str):
    types, names, table = _site_types(topology, sites, where)
    bonds, angles = _cg_bonds(topology, site_of_atom)
    first_atom = np.array([atoms[0] for atoms, _, _ in sites], dtype=np.int64)
    n_types = len(names)
    cg = Topology(
        types=types,
        charges=np.array([table[names[t]][2] for t in types], dtype=np.float64),
        epsilon=np.zeros(len(types)),
        sigma=np.zeros(len(types)),
        molecules=np.asarray(topology.molecules)[first_atom],
        bonds=bonds,
        angles=angles,
        table_type_ids=np.arange(1, n_types + 1, dtype=np.int64),
        table_names=np.array(names),
        table_masses=np.array([table[n][1] for n in names]),
        table_charges=np.array([table[n][2] for n in names]),
        table_epsilon=np.zeros(n_types),
        table_sigma=np.zeros(n_types),
    )
    return cg, names


def map_frames(frames: Frames, cg_map: CGMap) -> Frames:
    """CG frames: site positions (molecules made whole first, then wrapped into the cell), summed forces,
    and the cells, energies, timesteps and segments of the atomistic frames."""
    positions = np.empty((len(frames), cg_map.topology.n_atoms, 3), dtype=np.float32)
    for k in range(len(frames)):
        cell = frames.cells[k].astype(np.float64)
        whole = make_whole(frames.topology, frames.positions[k], cell)
        sites = cg_map.position_weights @ whole
        fractional = sites @ np.linalg.inv(cell)
        positions[k] = (fractional - np.floor(fractional)) @ cell
    forces = np.stack([cg_map.force_weights @ f.astype(np.float64) for f in frames.forces]).astype(np.float32)
    return Frames(cg_map.topology, positions, forces, frames.cells.copy(),
                  None if frames.energies is None else frames.energies.copy(), frames.timesteps.copy(),
                  frames.segments.copy())  # fmt: skip


def write_cg_data(topology: Topology, positions: np.ndarray, cell: np.ndarray, path, pair_coeffs: bool = True) -> None:
    """A LAMMPS data file (atom_style full, real units) of the CG system. Its Pair Coeffs (epsilon 0,
    sigma 0: gnnmd's readers need the section) are left out with `pair_coeffs=False`, for a run whose
    pair style takes other coefficients (a table)."""
    (lx, _, _), (xy, ly, _), (xz, yz, lz) = np.asarray(cell, dtype=np.float64)
    n_types = len(topology.table_type_ids)
    bond_types, angle_types = bonded_types(topology)
    lines = ["LAMMPS data file written by gnnmd coarse-grain (units = real)", "",
             f"{topology.n_atoms} atoms", f"{n_types} atom types", f"{len(topology.bonds)} bonds",
             f"{len(bond_types[1])} bond types", f"{len(topology.angles)} angles",
             f"{len(angle_types[1])} angle types", "",
             f"0 {lx:.10g} xlo xhi", f"0 {ly:.10g} ylo yhi", f"0 {lz:.10g} zlo zhi"]  # fmt: skip
    if max(abs(xy), abs(xz), abs(yz)) > 0:
        lines.append(f"{xy:.10g} {xz:.10g} {yz:.10g} xy xz yz")
    lines += ["", "Masses", ""] + [f"{t} {m:.10g} # {n}" for t, m, n in
                                   zip(topology.table_type_ids, topology.table_masses, topology.table_names)]  # fmt: skip
    if pair_coeffs:
        lines += ["", "Pair Coeffs # zero", ""] + [f"{t} 0.0 0.0" for t in topology.table_type_ids]
    lines += ["", "Atoms # full", ""]
    for k in range(topology.n_atoms):
        x, y, z = positions[k]
        lines.append(f"{k + 1} {int(topology.molecules[k])} {int(topology.table_type_ids[topology.types[k]])} "
                     f"{topology.charges[k]:.6g} {x:.10g} {y:.10g} {z:.10g}")  # fmt: skip
    for title, items, kinds in (("Bonds", topology.bonds, bond_types[0]), ("Angles", topology.angles, angle_types[0])):
        if len(items):
            lines += ["", title, ""] + [f"{k + 1} {kinds[k] + 1} " + " ".join(str(int(a) + 1) for a in item)
                                        for k, item in enumerate(items)]  # fmt: skip
    Path(path).write_text("\n".join(lines) + "\n")


def bonded_types(topology: Topology):
    """((per-bond type row, list of (type, type) keys), (per-angle row, list of (type, type, type) keys)):
    a bond type per pair of site types, an angle type per triple (ends in ascending order)."""
    out = []
    for items in (np.asarray(topology.bonds).reshape(-1, 2), np.asarray(topology.angles).reshape(-1, 3)):
        keys = [tuple(int(t) for t in topology.types[item]) for item in items]
        keys = [k if k[0] <= k[-1] else k[::-1] for k in keys]
        unique = sorted(set(keys))
        out.append((np.array([unique.index(k) for k in keys], dtype=np.int64), unique))
    return out[0], out[1]


def coarse_grain(data_dir, mapping_file, out, overwrite: bool = False) -> dict:
    """`gnnmd coarse-grain`: the CG dataset of `data_dir` under the mapping in `mapping_file`, written to
    `out` as generate and import write theirs (one segment per source segment); returns its manifest."""
    data_dir, mapping_file = Path(data_dir), Path(mapping_file)
    manifest = read_manifest(data_dir)
    mapping = read_mapping(mapping_file)
    first = data_dir / manifest["segments"][0]["data_file"]
    cg_map = build_map(read_topology(first), mapping, str(mapping_file))
    frames = map_frames(read_run(data_dir, progress=False), cg_map)
    out = dataset_target(out, overwrite)

    def fill(work: Path) -> dict:
        segments = []
        with tempfile.TemporaryDirectory(dir=work.parent, prefix=f".{work.name}.") as scratch:
            data_file = Path(scratch) / "system.data"
            write_cg_data(cg_map.topology, frames.positions[0], frames.cells[0], data_file)
            for number in dict.fromkeys(frames.segments.tolist()):
                part = frames.subset(np.flatnonzero(frames.segments == number))
                k = number % ADDED_SEGMENTS
                segment = write_segment(part, data_file, work / f"segment_{k:03d}")
                origin = manifest["segments"][k].get("origin")
                segments.append({**segment, **({"origin": origin} if origin else {})})
        return _finish(work, _manifest(data_dir, manifest, mapping_file, mapping, cg_map, frames, segments))

    return write_dataset(out, fill)


def _manifest(data_dir, source, mapping_file, mapping, cg_map: CGMap, frames: Frames, segments) -> dict:
    return {
        "force_field": None,  # the CG force field is what `gnnmd coarse-grain fit` makes
        "source": "coarse-grain",
        "gnnmd_version": __version__,
        "system": f"{source.get('system', 'system')}-cg",
        "coarse_grained_from": {
            "dataset": os.path.abspath(data_dir),
            "system": source.get("system"),
            "force_field": source.get("force_field"),
        },  # fmt: skip
        "mapping": {
            "file": os.path.abspath(mapping_file),
            "molecules": [
                {
                    "name": m.name,
                    "types": list(m.types),
                    "sites": [{"name": s.name, "atoms": list(s.atoms), "placement": s.placement} for s in m.sites],
                }
                for m in mapping
            ],
        },  # fmt: skip
        "force_map": "sum of the forces on each site's atoms",
        "units": "real",
        "segments": segments,
        "frame_count": len(frames),
        "atoms": int(cg_map.topology.n_atoms),
        "type_table": cg_map.topology.type_table(),
    }


def load_cg_frames(data_dir) -> Frames:
    """The frames of a CG dataset, with its site names (the manifest's type table) in the topology: the
    data file's masses alone would name a water site "type1"."""
    frames = read_run(data_dir, progress=False)
    table = read_manifest(data_dir).get("type_table")
    if isinstance(table, list) and len(table) == len(frames.topology.table_names):
        frames.topology.table_names = np.array([str(row.get("name", n)) for row, n in
                                                zip(table, frames.topology.table_names)])  # fmt: skip
    return frames
