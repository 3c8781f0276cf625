"""Atom count of a system's box from its config alone, before it is built (for the workflow's job sizes).

The builder (systems/build.py) places exactly

    atoms = sum over chains of (7 n + 9)  +  16 x NaTFSI pairs  +  slab atoms

(CH3-O-(CH2CH2O)n-CH3 has C(2n+2) H(4n+6) O(n+1); Na+ is 1 atom, TFSI- 15), with the chains and pairs
of its own plan: `chains` x `eo_per_chain` for a plain box, `composite_chains` for a slab box (the slab
of `mof_metal` x `mof_cells` is built to know its mass and atoms). The count is exact, so a job sized
from it needs no file of the run.
"""

from __future__ import annotations

from functools import lru_cache

from spemd.systems.build import composite_chains, salt_pairs

ATOMS_PER_SALT_PAIR = 16


def peo_chain_atoms(n_eo: int) -> int:
    """Atoms of CH3-O-(CH2CH2O)n-CH3."""
    return 7 * int(n_eo) + 9


@lru_cache(maxsize=None)
def _slab(metal: str, cells: tuple[int, int, int]) -> tuple[float, int]:
    from spemd.systems.mof import build_slab

    slab = build_slab(metal, cells)
    return slab.mass_amu, len(slab.positions_nm)


def planned_counts(name: str, spec: dict) -> dict:
    """Atoms, NaTFSI pairs and slab atoms of system `name`'s box as `spemd build` will make it from `spec`."""
    eo, eo_per_na = int(spec["eo_per_chain"]), float(spec["eo_per_na"])
    wt = float(spec.get("mof_wt_percent", 0))
    if wt > 0:
        mass, slab_atoms = _slab(spec.get("mof_metal", "FeNi"), tuple(spec.get("mof_cells", (1, 1, 1))))
        plan = composite_chains(mass, wt, eo, eo_per_na, f"systems.{name}")
        chain_eo, n_salt = plan["chain_eo"], plan["n_salt"]
    else:
        slab_atoms = 0
        chain_eo = [eo] * int(spec["chains"])
        n_salt = salt_pairs(sum(chain_eo), eo_per_na)
    atoms = sum(peo_chain_atoms(n) for n in chain_eo) + ATOMS_PER_SALT_PAIR * n_salt + slab_atoms
    return {"atoms": atoms, "salt_pairs": n_salt, "slab_atoms": slab_atoms}


def planned_atoms(name: str, spec: dict) -> int:
    """Atoms of system `name`'s box as `spemd build` will make it from its config `spec`."""
    return planned_counts(name, spec)["atoms"]
