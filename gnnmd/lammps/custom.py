"""Your own liquid for `gnnmd generate`: a LAMMPS molecule file (or a data file with the atoms placed) and a
force-field include file become a protocol for lammps_inputs/liquid.lmp; OPLS-AA ethane and methanol are
named presets of it. Everything the box needs (type counts, masses, room for topology) is read from the two
files and checked before LAMMPS starts, so a bad file is one line naming it, not a LAMMPS traceback."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

from gnnmd.data.forcefield import ForceField
from gnnmd.files import file_sha256
from gnnmd.lammps.engine import lammps_input, start_lammps

AVOGADRO = 0.602214076  # g/cm3 per (g/mol / A^3)
TOPOLOGY = ("bonds", "angles", "dihedrals", "impropers")
_SECTIONS = {"Coords", "Types", "Molecules", "Fragments", "Charges", "Diameters", "Masses", "Bonds", "Angles",
             "Dihedrals", "Impropers", "Special Bond Counts", "Special Bonds", "Shake Flags", "Shake Atoms",
             "Shake Bond Types", "Body Integers", "Body Doubles"}  # fmt: skip


@dataclass(frozen=True)
class Molecule:
    """What gnnmd needs of a LAMMPS molecule file: atom types and per-atom masses by atom id, and the
    bonds, angles, dihedrals and impropers as (type, atom ids)."""

    types: dict[int, int]
    masses: dict[int, float]
    topology: dict[str, list[tuple[int, ...]]]

    @classmethod
    def read(cls, path: Path) -> Molecule:
        try:
            lines = Path(path).read_text().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: cannot read the molecule file ({err})") from None
        sections: dict[str, list[tuple[int, list[str]]]] = {}
        current = None
        for number, raw in enumerate(lines[1:], start=2):  # the first line is a title
            line = raw.split("#", 1)[0].strip()
            if line in _SECTIONS:
                current = sections.setdefault(line, [])
            elif line and current is not None:
                current.append((number, line.split()))
        try:
            types = {int(w[0]): int(w[1]) for _, w in sections.get("Types", [])}
            masses = {int(w[0]): float(w[1]) for _, w in sections.get("Masses", [])}
            topology = {name: [tuple(int(x) for x in w[1:]) for _, w in sections.get(name.title(), [])]
                        for name in TOPOLOGY}  # fmt: skip
        except (ValueError, IndexError):
            raise ValueError(f"{path}: a Types, Masses, Bonds, Angles, Dihedrals or Impropers line is not numbers "
                             "(type labels are not supported; use type numbers)") from None  # fmt: skip
        if not types:
            raise ValueError(f"{path}: not a LAMMPS molecule file (no Types section)")
        return cls(types, masses, topology)

    @property
    def mass(self) -> float:
        return sum(self.masses.values())

    def room(self) -> dict[str, int]:
        """Per-atom topology counts LAMMPS must make room for (create_box extra/.../per/atom)."""
        room = {name: max([sum(a in t[1:] for t in self.topology[name]) for a in self.types] or [0])
                for name in TOPOLOGY}  # fmt: skip
        bonded = {a: set() for a in self.types}
        for _, i, j in self.topology["bonds"]:
            bonded[i].add(j)
            bonded[j].add(i)
        special = 0
        for atom in self.types:  # 1-2, 1-3 and 1-4 neighbours
            seen, shell = {atom}, {atom}
            for _ in range(3):
                shell = {b for a in shell for b in bonded[a]} - seen
                seen |= shell
            special = max(special, len(seen) - 1)
        return {**room, "special": special}


def type_masses(forcefield: Path, molecule: Molecule | None, types: set[int], where: str) -> dict[int, float]:
    """Mass of every atom type: `mass` commands of the force field, else the molecule file's Masses."""
    masses = {}
    if molecule is not None:
        for atom, atom_type in molecule.types.items():
            if atom in molecule.masses:
                masses[atom_type] = molecule.masses[atom]
    for words in _commands(forcefield, "mass"):
        try:
            masses[int(words[0])] = float(words[1])
        except (ValueError, IndexError):
            raise ValueError(f"{forcefield}: cannot read `mass {' '.join(words)}` (give `mass TYPE VALUE`)") from None
    missing = sorted(t for t in types if not masses.get(t, 0) > 0)
    if missing:
        raise ValueError(f"{where}: atom type(s) {missing} have no mass; add `mass TYPE VALUE` to {forcefield} "
                         "or a Masses section to the molecule file")  # fmt: skip
    return masses


def _commands(path: Path, name: str) -> list[list[str]]:
    """The arguments of every `name` command in a LAMMPS include file."""
    found = []
    for raw in Path(path).read_text().splitlines():
        words = raw.split("#", 1)[0].split()
        if words and words[0] == name:
            found.append(words[1:])
    return found


def type_counts(forcefield: Path, molecule: Molecule) -> dict[str, int]:
    """How many atom, bond, angle, dihedral and improper types the box needs: the most the molecule or
    the force field's coefficients name."""
    counts = {"atom": max(molecule.types.values())}
    counts.update({name[:-1]: max([t[0] for t in molecule.topology[name]] or [0]) for name in TOPOLOGY})
    coefficients = {"atom": "pair_coeff", "bond": "bond_coeff", "angle": "angle_coeff",
                    "dihedral": "dihedral_coeff", "improper": "improper_coeff"}  # fmt: skip
    for kind, command in coefficients.items():
        for words in _commands(forcefield, command):
            ids = [int(w) for w in words[: 2 if kind == "atom" else 1] if w.isdigit()]
            counts[kind] = max([counts[kind], *ids])
    return counts


@dataclass(frozen=True)
class LiquidProtocol:
    """How a custom liquid is simulated with liquid.lmp. `frames` counts all dumped frames over all
    segments; the files are stored as absolute paths with their sha256."""

    system: str
    forcefield: str
    forcefield_sha256: str
    molecule: str | None  # the molecule file, or None when `data` holds the atoms
    molecule_sha256: str | None
    data: str | None
    data_sha256: str | None
    count: int  # molecules inserted (0 with a data file)
    atoms: int
    box: tuple[float, float, float] | None  # starting box (None with a data file: its own)
    density: float | None  # g/cm3 of the starting box, if asked for
    segments: int
    frames: int
    stride: int
    equil_steps: int
    timestep: float
    temperature: tuple[float, float]  # range drawn per segment (equal: one temperature)
    ensemble: str
    pressure: float
    seed: int
    masses: dict[int, float]
    type_counts: dict[str, int]
    room: dict[str, int]
    input_file: str = "liquid.lmp"
    tdamp: float = 100.0
    pdamp: float = 1000.0

    @property
    def frames_per_segment(self) -> int:
        return self.frames // self.segments


@dataclass(frozen=True)
class Preset:
    """A shipped liquid: its files in lammps_inputs/ and default run."""

    molecule: str
    forcefield: str
    molecules: int
    density: float
    temperature: float
    frames: int = 100
    segments: int = 2
    stride: int = 20
    equil_steps: int = 2000
    timestep: float = 1.0
    ensemble: str = "nvt"


# liquid densities at these temperatures: ethane 0.548 g/cm3 at 180 K (saturated liquid, NIST webbook),
# methanol 0.787 g/cm3 at 298 K
PRESETS = {
    "ethane": Preset("ethane.mol", "oplsaa_ethane.ff", molecules=100, density=0.548, temperature=180.0),
    "methanol": Preset("methanol.mol", "oplsaa_methanol.ff", molecules=100, density=0.787, temperature=300.0),
}
LIQUIDS = ("custom", *PRESETS)


def _box(molecule: Molecule, count: int, density: float | None, box) -> tuple[float, float, float]:
    if box is not None and density is not None:
        raise ValueError("give the starting box by --density or by --box, not both")
    if box is not None:
        return tuple(float(b) for b in box)
    if density is None or not density > 0:
        raise ValueError(f"give --density (g/cm3, > 0) or --box for the starting box, got density {density}")
    side = (count * molecule.mass / density / AVOGADRO) ** (1.0 / 3.0)
    return (round(side, 4),) * 3


def _file(path, what: str) -> tuple[str, str]:
    """The absolute path of an input file and its sha256, or a one-line error naming it."""
    path = Path(path).absolute()
    if not path.is_file():
        raise ValueError(f"{path}: {what} not found")
    return str(path), file_sha256(path)


def _data_file(path: Path, forcefield: Path) -> tuple[int, dict[int, float], dict[str, int]]:
    """Atom count, masses and type counts of a LAMMPS data file with the atoms placed."""
    header, masses, section = {}, {}, None
    for raw in path.read_text().splitlines()[1:]:
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if words[0][0].isalpha():
            section = words[0]
            continue
        try:
            if section is None and len(words) >= 2 and words[-1] in ("atoms", "types"):
                header[" ".join(words[1:])] = int(words[0])
            elif section == "Masses":
                masses[int(words[0])] = float(words[1])
        except (ValueError, IndexError):
            raise ValueError(f"{path}: cannot read {raw.strip()!r} (type labels are not supported)") from None
    if "atoms" not in header or "atom types" not in header:
        raise ValueError(f"{path}: not a LAMMPS data file (no 'N atoms' and 'N atom types' header lines)")
    types = set(range(1, header["atom types"] + 1))
    for words in _commands(forcefield, "mass"):
        if len(words) >= 2 and words[0].isdigit():
            masses[int(words[0])] = float(words[1])
    missing = sorted(t for t in types if not masses.get(t, 0) > 0)
    if missing:
        raise ValueError(f"{path}: atom type(s) {missing} have no mass; add a Masses section or `mass` to {forcefield}")
    return header["atoms"], masses, {k.split()[0]: v for k, v in header.items() if k.endswith("types")}


def liquid_protocol(system: str, forcefield=None, molecule=None, data=None, molecules=None, density=None, box=None,
                    temperature=None, ensemble=None, pressure=None, **run) -> LiquidProtocol:  # fmt: skip
    """The protocol `gnnmd generate custom|ethane|methanol` options ask for, with every file read and
    checked. `run`: frames, segments, stride, equil_steps, timestep, seed (None: the preset's or default)."""
    preset = PRESETS.get(system)
    if system not in LIQUIDS:
        raise ValueError(f"unknown liquid {system!r}; choose one of {', '.join(LIQUIDS)}")
    if preset is not None:
        if forcefield or molecule or data:
            raise ValueError(f"{system} is a shipped system: its files are gnnmd's; use `custom` for your own files")
        forcefield, molecule = lammps_input(preset.forcefield), lammps_input(preset.molecule)
        molecules = molecules if molecules is not None else preset.molecules
        density = density if (density is not None or box is not None) else preset.density
        temperature = temperature or (preset.temperature, preset.temperature)
        ensemble = ensemble or preset.ensemble
    if forcefield is None or (molecule is None) == (data is None):
        raise ValueError("custom needs --forcefield FILE and either --molecule FILE with --molecules N or --data FILE")
    if temperature is None:
        raise ValueError(f"{system}: give --temperature T (K)")
    forcefield_path, forcefield_sha = _file(forcefield, "force-field file")
    ForceField.read(forcefield_path)  # refused here if gnnmd cannot describe it
    common = dict(system=system, forcefield=forcefield_path, forcefield_sha256=forcefield_sha,
                  temperature=tuple(float(t) for t in temperature), ensemble=ensemble or "nvt",
                  pressure=1.0 if pressure is None else float(pressure), **_run_settings(preset, run))  # fmt: skip
    if data is not None:
        protocol = _from_data(data, molecules, density, box, common)
    else:
        protocol = _from_molecule(molecule, molecules, density, box, common)
    return _checked(protocol)


def _run_settings(preset: Preset | None, run: dict) -> dict:
    defaults = dict(frames=100, segments=2, stride=20, equil_steps=2000, timestep=1.0, seed=1)
    if preset is not None:
        defaults.update({k: getattr(preset, k) for k in ("frames", "segments", "stride", "equil_steps", "timestep")})
    return {k: (run[k] if run.get(k) is not None else v) for k, v in defaults.items()}


def _from_molecule(molecule, count, density, box, common) -> LiquidProtocol:
    path, sha = _file(molecule, "molecule file")
    parsed = Molecule.read(Path(path))
    if count is None or count < 1:
        raise ValueError(f"give --molecules N (a positive number of molecules to insert), got {count}")
    types = type_counts(Path(common["forcefield"]), parsed)
    for name in TOPOLOGY:  # LAMMPS would run them without a style, silently leaving their forces out
        style = f"{name[:-1]}_style"
        if parsed.topology[name] and not _commands(Path(common["forcefield"]), style):
            raise ValueError(f"{common['forcefield']}: sets no {style}, but {path} has {name}; "
                             f"add one (`{style} zero` to leave them out)")  # fmt: skip
    masses = type_masses(Path(common["forcefield"]), parsed, set(range(1, types["atom"] + 1)), path)
    parsed = replace(parsed, masses={a: masses[t] for a, t in parsed.types.items()})
    start = _box(parsed, count, density, box)
    return LiquidProtocol(**common, molecule=path, molecule_sha256=sha, data=None, data_sha256=None, count=count,
                          atoms=count * len(parsed.types), box=start, density=density, masses=masses,
                          type_counts=types, room=parsed.room())  # fmt: skip


def _from_data(data, count, density, box, common) -> LiquidProtocol:
    if count is not None or density is not None or box is not None:
        raise ValueError("--data holds the atoms and the box: drop --molecules, --density and --box")
    path, sha = _file(data, "LAMMPS data file")
    atoms, masses, types = _data_file(Path(path), Path(common["forcefield"]))
    return LiquidProtocol(**common, molecule=None, molecule_sha256=None, data=path, data_sha256=sha, count=0,
                          atoms=atoms, box=None, density=None, masses=masses, type_counts=types,
                          room={name: 0 for name in (*TOPOLOGY, "special")})  # fmt: skip


def run_problems(protocol) -> list[str]:
    """What is wrong with the run numbers of a protocol (a study system's or a liquid's)."""
    problems = []
    if protocol.segments < 1 or protocol.frames < protocol.segments:
        problems.append(f"need at least one frame per segment (frames={protocol.frames}, segments={protocol.segments})")
    elif protocol.frames % protocol.segments:
        problems.append(f"frames ({protocol.frames}) must be a multiple of segments ({protocol.segments})")
    if protocol.stride < 1 or protocol.timestep <= 0 or protocol.equil_steps < 0:
        problems.append("stride and timestep must be positive and equil_steps not negative")
    if min(protocol.temperature) <= 0 or (protocol.box is not None and min(protocol.box) <= 0):
        problems.append("temperatures and box lengths must be positive")
    return problems


def checked(protocol, problems: list[str]):
    """The protocol, refused with every problem named; its first dumped frame (the end of equilibration)
    put on the dump grid."""
    if problems:
        raise ValueError(f"bad {protocol.system} protocol: " + "; ".join(problems))
    return replace(protocol, equil_steps=math.ceil(protocol.equil_steps / protocol.stride) * protocol.stride)


def _checked(protocol: LiquidProtocol) -> LiquidProtocol:
    problems = run_problems(protocol)
    if protocol.ensemble not in ("nvt", "npt"):
        problems.append(f"ensemble must be nvt or npt, got {protocol.ensemble!r}")
    return checked(protocol, problems)


def liquid_variables(protocol: LiquidProtocol, seed: int, folder: Path) -> dict:
    """The -var settings of one segment of liquid.lmp (masses come from the force field or data file, or
    from `folder/masses.in`, which the caller writes with `write_masses` and removes after the run)."""
    lx, ly, lz = protocol.box or (0.0, 0.0, 0.0)
    counts, room = protocol.type_counts, protocol.room
    return dict(
        start="molecule" if protocol.molecule else "data",
        molfile=Path(protocol.molecule) if protocol.molecule else "none",
        initial=Path(protocol.data) if protocol.data else "none",
        nmol=protocol.count, lx=lx, ly=ly, lz=lz,
        ntypes=counts["atom"], nbondtypes=counts.get("bond", 0), nangletypes=counts.get("angle", 0),
        ndihedraltypes=counts.get("dihedral", 0), nimpropertypes=counts.get("improper", 0),
        nbonds=room["bonds"], nangles=room["angles"], ndihedrals=room["dihedrals"], nimpropers=room["impropers"],
        nspecial=room["special"],
        setmasses="yes" if _needs_masses(protocol) else "no",
        masses=folder / "masses.in" if _needs_masses(protocol) else "none",
        forcefield=Path(protocol.forcefield), seed=seed, tmin=protocol.temperature[0], tmax=protocol.temperature[1],
        ensemble=protocol.ensemble, press=protocol.pressure, tdamp=protocol.tdamp, pdamp=protocol.pdamp,
        dt=protocol.timestep, equil=protocol.equil_steps,
        steps=(protocol.frames_per_segment - 1) * protocol.stride, stride=protocol.stride,
        datafile=folder / "system.data", dumpfile=folder / "frames.lammpstrj", energyfile=folder / "energy.txt",
    )  # fmt: skip


def _needs_masses(protocol: LiquidProtocol) -> bool:
    """Masses the force field does not set (from the molecule file's Masses section)."""
    set_by_forcefield = {int(w[0]) for w in _commands(Path(protocol.forcefield), "mass") if w and w[0].isdigit()}
    return protocol.molecule is not None and not set(map(int, protocol.masses)) <= set_by_forcefield


def write_masses(protocol: LiquidProtocol, path: Path) -> None:
    path.write_text("".join(f"mass {t} {m:.10g}\n" for t, m in sorted(protocol.masses.items())))


def check_force_field(protocol: LiquidProtocol) -> None:
    """Run the force-field file's lines one by one in a LAMMPS box of the protocol's types, so that a
    line LAMMPS cannot take is one error naming the file and line, before any segment starts."""
    counts = protocol.type_counts
    kinds = [f"{kind}/types {counts.get(kind, 0)}" for kind in ("bond", "angle", "dihedral", "improper")]
    lmp = start_lammps()
    try:
        lmp.commands_list(["units real", "atom_style full", "boundary p p p", "region box block 0 30 0 30 0 30",
                           f"create_box {counts['atom']} box {' '.join(kinds)}"])  # fmt: skip
        text = Path(protocol.forcefield).read_text()
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            try:
                lmp.command(line)
            except Exception as err:  # LAMMPS' own message, first line
                message = re.sub(r"\s+", " ", str(err).strip().splitlines()[0] if str(err).strip() else "")
                raise ValueError(f"{protocol.forcefield}, line {number}: LAMMPS refuses `{line}`: {message}") from None
    finally:
        lmp.close()
