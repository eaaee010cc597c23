"""The model as LAMMPS' force provider: `fix external pf/callback` calls a callback at every step with
the atoms LAMMPS holds, and the callback hands back the model's forces (and energy and virial). On one
rank (ModelCallback) or on each of several MPI ranks (DomainCallback)."""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from gnnmd.inference.committee import CommitteeForces
from gnnmd.inference.domain import DomainForces
from gnnmd.inference.forces import ModelForces
from gnnmd.inference.lj_tail import LennardJonesTail
from gnnmd.lammps.md_commands import FAILED
from gnnmd.lammps.ranks import RankSum
from gnnmd.units import VOIGT_COLUMNS, VOIGT_ROWS


def box_matrix(lmp) -> np.ndarray:
    boxlo, boxhi, xy, yz, xz, _, _ = lmp.extract_box()
    lx, ly, lz = np.subtract(boxhi, boxlo)
    return np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])


class ModelCallback:
    """`fix external`'s callback: the model's forces (and energy) for the atoms LAMMPS holds.

    LAMMPS cannot take a Python exception: the first failure is kept (`failed_at`, `error`) and flagged
    to fix halt, which stops LAMMPS at the end of that step (of step 1 for a failure in the setup);
    until then the forces are zero and the model is skipped."""

    def __init__(self, lmp, forces_of: ModelForces | CommitteeForces, n_atoms: int, bar: tqdm):
        self.lmp, self.forces_of, self.n_atoms, self.bar = lmp, forces_of, n_atoms, bar
        self.tail: LennardJonesTail | None = None  # the Lennard-Jones beyond the model's cutoff (mean field)
        self.failed_at: int | None = None
        self.error: BaseException | None = None
        self.has_energy = False
        self.deviations: list[tuple[int, float, float]] = []  # a committee's (step, max, mean) force deviation

    def __call__(self, _caller, step, nlocal, tags, x, f):
        if self.error is not None:  # LAMMPS runs on to the end of `run`: the run is already lost
            f[:nlocal] = 0.0
            return
        try:
            order = np.asarray(tags, dtype=np.int64) - 1
            positions = np.empty((self.n_atoms, 3))
            positions[order] = x[:nlocal]
            cell = box_matrix(self.lmp)
            forces, energy = self.forces_of(positions, cell)
            if not np.all(np.isfinite(forces)) or (energy is not None and not np.isfinite(energy)):
                raise FloatingPointError("the model's forces or energy are not finite")
            f[:nlocal] = forces[order]
            deviation = getattr(self.forces_of, "last_deviation", None)
            if deviation is not None:
                self.deviations.append((int(step), float(deviation.max()), float(deviation.mean())))
            virial = self.forces_of.last_virial if getattr(self.forces_of, "virial", False) else None
            self._hand_over(energy, virial, cell)
            self.bar.n = min(int(step), self.bar.total)
            self.bar.refresh()
        except Exception as err:
            self.failed_at, self.error = int(step), err
            f[:nlocal] = 0.0
            self.lmp.set_internal_variable(FAILED, 1.0)

    def _hand_over(self, energy: float | None, virial: np.ndarray | None, cell: np.ndarray) -> None:
        """The model's energy (kcal/mol) and virial (3x3; None: none) of the whole system, plus the
        Lennard-Jones tail's if set, to LAMMPS: its potential energy and pressure (and NPT) take them."""
        volume = abs(float(np.linalg.det(cell)))
        if virial is not None:
            v = virial + (self.tail.virial(volume) if self.tail is not None else 0.0)
            self.lmp.fix_external_set_virial_global("model", v[VOIGT_ROWS, VOIGT_COLUMNS].tolist())
        if energy is not None:
            self.has_energy = True
            self.lmp.fix_external_set_energy_global("model", energy + (self.tail.energy(volume) if self.tail else 0.0))

    @property
    def failure(self) -> str | None:
        return None if self.error is None else f"{type(self.error).__name__}: {self.error}"

    def first_failure(self, lammps_failure: tuple[int, str] | None) -> tuple[int | None, str | None]:
        """The step and reason of the run's failure: the model's, which comes first if there is one
        (LAMMPS' own error could only come after it), or LAMMPS' (from md_commands.timed_run); Nones for none."""
        if self.error is not None:
            return self.failed_at, self.failure
        return lammps_failure or (None, None)


class DomainCallback(ModelCallback):
    """The callback on each of several MPI ranks (gnnmd.lammps.ranks): the model's share of this rank's
    atoms (DomainForces) from LAMMPS' local and ghost atoms, then one sum over the ranks of the forces by
    atom id, the energy, the virial and the failure flags, which every rank joins at every step (a rank
    that failed too), so all of them stop together at the first failure."""

    def __init__(self, lmp, forces_of: DomainForces, n_atoms: int, bar: tqdm, comm):
        super().__init__(lmp, forces_of, n_atoms, bar)
        self.sum = RankSum(comm, n_atoms)
        self.wall_steps = 0  # steps in which a wall acted on any rank
        # the directions LAMMPS does not divide (one rank across): each rank holds the whole box there
        self.whole_box = tuple(int(n) == 1 for n in lmp.extract_global("procgrid"))

    def __call__(self, _caller, step, nlocal, tags, x, f):
        forces, ids, numbers = None, None, np.zeros(12)  # energy, virial (9), wall acted, failed
        cell = box_matrix(self.lmp)
        if self.error is None:
            try:
                every = nlocal + int(self.lmp.extract_setting("nghost"))
                ids = np.asarray(self.lmp.numpy.extract_atom("id", nelem=every), dtype=np.int64) - 1
                periodic = self.whole_box if not (cell - np.diag(np.diag(cell))).any() else (False, False, False)
                positions = self.lmp.numpy.extract_atom("x", nelem=every)
                forces, energy = self.forces_of(positions, ids, nlocal, cell, periodic)
                numbers[:11] = [energy, *self.forces_of.last_virial.ravel(), self.forces_of.wall_active]
            except Exception as err:
                forces, self.failed_at, self.error = None, int(step), err
        numbers[11] = self.error is not None
        total, numbers = self.sum(ids, forces, numbers)
        if numbers[11] == 0 and not (np.all(np.isfinite(total)) and np.all(np.isfinite(numbers))):
            self.failed_at, self.error, numbers[11] = int(step), FloatingPointError("the model's forces or energy are not finite"), 1  # fmt: skip
        if numbers[11] > 0:
            if self.error is None:
                self.failed_at, self.error = int(step), RuntimeError("the model failed on another MPI rank")
            f[:nlocal] = 0.0
            self.lmp.set_internal_variable(FAILED, 1.0)
            return
        f[:nlocal] = total[np.asarray(tags[:nlocal], dtype=np.int64) - 1]
        self._hand_over(float(numbers[0]), numbers[1:10].reshape(3, 3), cell)
        self.wall_steps += int(numbers[10] > 0)
        self.bar.n = min(int(step), self.bar.total)
        self.bar.refresh()
