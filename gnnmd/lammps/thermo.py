"""An MD run's outputs after the fact: cutting them at a failure, the statistics of its thermo table
(energy drift, mean temperature), and whether its temperature or energy ran away.

thermo.txt's columns (as gnnmd.lammps.md_commands writes it): step, temperature, potential energy, time (fs),
kinetic and total energy, and volume (A^3; tables written before it lack the column).

A run away is not a crash: the model's MD goes on, hotter and hotter, or its total energy climbs, while
LAMMPS with the true force field would hold steady. `find_runaway` flags it from the thermo table: the
temperature, averaged over 100 fs, leaves its reference (the NVT target, or the first 100 fs of NVE) by
more than 15%, or (NVE, a model with an energy) the total energy, averaged alike, moves more than 0.02
kcal/mol per atom from the start. The step it began is where that quantity last stood within half the
tolerance before crossing it."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

RUNAWAY_WINDOW_FS = 100.0  # averaging window of the runaway checks
RUNAWAY_TEMPERATURE = 0.15  # relative change of the windowed temperature
RUNAWAY_ENERGY = 0.02  # kcal/mol per atom, change of the windowed total energy (NVE)


def _cut_at_step(path: Path, failed_at: int, dump: bool) -> None:
    """Cut a dump (dump=True) or thermo table at its first frame or row of step `failed_at` or later."""
    if not path.is_file():
        return
    with open(path, "r+b") as file:
        offset, previous = 0, b""  # where `line` starts; the line before it
        for line in iter(file.readline, b""):
            if dump:  # a frame: "ITEM: TIMESTEP", its step, the rest
                step_line, start = previous.strip() == b"ITEM: TIMESTEP", offset - len(previous)
            else:  # a row: its step first; comments start with '#'
                step_line, start = bool(line.strip()) and not line.startswith(b"#"), offset
            if step_line and int(line.split()[0]) >= failed_at:
                file.truncate(start)
                return
            offset, previous = offset + len(line), line


def end_outputs_before(out: Path, failed_at: int | None) -> None:
    """After a failure at step `failed_at`, the dump and thermo.txt end before it: what LAMMPS wrote
    from there on (on zero forces) is not the run's."""
    if failed_at is not None:
        _cut_at_step(out / "trajectory.lammpstrj", failed_at, dump=True)
        _cut_at_step(out / "thermo.txt", failed_at, dump=False)


def read_thermo(thermo_file, failed_at: int | None = None) -> np.ndarray:
    """The rows (R, 7) of a thermo.txt, without those from step `failed_at` on (they ran on zero forces)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no rows: a failure at step 0
        thermo = np.loadtxt(thermo_file, comments="#", ndmin=2)
    if thermo.size == 0:
        thermo = np.empty((0, 7))
    if failed_at is not None:
        thermo = thermo[thermo[:, 0] < failed_at]
    return thermo


def _windowed(values: np.ndarray, time_fs: np.ndarray) -> tuple[np.ndarray, int]:
    """Running mean over the last RUNAWAY_WINDOW_FS of each row (the first rows: over what there is), and
    the window in rows."""
    spacing = float(np.median(np.diff(time_fs))) if len(time_fs) > 1 else RUNAWAY_WINDOW_FS
    width = max(1, int(round(RUNAWAY_WINDOW_FS / max(spacing, 1e-9))))
    sums = np.concatenate([[0.0], np.cumsum(values)])
    index = np.arange(1, len(values) + 1)
    first = np.maximum(index - width, 0)
    return (sums[index] - sums[first]) / (index - first), width


def _first_crossing(windowed: np.ndarray, reference: float, tolerance: float, skip: int) -> tuple[int, int] | None:
    """(row where |windowed - reference| first exceeds tolerance, row where it last was within half of it)."""
    off = np.abs(windowed - reference)
    crossing = np.flatnonzero(off[skip:] > tolerance)
    if not len(crossing):
        return None
    at = int(crossing[0]) + skip
    calm = np.flatnonzero(off[:at] <= tolerance / 2)
    return at, int(calm[-1]) if len(calm) else 0


def find_runaway(
    thermo: np.ndarray, n_atoms: int, ensemble: str, temperature: float | None, energy: bool
) -> dict | None:
    """The first runaway of a run's thermo rows (read_thermo), or None: {"quantity": "temperature" or
    "energy", "began_at_step", "detected_at_step", "reference", "value", "message"}."""
    if len(thermo) < 3:
        return None
    step, temp, _, time_fs, _, etotal = thermo.T[:6]
    found = []
    t_window, width = _windowed(temp, time_fs)
    reference = temperature if ensemble == "nvt" and temperature else float(t_window[min(width, len(temp)) - 1])
    hit = _first_crossing(t_window, reference, RUNAWAY_TEMPERATURE * reference, width)
    if hit is not None:
        found.append(("temperature", hit, reference, t_window[hit[0]], "K"))
    if energy and ensemble == "nve":
        e_window, _ = _windowed(etotal / n_atoms, time_fs)
        hit = _first_crossing(e_window, float(etotal[0] / n_atoms), RUNAWAY_ENERGY, 0)
        if hit is not None:
            found.append(("energy", hit, float(etotal[0] / n_atoms), e_window[hit[0]], "kcal/mol/atom"))
    if not found:
        return None
    quantity, (at, began), reference, value, unit = min(found, key=lambda row: row[1][0])
    began_step, at_step = int(step[began]), int(step[at])
    return {
        "quantity": quantity,
        "began_at_step": began_step,
        "detected_at_step": at_step,
        "reference": float(reference),
        "value": float(value),
        "message": (
            f"the {quantity} ran away: its {RUNAWAY_WINDOW_FS:g} fs mean went from {reference:.6g} to {value:.6g} "
            f"{unit} ({value - reference:+.3g}) by step {at_step}, leaving its start from step {began_step}; "
            "under a learned model this means it is outside what it learned (the trajectory is the model's, not "
            "the true force field's); under a LAMMPS force field, the force field or the setup is at fault"
        ),
    }


def thermo_statistics(
    thermo_file, n_atoms: int, failed_at: int | None = None, energy: bool = True,
    ensemble: str = "nve", temperature: float | None = None,
) -> dict:  # fmt: skip
    """The statistics of a run's thermo.txt: the total energy's drift per atom per ps (a straight-line fit)
    and its largest change per atom from the start, the mean temperature, whether the run blew up (a
    failure at step `failed_at`: the rows from there on are left out; or non-finite numbers) and whether
    it ran away (find_runaway). No drift for a blown-up run or under three rows, and no energy numbers if
    the forces came with no `energy`."""
    thermo = read_thermo(thermo_file, failed_at)
    _, temp, _, time_fs, _, etotal = thermo.T[:6]
    volume = thermo[:, 6] if thermo.shape[1] > 6 else np.empty(0)
    blown_up = failed_at is not None or not np.all(np.isfinite(thermo))
    drift = float(np.polyfit(time_fs / 1000.0, etotal / n_atoms, 1)[0]) if len(thermo) > 2 and not blown_up else None
    finite = thermo[np.all(np.isfinite(thermo), axis=1)]
    return {
        "energy_drift_per_atom_per_ps": drift if energy else None,
        "max_abs_energy_change_per_atom": (
            float(np.abs(etotal - etotal[0]).max() / n_atoms) if energy and len(etotal) else None
        ),
        "mean_temperature": float(temp.mean()) if len(temp) else None,
        "mean_volume": float(volume.mean()) if len(volume) else None,
        "blown_up": blown_up,
        "runaway": find_runaway(finite, n_atoms, ensemble, temperature, energy),
    }
