"""The reference force field, described once: the LAMMPS commands the reference forces were computed with
(pair, bond, angle, dihedral and improper styles and coefficients, mixing, special_bonds, kspace), read
from the user's run (its log.lammps or input, or a force-field include file) or from the file a
`gnnmd generate` system was made with.

Everything else asks this object: the dataset manifest and the checkpoint store it (`to_dict`), LAMMPS
reruns of frames (labels, reference virials) replay its commands, the PME baseline and MD's Coulomb part
take its special_bonds Coulomb factors, and pair priors its mixing rule and cutoff. LAMMPS' own rules
are kept: `special_bonds` resets every factor it does not name to 0 at each use, `pair_modify mix` is
geometric unless said otherwise (arithmetic for the lj/charmm styles)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from gnnmd.data.reader import DataError

# the commands that define a force field once the box and atoms exist; `STYLES` must come before read_data
# reads the data file's coefficient sections, the rest after it
STYLES = ("pair_style", "bond_style", "angle_style", "dihedral_style", "improper_style", "special_bonds")
AFTER_DATA = (
    "pair_coeff",
    "pair_modify",
    "bond_coeff",
    "angle_coeff",
    "dihedral_coeff",
    "improper_coeff",
    "kspace_style",
    "kspace_modify",
    "dielectric",
)
COMMANDS = STYLES + AFTER_DATA
MIXING_RULES = ("geometric", "arithmetic", "sixthpower")
# special_bonds presets: (lj 1-2, 1-3, 1-4), (coul 1-2, 1-3, 1-4)
_PRESETS = {
    "amber": ((0.0, 0.0, 0.5), (0.0, 0.0, 5.0 / 6.0)),
    "charmm": ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),
    "dreiding": ((0.0, 0.0, 1.0), (0.0, 0.0, 1.0)),
    "fene": ((0.0, 1.0, 1.0), (0.0, 1.0, 1.0)),
}
_NO_STYLE = ("none", "zero", "null")


@dataclass(frozen=True)
class SpecialBonds:
    """LAMMPS' special_bonds: weights of 1-2, 1-3 and 1-4 pairs for Lennard-Jones and Coulomb, and whether
    1-3 (1-4) pairs must also be the ends of a listed angle (dihedral)."""

    lj: tuple[float, float, float] = (0.0, 0.0, 0.0)
    coul: tuple[float, float, float] = (0.0, 0.0, 0.0)
    angle: bool = False
    dihedral: bool = False

    @classmethod
    def parse(cls, words: list[str], where: str) -> SpecialBonds:
        """The settings of one `special_bonds ...` command (its words after the command name)."""
        lj, coul, flags, k = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], {"angle": False, "dihedral": False}, 0
        try:
            while k < len(words):
                word = words[k]
                if word in _PRESETS:
                    lj, coul = map(list, _PRESETS[word])
                    k += 1
                elif word in ("lj/coul", "lj", "coul"):
                    values = [float(v) for v in words[k + 1 : k + 4]]
                    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
                        raise ValueError(f"{word} needs three weights in [0, 1]")
                    lj, coul = (values if word != "coul" else lj), (values if word != "lj" else coul)
                    k += 4
                elif word in flags:
                    flags[word] = {"yes": True, "no": False}[words[k + 1]]
                    k += 2
                elif word == "one/five":
                    k += 2
                else:
                    raise ValueError(f"unknown keyword {word!r}")
        except (ValueError, IndexError, KeyError) as err:
            raise DataError(f"{where}: cannot read `special_bonds {' '.join(words)}` ({err})") from None
        return cls(tuple(lj), tuple(coul), flags["angle"], flags["dihedral"])

    def command(self) -> str:
        lj, coul = (" ".join(f"{v:.10g}" for v in w) for w in (self.lj, self.coul))
        yes = {True: "yes", False: "no"}
        return f"special_bonds lj {lj} coul {coul} angle {yes[self.angle]} dihedral {yes[self.dihedral]}"


@dataclass(frozen=True)
class ForceField:
    """A reference force field as LAMMPS commands (in input order), and where they were read from."""

    commands: tuple[str, ...]
    source: str
    units: str = "real"

    @classmethod
    def parse(cls, text: str, source: str, units: str | None = None) -> ForceField:
        """The force-field commands of a LAMMPS input, include file or log (which echoes its input);
        a later command of the same kind adds to (coefficients) or replaces (styles) an earlier one."""
        commands, found_units = [], None
        is_log = text.startswith("LAMMPS (")  # a log echoes a line with variables, then its substituted form
        for raw in text.splitlines():
            words = raw.split("#", 1)[0].split()
            if not words or (is_log and "$" in raw):
                continue
            if words[0] == "units" and len(words) == 2:
                found_units = words[1]
            elif words[0] in COMMANDS:
                if any(mark in raw for mark in ("$", "&", "'", '"')):
                    raise DataError(
                        f"{source}: `{raw.strip()}` uses LAMMPS variables, quotes or a continued line; "
                        "give the force field as plain commands (e.g. the include file)"
                    )
                commands.append(" ".join(words))
        if units is not None and found_units is not None and units != found_units:
            raise DataError(f"{source}: says units {found_units}, but the force field was asked for in {units}")
        force_field = cls(tuple(commands), str(source), units or found_units or "real")
        force_field.check()
        return force_field

    @classmethod
    def read(cls, path, units: str | None = None) -> ForceField:
        """The force field of a LAMMPS input, log or include file."""
        path = Path(path)
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise DataError(f"{path}: cannot read it as a LAMMPS input, log or include file ({err})") from None
        force_field = cls.parse(text, str(path), units)
        if not force_field.commands:
            raise DataError(f"{path}: holds no force-field command ({', '.join(STYLES[:2])}, ...)")
        return force_field

    @classmethod
    def shipped(cls, name: str) -> ForceField:
        """A force field shipped in lammps_inputs/ (e.g. spcfw.ff), as `gnnmd generate` uses it."""
        path = resources.files("gnnmd.lammps_inputs").joinpath(name)
        if not path.is_file():
            raise DataError(f"no force field {name!r} among gnnmd's lammps_inputs")
        return cls.parse(path.read_text(), f"gnnmd.lammps_inputs/{name}", "real")

    def to_dict(self) -> dict:
        return {"commands": list(self.commands), "source": self.source, "units": self.units}

    @classmethod
    def from_dict(cls, stored: dict, where: str = "force field") -> ForceField:
        if not isinstance(stored, dict) or not isinstance(stored.get("commands"), list):
            raise DataError(f"{where}: a force field needs a 'commands' list, got {stored!r}")
        force_field = cls(tuple(str(c) for c in stored["commands"]), str(stored.get("source", "?")),
                          str(stored.get("units", "real")))  # fmt: skip
        force_field.check()
        return force_field

    def check(self) -> None:
        """Read every setting once, so that a force field gnnmd cannot describe is refused where it is read."""
        if self.units != "real":
            raise DataError(f"{self.source}: force field in units {self.units}; gnnmd's reference is in real units")
        self.special_bonds, self.mixing, self.pair_cutoffs, self.kspace  # noqa: B018 (each raises if unreadable)

    def _last(self, name: str) -> list[str] | None:
        found = [c.split()[1:] for c in self.commands if c.split()[0] == name]
        return found[-1] if found else None

    @property
    def pair_style(self) -> str | None:
        words = self._last("pair_style")
        return None if not words or words[0] in _NO_STYLE else words[0]

    @property
    def pair_cutoffs(self) -> tuple[float | None, float | None]:
        """The pair style's global cutoffs (Lennard-Jones, Coulomb; Å): `lj/cut/coul/long 10` is (10, 10),
        `lj/cut/coul/long 10 12` (10, 12), `lj/cut 10` (10, None)."""
        words = self._last("pair_style") or []
        numbers = []
        for word in words[1:]:
            try:
                numbers.append(float(word))
            except ValueError:
                break
        if any(not (math.isfinite(n) and n > 0) for n in numbers):
            raise DataError(f"{self.source}: pair_style {' '.join(words)} has a cutoff that is not positive")
        style = words[0] if words else ""
        lj = numbers[0] if numbers and not style.startswith("coul") else None
        if style.startswith("lj/charmm") and len(numbers) > 1:
            lj = numbers[1]  # inner and outer switching radii: the outer one is the cutoff
        coulomb = None
        if "coul" in style and numbers:
            coulomb = numbers[-1] if style.startswith("coul") or len(numbers) > (2 if "charmm" in style else 1) else lj
        return lj, coulomb

    @property
    def mixing(self) -> str:
        """The rule for unlisted i-j Lennard-Jones pairs: `pair_modify mix`, else LAMMPS' default."""
        for command in reversed(self.commands):
            words = command.split()
            if words[0] == "pair_modify" and "mix" in words:
                rule = words[words.index("mix") + 1] if words.index("mix") + 1 < len(words) else ""
                if rule not in MIXING_RULES:
                    raise DataError(f"{self.source}: `{command}`: mixing rule must be one of {', '.join(MIXING_RULES)}")
                return rule
        return "arithmetic" if (self.pair_style or "").startswith("lj/charmm") else "geometric"

    @property
    def special_bonds(self) -> SpecialBonds:
        words = self._last("special_bonds")
        return SpecialBonds() if words is None else SpecialBonds.parse(words, self.source)

    @property
    def kspace(self) -> tuple[str, float] | None:
        """(style, accuracy) of the long-range Coulomb solver, None without one."""
        words = self._last("kspace_style")
        if not words or words[0] == "none":
            return None
        try:
            return words[0], float(words[1])
        except (IndexError, ValueError):
            raise DataError(f"{self.source}: cannot read `kspace_style {' '.join(words)}`") from None

    def lammps_commands(self, data_file: str) -> list[str]:
        """Commands that load the system in `data_file` (a LAMMPS path) under this force field: the styles,
        the data file with its own coefficient sections, then the coefficients and settings here."""
        styles = [c for c in self.commands if c.split()[0] in STYLES]
        rest = [c for c in self.commands if c.split()[0] not in STYLES]
        return [*styles, f"read_data {data_file}", *rest]


# the force-field files of the study's systems, for `gnnmd generate` datasets whose manifest predates naming it
_STUDY_FORCE_FIELDS = {"water": "spcfw.ff", "big-water": "spcfw.ff", "argon": "argon.ff", "argon-train": "argon.ff"}


def dataset_force_field(data_dir) -> ForceField | None:
    """The reference force field of a dataset folder, from its manifest: its `force_field` (datasets from
    today on), the generate protocol's force-field file (older `gnnmd generate` datasets), else None (an
    import without a log or force-field file)."""
    from gnnmd.data.reader import read_manifest

    manifest = read_manifest(data_dir)
    if manifest.get("force_field") is not None:
        return ForceField.from_dict(manifest["force_field"], f"{Path(data_dir) / 'manifest.json'}")
    protocol = manifest.get("protocol")
    if not isinstance(protocol, dict):
        return None
    name = protocol.get("forcefield") or _STUDY_FORCE_FIELDS.get(manifest.get("system"))
    return ForceField.shipped(name) if name else None
