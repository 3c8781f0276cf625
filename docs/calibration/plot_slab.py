"""Render the capped FeNi M3(BTC)2 slab (systems/mof.py) for docs/mof_surface.md.

    .venv/bin/python docs/calibration/plot_slab.py   # writes docs/calibration/mof_slab.png
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from spemd.systems import mof  # noqa: E402

COLOUR = {"Fe": "#d9822b", "Ni": "#3aa655", "O": "#d62728", "C": "#555555", "H": "#bbbbbb"}
SIZE = {"Fe": 70, "Ni": 70, "O": 22, "C": 18, "H": 8}


def main(out: Path) -> None:
    slab = mof.build_slab("FeNi", (1, 1, 1))
    pos = slab.positions_nm.copy()
    box = np.array([slab.box_x_nm, slab.box_y_nm])
    pos[:, :2] = np.mod(pos[:, :2], box)
    atoms = list(slab.topology.atoms())
    el = np.array([a.element.symbol for a in atoms])
    fmt = np.array([a.residue.name == "FMT" for a in atoms])
    partner = {}
    for a, b in slab.topology.bonds():
        if a.element.symbol in ("Fe", "Ni") and b.element.symbol in ("Fe", "Ni"):
            partner[a.index], partner[b.index] = b.index, a.index
    sites = []
    for i, j in partner.items():
        axis = slab.positions_nm[i] - slab.positions_nm[j]
        axis /= np.linalg.norm(axis)
        s = slab.positions_nm[i] + mof.AXIAL_SITE_NM * axis
        if s[2] >= slab.thickness_nm - mof.EXPOSED_FACE_NM or s[2] <= mof.EXPOSED_FACE_NM:
            sites.append(np.r_[np.mod(s[:2], box), s[2]])
    sites = np.array(sites)

    fig, axes = plt.subplots(1, 2, figsize=(11, 5.6), gridspec_kw={"width_ratios": [1, 1.05]})
    top = pos[:, 2] > slab.thickness_nm - 0.7
    for ax, (i, j), sel, title in (
        (axes[0], (0, 1), top, "top face from above (atoms within 0.7 nm of the face)"),
        (axes[1], (0, 2), np.ones(len(pos), bool), "side view (x-z), whole 1x1x1 slab"),
    ):
        order = np.argsort(pos[sel][:, 3 - i - j])
        p, e, f = pos[sel][order], el[sel][order], fmt[sel][order]
        for sym in ("H", "C", "O", "Fe", "Ni"):
            m = e == sym
            ax.scatter(p[m, i], p[m, j], s=SIZE[sym], c=COLOUR[sym], edgecolors="k", linewidths=0.3, label=sym, zorder=2)
        ax.scatter(p[f, i], p[f, j], s=60, facecolors="none", edgecolors="#1f77b4", linewidths=1.0, label="formate cap atoms", zorder=3)
        st = sites if j == 2 else sites[sites[:, 2] > slab.thickness_nm / 2]
        ax.scatter(st[:, i], st[:, j], marker="*", s=160, c="gold", edgecolors="k", linewidths=0.6, label="open metal site (axial)", zorder=4)
        ax.set_xlabel("x (nm)")
        ax.set_ylabel("y (nm)" if j == 1 else "z (nm)")
        ax.set_title(title, fontsize=10)
        ax.set_aspect("equal")
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=7, fontsize=8, frameon=False)
    fig.suptitle(
        f"capped FeNi M3(BTC)2 slab, 1x1x1: {len(atoms)} atoms, {slab.n_formate} formate caps, "
        f"{slab.n_metal_sites_exposed} open sites ({slab.n_metal_sites_exposed // 2} per face), neutral (|q| < 1e-9 e), no z dipole",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(out, dpi=130)


if __name__ == "__main__":
    main(Path(__file__).with_name("mof_slab.png"))
