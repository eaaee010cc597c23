"""OPLS-AA ethane and methanol built by moltemplate (oplsaa2008.lt) instead of gnnmd's own files: a second,
independent description of the same liquids, to check the shipped lammps_inputs/oplsaa_*.ff against. The
result is a LAMMPS data file and one force-field include file for `gnnmd generate custom --data FILE
--forcefield FILE`. moltemplate is run as a program (moltemplate.sh, `pip install moltemplate`, the
`moltemplate` extra), never imported: gnnmd does not depend on it."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from gnnmd.data.forcefield import ForceField
from gnnmd.lammps.custom import AVOGADRO
from gnnmd.lammps.engine import lammps_input

KINDS = ("atom", "bond", "angle", "dihedral", "improper")
_SECTIONS = {"Atoms": "atom", "Bonds": "bond", "Angles": "angle", "Dihedrals": "dihedral", "Impropers": "improper"}
_ELEMENT_MASS = {"C": 12.011, "H": 1.008, "O": 15.999}  # only to size the box before moltemplate runs

# One molecule per liquid: (atom name, oplsaa2008.lt type = the TINKER oplsaa.prm type, x, y, z in A) in the
# atom order of gnnmd's lammps_inputs/*.mol (same geometry), and the bonds; moltemplate adds the angles and
# dihedrals and assigns every charge and coefficient from its own force-field file.
TEMPLATES = {
    "ethane": (
        [("C1", 80, 0.0, 0.0, 0.0), ("C2", 80, 1.529, 0.0, 0.0),  # "Alkane CH3-"
         ("H11", 85, -0.385288, -1.019634, 0.0), ("H12", 85, -0.385288, 0.509817, -0.883029),  # "Alkane H-C"
         ("H13", 85, -0.385288, 0.509817, 0.883029), ("H21", 85, 1.914288, 0.509817, -0.883029),
         ("H22", 85, 1.914288, -1.019634, 0.0), ("H23", 85, 1.914288, 0.509817, 0.883029)],
        [("C1", "C2"), ("C1", "H11"), ("C1", "H12"), ("C1", "H13"), ("C2", "H21"), ("C2", "H22"), ("C2", "H23")],
    ),
    "methanol": (
        [("C", 99, 0.0, 0.0, 0.0),  # "Alcohol CH3OH & RCH2OH" (the methanol carbon, q +0.145)
         ("O", 96, 1.41, 0.0, 0.0),  # "Alcohol -OH" O (q -0.683)
         ("HO", 97, 1.709853, 0.896166, 0.0),  # "Alcohol -OH" H (q +0.418)
         ("H1", 98, -0.363849, -1.027479, 0.0),  # "Methanol CH3-" (the methyl H, q +0.040)
         ("H2", 98, -0.363849, 0.51374, 0.889823), ("H3", 98, -0.363849, 0.51374, -0.889823)],
        [("C", "O"), ("O", "HO"), ("C", "H1"), ("C", "H2"), ("C", "H3")],
    ),
}  # fmt: skip


class MoltemplateError(RuntimeError):
    """moltemplate is missing, failed, or wrote something this converter cannot take (one line)."""


def moltemplate_executable() -> str:
    """moltemplate.sh on PATH, else beside this Python (a venv that is not activated)."""
    found = shutil.which("moltemplate.sh") or shutil.which("moltemplate.sh", path=str(Path(sys.executable).parent))
    if found is None:
        raise MoltemplateError("moltemplate.sh not found (on PATH or beside this Python): pip install moltemplate")
    return found


def molecule_lt(liquid: str) -> str:
    """The moltemplate file of one molecule. Charges are written as 0: moltemplate's `In Charges` sets them."""
    atoms, bonds = _template(liquid)
    name = liquid.capitalize()
    lines = ['import "oplsaa2008.lt"', "", f"{name} inherits OPLSAA {{", '  write("Data Atoms") {']
    lines += [f"    $atom:{a} $mol:. @atom:{t} 0.0 {x:.6f} {y:.6f} {z:.6f}" for a, t, x, y, z in atoms]
    lines += ["  }", '  write("Data Bond List") {']
    lines += [f"    $bond:{i}_{j} $atom:{i} $atom:{j}" for i, j in bonds]
    return "\n".join([*lines, "  }", "}", ""])


def box_length(liquid: str, molecules: int, density: float) -> float:
    """The cubic box side (A) of `molecules` molecules at `density` g/cm3."""
    if molecules < 1 or not density > 0:
        raise ValueError(f"need at least one molecule and a positive density, got {molecules} and {density}")
    mass = sum(_ELEMENT_MASS[a[0][0]] for a in _template(liquid)[0])
    return (molecules * mass / density / AVOGADRO) ** (1.0 / 3.0)


def system_lt(liquid: str, molecules: int, density: float) -> str:
    """N copies on the first N sites of a simple cubic lattice filling a box of the density asked for."""
    atoms, _ = _template(liquid)
    side = box_length(liquid, molecules, density)
    n = math.ceil(molecules ** (1.0 / 3.0) - 1e-9)
    spacing = side / n
    centre = [sum(a[k] for a in atoms) / len(atoms) for k in (2, 3, 4)]
    lines = [f'import "{liquid}.lt"', "", 'write_once("Data Boundary") {']
    lines += [f"  0.0 {side:.6f} {d}lo {d}hi" for d in "xyz"]
    lines += ["}", ""]
    for m in range(molecules):
        site = (m % n, (m // n) % n, m // (n * n))
        shift = [(s + 0.5) * spacing - c for s, c in zip(site, centre)]
        lines.append(f"mol{m + 1} = new {liquid.capitalize()}.move({shift[0]:.6f},{shift[1]:.6f},{shift[2]:.6f})")
    return "\n".join([*lines, ""])


def build_liquid(liquid: str, molecules: int, density: float, out) -> tuple[Path, Path]:
    """Build `molecules` OPLS-AA `liquid` molecules (ethane, methanol) at `density` g/cm3 with moltemplate
    and write OUT/LIQUID.data and OUT/LIQUID.ff (with the .lt inputs beside them); returns the two paths."""
    _template(liquid)
    executable = moltemplate_executable()
    with tempfile.TemporaryDirectory(prefix="gnnmd-moltemplate-") as work:
        work = Path(work)
        inputs = {f"{liquid}.lt": molecule_lt(liquid), "system.lt": system_lt(liquid, molecules, density)}
        for name, text in inputs.items():
            (work / name).write_text(text)
        version = _run(executable, work)
        title = f"OPLS-AA {liquid}, {molecules} molecules at {density} g/cm3, built by moltemplate {version}"
        data, forcefield = convert(work, title, reference=lammps_input(f"oplsaa_{liquid}.ff"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, text in inputs.items():
        (out / name).write_text(text)
    paths = out / f"{liquid}.data", out / f"{liquid}.ff"
    paths[0].write_text(data)
    paths[1].write_text(forcefield)
    ForceField.read(paths[1])  # refused here, naming the file, if gnnmd cannot describe it
    return paths


def _template(liquid: str):
    if liquid not in TEMPLATES:
        raise ValueError(f"no moltemplate recipe for {liquid!r}; choose one of {', '.join(TEMPLATES)}")
    return TEMPLATES[liquid]


def _run(executable: str, work: Path) -> str:
    """Run moltemplate.sh on work/system.lt; returns its version. Its Python scripts run with the Python
    found first on PATH, so the executable's folder goes first."""
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(executable).parent), os.environ.get("PATH", "")])}
    try:
        done = subprocess.run([executable, "-atomstyle", "full", "system.lt"], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as err:
        raise MoltemplateError(f"{executable}: could not run it ({err})") from None
    if done.returncode != 0 or not (work / "system.data").is_file():
        lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if "error" in line.lower()] or lines[-3:]
        raise MoltemplateError(f"{executable} failed (exit {done.returncode}): {' | '.join(errors[:3])}")
    version = re.search(r"moltemplate\.sh v(\S+)", done.stderr)
    return version.group(1) if version else "(version unknown)"


def convert(work: Path, title: str, reference: Path | None = None) -> tuple[str, str]:
    """moltemplate's outputs in `work` (system.data, system.in.init, system.in.settings, system.in.charges)
    as the text of one data file and one force-field include file. oplsaa2008.lt defines ~900 atom types
    and all their coefficients: only the types the system uses are kept, renumbered from 1 in moltemplate's
    order. The charges of `In Charges` (`set type N charge Q`) go into the data file's Atoms, each molecule
    checked neutral. With `reference` (a force-field file), its pair_style is used if its cutoffs differ."""
    box, sections = _read_data(work / "system.data")
    used = {kind: sorted({int(w[2 if kind == "atom" else 1]) for w in sections.get(kind, [])}) for kind in KINDS}
    new = {kind: {old: k + 1 for k, old in enumerate(types)} for kind, types in used.items()}
    names = _names(work / "output_ttree" / "ttree_assignments.txt")
    charges, described = {}, {}
    for raw in (work / "system.in.charges").read_text().splitlines():
        words = raw.split("#", 1)[0].split()
        if words[:2] == ["set", "type"] and len(words) >= 5 and words[3] == "charge":
            charges[int(words[2])] = float(words[4])
            described[int(words[2])] = raw.split("#", 1)[1].strip() if "#" in raw else ""
    missing = [t for t in used["atom"] if t not in charges]
    if missing:
        raise MoltemplateError(f"{work}/system.in.charges: no charge for atom type(s) {missing}")
    _check_neutral(sections["atom"], charges)
    init = _init_commands(work / "system.in.init", used, reference)
    coefficients = _coefficients(work / "system.in.settings", new, names)
    masses = {int(w[0]): float(w[1]) for w in sections.get("Masses", [])}
    return (_data_text(title, box, sections, new, charges, masses),
            _forcefield_text(title, init, coefficients, new, names, charges, described, masses))  # fmt: skip


def _read_data(path: Path):
    """The box lines and the sections (lists of word lists) of a moltemplate data file."""
    header, box, sections, current = {}, [], {}, None
    for raw in path.read_text().splitlines()[1:]:
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if words[0][0].isalpha():
            current = sections.setdefault(_SECTIONS.get(words[0], words[0]), [])
        elif current is not None:
            current.append(words)
        elif words[-1] in ("xhi", "yhi", "zhi", "yz"):
            box.append(" ".join(words))
        else:
            header[" ".join(words[1:])] = int(words[0])
    if "atom" not in sections:
        raise MoltemplateError(f"{path}: no Atoms section")
    for kind in KINDS:  # a section read short would silently drop atoms or topology
        if header.get(f"{kind}s", 0) != len(sections.get(kind, [])):
            raise MoltemplateError(f"{path}: header says {header.get(f'{kind}s', 0)} {kind}s, read "
                                   f"{len(sections.get(kind, []))}")  # fmt: skip
    return box, sections


def _names(path: Path) -> dict[tuple[str, int], str]:
    """moltemplate's name of every numbered type, e.g. ("bond", 113) -> "013_013" (the TINKER classes)."""
    names = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            found = re.match(r"@/(\w+):\w+/(\S+)\s+(\d+)", line)
            if found:
                kind, name, number = found.groups()
                names[kind, int(number)] = name.split("_b")[0] if kind == "atom" else name
    return names


def _check_neutral(atoms: list[list[str]], charges: dict[int, float]) -> None:
    totals: dict[int, float] = {}
    for words in atoms:
        totals[int(words[1])] = totals.get(int(words[1]), 0.0) + charges[int(words[2])]
    charged = {m: q for m, q in totals.items() if abs(q) > 1e-6}
    if charged:
        molecule, charge = next(iter(charged.items()))
        raise MoltemplateError(f"molecule {molecule} has net charge {charge:+.4f} (check the @atom types)")


def _init_commands(path: Path, used: dict, reference: Path | None) -> list[str]:
    """The style commands of system.in.init, without styles of kinds the system has none of, and with
    the reference's pair_style where its cutoffs differ (so both builders describe one force field)."""
    commands = []
    for raw in path.read_text().splitlines():
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] == "units" and words[1:] != ["real"] or words[0] == "atom_style" and words[1:] != ["full"]:
            raise MoltemplateError(f"{path}: `{' '.join(words)}`; gnnmd's liquids are units real, atom_style full")
        kind = words[0].removesuffix("_style")
        if kind in KINDS[1:] and not used[kind]:
            continue
        if words[0] not in ("units", "atom_style"):
            commands.append(" ".join(words))
    if reference is not None:
        ours, theirs = ForceField.parse("\n".join(commands), str(path)), ForceField.read(reference)
        if ours.pair_cutoffs != theirs.pair_cutoffs:
            line = next(c for c in theirs.commands if c.startswith("pair_style"))
            commands = [f"{line}  # {reference.name}'s cutoffs" if c.startswith("pair_style") else c
                        for c in commands]  # fmt: skip
    return commands


def _coefficients(path: Path, new: dict, names: dict) -> list[str]:
    """The *_coeff lines of system.in.settings for the types in use, renumbered, named in a comment."""
    lines = []
    for raw in path.read_text().splitlines():
        words = raw.split("#", 1)[0].split()
        if not words or not words[0].endswith("_coeff"):
            continue
        kind = "atom" if words[0] == "pair_coeff" else words[0].removesuffix("_coeff")
        ids = words[1:3] if kind == "atom" else words[1:2]
        if not all(w.isdigit() for w in ids):
            raise MoltemplateError(f"{path}: cannot read `{' '.join(words)}` (type numbers expected)")
        if all(int(w) in new[kind] for w in ids):
            renumbered = [str(new[kind][int(w)]) for w in ids]
            what = "/".join(f"@{kind}:{names.get((kind, int(w)), w)}" for w in ids[:1])
            lines.append(f"{words[0]} {' '.join(renumbered + words[1 + len(ids) :])}  # {what}")
    return lines


def _data_text(title, box, sections, new, charges, masses) -> str:
    counts = [f"{len(sections.get(k, []))} {k}s" for k in KINDS if new[k] or k == "atom"]
    types = [f"{len(new[k])} {k} types" for k in KINDS if new[k]]
    lines = [f"{title} (gnnmd.lammps.moltemplate)", "", *counts, *types, "", *box, "", "Masses", ""]
    lines += [f"{new['atom'][t]} {masses[t]:.10g}" for t in sorted(new["atom"])]
    lines += ["", "Atoms # full", ""]
    for w in sections["atom"]:
        t = int(w[2])
        lines.append(" ".join([w[0], w[1], str(new["atom"][t]), f"{charges[t]:.10g}", *w[4:7]]))
    for section, kind in list(_SECTIONS.items())[1:]:
        if sections.get(kind):
            lines += ["", section, ""]
            lines += [" ".join([w[0], str(new[kind][int(w[1])]), *w[2:]]) for w in sections[kind]]
    return "\n".join([*lines, ""])


def _forcefield_text(title, init, coefficients, new, names, charges, described, masses) -> str:
    lines = [f"# {title} (gnnmd.lammps.moltemplate).",
             "# Converted from moltemplate's system.in.init, system.in.settings and system.in.charges (oplsaa2008.lt,",
             "# TINKER's oplsaa.prm): only the types in use, renumbered. Included after `read_data FILE nocoeff`.",
             "# Atom types (moltemplate's @atom type = TINKER type, its description, charge):"]  # fmt: skip
    for old, number in new["atom"].items():
        atom = names.get(("atom", old), old)
        lines.append(f"#   {number} = @atom:{atom} {described.get(old, '')}, q {charges[old]:+g}")
    lines += [f"mass {new['atom'][t]} {masses[t]:.10g}" for t in sorted(new["atom"])]
    lines += init
    lines += coefficients
    lines += ["neighbor 2.0 bin", "neigh_modify every 1 delay 0 check yes"]
    return "\n".join([*lines, ""])
