"""Write the tiny reference files of the analysis tests (deterministic; run from the repository root).

    .venv/bin/python tests/data/make_reference.py

tiny_electrolyte.pdb / tiny_electrolyte.dcd: 12 Na+, 12 TFSI- (15 atoms, contract names), 4 PEO chains
(PEH + 4 PEM + PET) in a 2.6 nm cubic box, 40 frames 1 ps apart, coordinates wrapped atom by atom
(as a DCD from OpenMM may be). Molecules move as rigid bodies by Brownian steps; Na 0..5 ride on
TFSI 0..5 at 0.23 nm from its O1 (a contact ion pair: Na-O(TFSI) g(r) peak at 0.23 nm), the other Na
diffuse freely. tiny_mismatch.pdb has one atom fewer (topology/trajectory mismatch test).
"""

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BOX_NM = 2.6
N_FRAMES = 40
DT_PS = 1.0

TFSI_NAMES = ["N1", "S1", "S2", "O1", "O2", "O3", "O4", "C1", "C2", "F1", "F2", "F3", "F4", "F5", "F6"]
TFSI_XYZ = np.array([[0, 0, 0], [0.15, 0.05, 0], [-0.15, 0.05, 0], [0.2, 0.15, 0.08], [0.2, 0.1, -0.12],
                     [-0.2, 0.15, 0.08], [-0.2, 0.1, -0.12], [0.25, -0.1, 0], [-0.25, -0.1, 0],
                     [0.35, -0.08, 0.05], [0.22, -0.2, 0.06], [0.26, -0.12, -0.12],
                     [-0.35, -0.08, 0.05], [-0.22, -0.2, 0.06], [-0.26, -0.12, -0.12]])
TFSI_BONDS = [(0, 1), (0, 2), (1, 3), (1, 4), (2, 5), (2, 6), (1, 7), (2, 8), (7, 9), (7, 10), (7, 11),
              (8, 12), (8, 13), (8, 14)]
ELEM = {"N": "N", "S": "S", "O": "O", "C": "C", "F": "F", "H": "H"}


def peo_chain():
    """names, resnames, local residue index, xyz (nm), bonds of CH3-O-(CH2CH2O)4-CH3 along x."""
    names, resn, resi, xyz, bonds = [], [], [], [], []
    x = 0.0

    def add(n, r, ri, p):
        names.append(n); resn.append(r); resi.append(ri); xyz.append(p)
        return len(names) - 1

    c = add("C1", "PEH", 0, [x, 0, 0]); [bonds.append((c, add(h, "PEH", 0, [x, 0.1 * (k - 1), 0.09])))
                                         for k, h in enumerate(["H11", "H12", "H13"])]
    o = add("O1", "PEH", 0, [x + 0.14, 0.0, 0]); bonds.append((c, o)); prev = o; x += 0.14
    for m in range(4):
        ri = m + 1
        c1 = add("C1", "PEM", ri, [x + 0.14, 0.05, 0]); c2 = add("C2", "PEM", ri, [x + 0.28, 0.0, 0])
        o = add("O1", "PEM", ri, [x + 0.42, 0.05, 0])
        h = [add(n, "PEM", ri, p) for n, p in (("H11", [x + 0.14, 0.15, 0]), ("H12", [x + 0.14, 0.05, 0.1]),
                                                ("H21", [x + 0.28, -0.1, 0]), ("H22", [x + 0.28, 0.0, 0.1]))]
        bonds += [(prev, c1), (c1, c2), (c2, o), (c1, h[0]), (c1, h[1]), (c2, h[2]), (c2, h[3])]
        prev = o; x += 0.42
    c = add("C1", "PET", 5, [x + 0.14, 0, 0]); bonds.append((prev, c))
    for k, h in enumerate(["H11", "H12", "H13"]):
        bonds.append((c, add(h, "PET", 5, [x + 0.14, 0.1 * (k - 1), 0.09])))
    xyz = np.array(xyz) - np.mean(xyz, axis=0)
    return names, resn, resi, xyz * np.array([0.45, 1, 1]), bonds  # folded to fit the small box


def random_rotation(rng):
    q = rng.normal(size=4); q /= np.linalg.norm(q)
    a, b, c, d = q
    return np.array([[a*a+b*b-c*c-d*d, 2*(b*c-a*d), 2*(b*d+a*c)], [2*(b*c+a*d), a*a-b*b+c*c-d*d, 2*(c*d-a*b)],
                     [2*(b*d-a*c), 2*(c*d+a*b), a*a-b*b-c*c+d*d]])


def build(seed=20250101):
    import MDAnalysis as mda

    rng = np.random.default_rng(seed)
    names, resnames, atom_res, elements, bonds, bodies = [], [], [], [], [], []  # bodies: (atom idx, local xyz, D)
    res_names = []

    def new_res(rn):
        res_names.append(rn)
        return len(res_names) - 1

    n_pairs = 12
    tfsi_local = []
    for i in range(n_pairs):
        r = new_res("NA"); idx = len(names)
        names.append("NA"); resnames.append("NA"); atom_res.append(r); elements.append("Na")
        bodies.append(([idx], np.zeros((1, 3)), 2e-3))
    for i in range(n_pairs):
        r = new_res("TFS"); start = len(names)
        for n in TFSI_NAMES:
            names.append(n); atom_res.append(r); elements.append(ELEM[n[0]])
        bonds += [(start + a, start + b) for a, b in TFSI_BONDS]
        local = TFSI_XYZ @ random_rotation(rng).T
        tfsi_local.append(local)
        bodies.append((list(range(start, start + 15)), local, 1e-3))
    for ch in range(4):
        pn, prn, pri, pxyz, pb = peo_chain()
        base_res = len(res_names)
        for rn in ["PEH", "PEM", "PEM", "PEM", "PEM", "PET"]:
            new_res(rn)
        start = len(names)
        for n, ri in zip(pn, pri):
            names.append(n); atom_res.append(base_res + ri); elements.append(ELEM[n[0]])
        bonds += [(start + a, start + b) for a, b in pb]
        bodies.append((list(range(start, start + len(pn))), pxyz @ random_rotation(rng).T, 5e-4))
    n_atoms = len(names)
    # trajectories of body centres
    centres = {}
    for bi, (idx, local, D) in enumerate(bodies):
        steps = rng.normal(0, np.sqrt(2 * D * DT_PS), size=(N_FRAMES, 3)); steps[0] = 0
        centres[bi] = rng.random(3) * BOX_NM + np.cumsum(steps, axis=0)
    pos = np.zeros((N_FRAMES, n_atoms, 3))
    for bi, (idx, local, D) in enumerate(bodies):
        pos[:, idx, :] = centres[bi][:, None, :] + local[None]
    # Na 0..5 ride on TFSI 0..5 at 0.23 nm from O1, pointing away from N1
    for i in range(6):
        t_idx = bodies[n_pairs + i][0]
        o1 = pos[:, t_idx[3], :]; n1 = pos[:, t_idx[0], :]
        v = (o1 - n1) / np.linalg.norm(o1 - n1, axis=1)[:, None]
        pos[:, i, :] = o1 + 0.23 * v
    pos = np.mod(pos, BOX_NM)

    u = mda.Universe.empty(n_atoms, n_residues=len(res_names), atom_resindex=np.array(atom_res), trajectory=True)
    u.add_TopologyAttr("names", names)
    u.add_TopologyAttr("resnames", res_names)
    u.add_TopologyAttr("resids", np.arange(1, len(res_names) + 1))
    u.add_TopologyAttr("elements", elements)
    u.add_TopologyAttr("chainIDs", ["A"] * n_atoms)
    u.add_TopologyAttr("bonds", bonds)
    u.dimensions = [BOX_NM * 10] * 3 + [90.0] * 3
    u.atoms.positions = pos[0] * 10
    u.atoms.write(HERE / "tiny_electrolyte.pdb", bonds="all")
    u.atoms[:-1].write(HERE / "tiny_mismatch.pdb", bonds="all")
    with mda.Writer(str(HERE / "tiny_electrolyte.dcd"), n_atoms, dt=DT_PS) as w:
        for f in range(N_FRAMES):
            u.atoms.positions = pos[f] * 10
            u.dimensions = [BOX_NM * 10] * 3 + [90.0] * 3
            w.write(u.atoms)


if __name__ == "__main__":
    build()
