"""What the builders, the force field and the analysis must agree on about the MOF slab (they may not
import one another): its residue names (the topology contract, docs/contracts.md) and the atomic radii
that define its z-extent, hence the electrolyte's volume that the builder compresses to and the
analysis normalises by."""

#: the slab's residues: BTC linkers, FMT formate surface caps (systems/mof.py), one-atom metal residues
MOF_RESIDUES = ("BTC", "FMT", "FE", "NI", "CU")

#: van der Waals radii (nm). H, C, N, O, F, S, Ni, Cu: Bondi, J. Phys. Chem. 68, 441 (1964), Table I.
#: Fe is not in Bondi's table; Ni's radius (the neighbouring element, same paddlewheel site) is used.
VDW_RADIUS_NM = {"H": 0.120, "C": 0.170, "N": 0.155, "O": 0.152, "F": 0.147, "S": 0.180,
                 "NI": 0.163, "FE": 0.163, "CU": 0.140}
