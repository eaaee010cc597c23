"""Radial distribution functions of a trajectory against a reference (MDAnalysis InterRDF): the structure
check for MD driven by a learned force field."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np

from gnnmd.analysis.plotting import pyplot


def _universe(data_file: Path, dump: Path):
    import MDAnalysis as mda

    for path in (data_file, dump):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: file not found")
    try:
        return mda.Universe(
            str(data_file), str(dump), topology_format="DATA", format="LAMMPSDUMP",
            lammps_coordinate_convention="unscaled", dt=1.0,
        )  # fmt: skip
    except Exception as err:
        raise ValueError(f"{dump}: cannot be read against {data_file} ({err})") from err


def bond_lengths(data_file, dump, skip: int = 0) -> np.ndarray:
    """Every bond length of the data file's topology in each dump frame after `skip` (minimum image): the
    bond-length distribution a CG model is compared with its mapped atomistic one by."""
    from MDAnalysis.lib.distances import calc_bonds

    u = _universe(Path(data_file), Path(dump))
    if not len(u.bonds):
        return np.zeros(0)
    i, j = u.bonds.indices[:, 0], u.bonds.indices[:, 1]
    return np.concatenate(
        [calc_bonds(u.atoms.positions[i], u.atoms.positions[j], box=ts.dimensions) for ts in u.trajectory[skip:]]
    )


def frames_before_failure(dump, allow_blown_up: bool = False) -> tuple[int | None, str | None]:
    """For a dump beside the summary.json of a run that blew up (`gnnmd md`): refuse it (ValueError), or
    with `allow_blown_up` the number of its frames before the failure (compute_rdfs' `stop`) and a note
    saying so. (None, None) for any other dump."""
    summary_file = Path(dump).parent / "summary.json"
    try:
        summary = json.loads(summary_file.read_text())
    except (OSError, ValueError):  # none, or not a run's summary
        return None, None
    if not isinstance(summary, dict) or not summary.get("blown_up"):
        return None, None
    failed_at = summary.get("failed_at_step")
    when = "with non-finite numbers" if failed_at is None else f"at step {failed_at}"
    failure = f" ({summary['failure']})" if summary.get("failure") else ""
    what = f"{dump}: its run blew up {when}{failure}, says {summary_file}"
    if not allow_blown_up:
        raise ValueError(f"{what}; pass --allow-blown-up to use the frames before the failure")
    frames = _frames_before(Path(dump), failed_at)
    if frames == 0:
        raise ValueError(f"{what}; it has no frames before the failure")
    return frames, f"{what}; using its {frames} frames before the failure"


def _frames_before(dump: Path, step: int | None) -> int:
    """How many frames of a LAMMPS dump come before timestep `step` (None: all of them)."""
    count, previous = 0, ""
    with open(dump) as file:
        for line in file:
            if previous.startswith("ITEM: TIMESTEP"):
                if step is not None and int(line) >= step:
                    break
                count += 1
            previous = line
    return count


def element_groups(universe, data_file: Path) -> dict[str, object]:
    """Atom groups by element name (O, H, Ar, ...), names taken from the data file's type table."""
    from gnnmd.data.reader import read_topology

    topology = read_topology(data_file)
    names = topology.table_names[topology.types]
    return {str(name): universe.atoms[names == name] for name in dict.fromkeys(topology.table_names)}


def rdf_pairs(names: list[str]) -> list[tuple[str, str]]:
    """Element pairs in type-table order: O-O, O-H, H-H for SPC/Fw water."""
    return list(itertools.combinations_with_replacement(names, 2))


def default_r_max(data_file, dump) -> float:
    """Just under half the first frame's smallest box length, at most 10 A."""
    return min(10.0, 0.49 * min(_universe(Path(data_file), Path(dump)).dimensions[:3]))


def compute_rdfs(
    data_file, dump, r_max: float | None = None, bins: int = 150, skip: int = 0, stop: int | None = None
) -> dict:
    """g(r) per element pair, intermolecular (pairs within one molecule are left out), over frames
    `skip` to `stop` (default: the last). r_max (default: just under half the first frame's smallest box length, at most
    10 A) must stay below half the smallest box length."""
    from MDAnalysis.analysis.rdf import InterRDF

    universe = _universe(Path(data_file), Path(dump))
    half_box = 0.5 * min(universe.dimensions[:3])
    if r_max is None:
        r_max = min(10.0, 0.98 * half_box)  # as default_r_max
    if r_max >= half_box:
        raise ValueError(f"{dump}: r_max {r_max} A must be below half the smallest box length ({half_box:.2f} A)")
    groups = element_groups(universe, Path(data_file))
    n_molecules = len(np.unique(universe.atoms.resids))
    result = {}
    for a, b in rdf_pairs(list(groups)):
        first, second = groups[a], groups[b]
        # atoms are ordered by molecule, with the same count of each element per molecule: a block
        # exclusion removes the intramolecular pairs (and self pairs)
        block = (len(first) // n_molecules, len(second) // n_molecules)
        analysis = InterRDF(first, second, nbins=bins, range=(0.0, r_max), exclusion_block=block)
        analysis.run(start=skip, stop=stop)
        result[f"{a}-{b}"] = (np.asarray(analysis.results.bins), np.asarray(analysis.results.rdf))
    return result


def peak(r: np.ndarray, g: np.ndarray) -> tuple[float, float]:
    """Position and height of the main (highest) peak (the first shell for O-O and Ar-Ar): the vertex of
    the parabola through the highest bin and its two neighbours, so the position is not quantised to the
    bin width (~0.05 A, as wide as the tolerance one compares peaks with)."""
    k = int(np.argmax(g))
    if not 0 < k < len(g) - 1:
        return float(r[k]), float(g[k])
    left, centre, right = float(g[k - 1]), float(g[k]), float(g[k + 1])
    curvature = left - 2.0 * centre + right
    if curvature >= 0:  # flat top: no vertex
        return float(r[k]), centre
    offset = 0.5 * (left - right) / curvature  # in bins, within [-0.5, 0.5]
    return float(r[k] + offset * (r[k + 1] - r[k])), centre - 0.25 * (left - right) * offset


def compare_rdfs(reference: dict, trajectory: dict) -> dict:
    """Per pair: peak position and height of both, and the integrated absolute difference."""
    report = {}
    for pair, (r, g_ref) in reference.items():
        _, g = trajectory[pair]
        peak_r_ref, peak_g_ref = peak(r, g_ref)
        peak_r, peak_g = peak(r, g)
        report[pair] = {
            "peak_r": peak_r, "peak_r_ref": peak_r_ref, "peak_g": peak_g, "peak_g_ref": peak_g_ref,
            "integrated_abs_diff": float(np.trapezoid(np.abs(g - g_ref), r)),
        }  # fmt: skip
    return report


def plot_rdfs(reference: dict, trajectory: dict, path: Path, labels=("reference", "model")) -> None:
    plt = pyplot()

    pairs = list(reference)
    fig, axes = plt.subplots(1, len(pairs), figsize=(4 * len(pairs), 3.2), squeeze=False)
    for ax, pair in zip(axes[0], pairs):
        r, g_ref = reference[pair]
        ax.plot(r, g_ref, "k-", label=labels[0])
        ax.plot(*trajectory[pair], "C1--", label=labels[1])
        ax.set_title(pair)
        ax.set_xlabel("r (Å)")
        ax.set_ylabel("g(r)")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
