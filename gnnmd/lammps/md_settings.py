"""The settings of an MD run that gnnmd's model run (md_model.run_md) and plain LAMMPS' reference run
(md_reference.run_lammps_md) share: one object, checked once where it is made, so that each setting has
one owner and both runs read it from there."""

from __future__ import annotations

from dataclasses import dataclass

ENSEMBLES = ("nve", "nvt", "npt")


@dataclass(frozen=True)
class MDSettings:
    """The integration and the outputs, both set by LAMMPS commands (md_commands.dynamics_commands).

    steps of `timestep` fs in `ensemble`; `temperature` (K): new velocities drawn with `seed` and the
    nvt/npt target (None keeps the data file's velocities; nve only); `tdamp`, `pdamp` (fs): the
    thermostat's and barostat's damping; `pressure` (atm): the npt target (isotropic); a dump frame
    every `dump_every` steps and a thermo.txt row every `thermo_every`."""

    steps: int
    timestep: float = 1.0
    ensemble: str = "nve"
    temperature: float | None = None
    seed: int = 1
    dump_every: int = 10
    thermo_every: int = 1
    tdamp: float = 100.0
    pressure: float = 1.0
    pdamp: float = 1000.0

    def __post_init__(self) -> None:
        if self.ensemble not in ENSEMBLES:
            raise ValueError(f"ensemble must be one of {', '.join(ENSEMBLES)}, got {self.ensemble!r}")
        if self.ensemble in ("nvt", "npt") and self.temperature is None:
            raise ValueError(f"--ensemble {self.ensemble} needs --temperature")
        if self.steps < 1 or self.timestep <= 0 or self.dump_every < 1:
            raise ValueError("steps, timestep and dump-every must be positive")
        if self.thermo_every < 1 or self.tdamp <= 0 or self.pdamp <= 0:
            raise ValueError("thermo-every, tdamp and pdamp must be positive")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"temperature must be positive (K), got {self.temperature}")
