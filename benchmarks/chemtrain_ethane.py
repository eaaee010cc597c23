"""The seed's ethane fit (chemtrain 0.2's force-matching example) beside gnnmd's, on the same CG frames:
two CH3 sites per ethane of the OPLS-AA liquid (benchmarks/ethane_2site.yaml), a harmonic bond fitted by
chemtrain's ForceMatching (Adam on log b0, log kb, the seed's optimiser and schedule), then compared with
gnnmd's joint MS-CG fit and the projected-force least squares of benchmarks/coarse_grain.py.

chemtrain (jax) is an extra and never meets gnnmd in one process: two steps, two environments.

    python benchmarks/chemtrain_ethane.py export --cg WORK/cg --out ethane_cg.npz       # gnnmd's venv
    CT/bin/python benchmarks/chemtrain_ethane.py fit --npz ethane_cg.npz                # pip install chemtrain==0.2.0

`fit` writes benchmarks/results/chemtrain_ethane.json with chemtrain's b0 and kb (nm, kJ/mol/nm^2, the
seed's units), the seed's own least squares on the same arrays, and gnnmd's numbers from the ethane_2site row
of benchmarks/results/coarse_grain.json."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
KCAL_PER_A_TO_KJ_PER_NM = 4.184 * 10.0


def export(cg: Path, out: Path) -> None:
    """The CG frames as the seed's arrays: fractional positions, forces (kJ/mol/nm), the box (nm), bonds."""
    from gnnmd.data.coarse_grain import load_cg_frames

    frames = load_cg_frames(cg)
    cells = frames.cells.astype(np.float64)
    if not np.allclose(cells, cells[0]) or np.count_nonzero(cells[0] - np.diag(np.diag(cells[0]))):
        raise SystemExit(f"{cg}: the seed's fit takes one orthorhombic box; these frames' cells differ")
    box = np.diag(cells[0]) / 10.0
    fractional = (frames.positions.astype(np.float64) / 10.0) / box
    np.savez(out, R=fractional % 1.0, F=frames.forces.astype(np.float64) * KCAL_PER_A_TO_KJ_PER_NM, box=box,
             bonds=np.asarray(frames.topology.bonds, dtype=np.int64), source=str(cg.resolve()))  # fmt: skip
    print(f"wrote {out}: {len(frames)} frames of {frames.topology.n_atoms} sites, {len(frames.topology.bonds)} bonds")


def fit(npz: Path, out: Path, epochs: int) -> None:
    import jax
    import jax.numpy as jnp
    import optax
    from chemtrain.trainers import ForceMatching
    from jax_md import energy, space
    from jax_md_mod import custom_partition

    data = np.load(npz)
    box, bonds = jnp.asarray(data["box"]), jnp.asarray(data["bonds"])
    positions, forces = jnp.asarray(data["R"], dtype=jnp.float32), jnp.asarray(data["F"], dtype=jnp.float32)
    displacement_fn, _ = space.periodic_general(box, fractional_coordinates=True)

    # the seed's least squares: each bond end's force projected on the bond, linear in the length
    d = jax.vmap(lambda r: jax.vmap(displacement_fn)(r[bonds[:, 1]], r[bonds[:, 0]]))(positions)
    length = jnp.linalg.norm(d, axis=-1)
    projected = jnp.einsum("fbc,fbc->fb", forces[:, bonds[:, 1]], d / length[..., None])
    lhs = jnp.stack([length.ravel(), jnp.ones(length.size)], axis=-1)
    (kb_ls, c), *_ = np.linalg.lstsq(np.asarray(lhs, dtype=np.float64), -np.asarray(projected).ravel(), rcond=None)
    b0_ls = -c / kb_ls

    neighbor_fn = custom_partition.masked_neighbor_list(displacement_fn, box, r_cutoff=0.5,
                                                        fractional_coordinates=True)  # fmt: skip
    nbrs_init = neighbor_fn.allocate(positions[0])
    init_params = {"log_b0": jnp.log(0.11), "log_kb": jnp.log(5000.0)}  # the seed's start

    def energy_fn_template(params):
        return energy.simple_spring_bond(displacement_fn, bond=bonds, length=jnp.exp(params["log_b0"]),
                                         epsilon=jnp.exp(params["log_kb"]), alpha=2.0)  # fmt: skip

    batch, train_ratio = 10, 0.5  # the seed's (it also subsampled every 25th frame of a long gas-phase run)
    steps = int(len(positions) * train_ratio / batch * epochs)
    optimizer = optax.chain(optax.scale_by_adam(0.9, 0.95), optax.scale_by_schedule(optax.exponential_decay(0.02, steps, 0.05)),
                            optax.scale_by_learning_rate(1.0))  # fmt: skip
    trainer = ForceMatching(init_params=init_params, energy_fn_template=energy_fn_template, nbrs_init=nbrs_init,
                            optimizer=optimizer, batch_per_device=batch, log_file=str(out.with_suffix(".log")),
                            checkpoint_path=str(out.parent / "chemtrain_checkpoints"))  # fmt: skip
    trainer.set_datasets({"F": forces, "R": positions}, train_ratio=train_ratio)
    start = time.perf_counter()
    trainer.train(epochs, checkpoint_freq=None)
    seconds = time.perf_counter() - start
    learned = {k: float(jnp.exp(v)) for k, v in trainer.params.items()}
    # E = kb/2 (r - b0)^2 (alpha 2, epsilon kb): the force constant k of F = -k (r - b0) is kb
    row = {"chemtrain_b0_nm": learned["log_b0"], "chemtrain_kb_kJ_mol_nm2": learned["log_kb"],
           "least_squares_b0_nm": float(b0_ls), "least_squares_kb_kJ_mol_nm2": float(kb_ls),
           "b0_relative_difference": learned["log_b0"] / float(b0_ls) - 1,
           "kb_relative_difference": learned["log_kb"] / float(kb_ls) - 1,
           "epochs": epochs, "train_seconds": seconds, "frames": int(len(positions)),
           "sites": int(positions.shape[1]), "bonds": int(len(bonds))}  # fmt: skip
    gnnmd_rows = json.loads((RESULTS / "coarse_grain.json").read_text()).get("rows", [])
    for case in gnnmd_rows:
        if case.get("case") == "ethane_2site" and case.get("seed_check"):
            check = case["seed_check"][0]
            row.update(gnnmd_fit_b0_nm=check["fit_b0_nm"], gnnmd_fit_kb_kJ_mol_nm2=check["fit_kb_kJ_mol_nm2"],
                       gnnmd_least_squares_b0_nm=check["least_squares_b0_nm"],
                       gnnmd_least_squares_kb_kJ_mol_nm2=check["least_squares_kb_kJ_mol_nm2"])  # fmt: skip
    result = {"benchmark": "chemtrain_ethane", "command": " ".join(["python", *sys.argv]),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "versions": {"jax": jax.__version__, "chemtrain": _version("chemtrain")}, "data": str(data["source"]),
              "rows": [row]}  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    partial.write_text(json.dumps(result, indent=2) + "\n")
    partial.replace(out)
    print(json.dumps(row, indent=1))


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("export", help="gnnmd's CG dataset -> the seed's arrays (gnnmd's environment)")
    p.add_argument("--cg", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("fit", help="chemtrain's force matching of the harmonic bond (chemtrain's environment)")
    p.add_argument("--npz", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=20, help="the seed's 20")
    p.add_argument("--out", type=Path, default=RESULTS / "chemtrain_ethane.json")
    args = parser.parse_args()
    if args.step == "export":
        export(args.cg, args.out)
    else:
        fit(args.npz, args.out, args.epochs)


if __name__ == "__main__":
    main()
