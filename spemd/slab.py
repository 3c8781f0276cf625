"""What the builders, the force field and the analysis must agree on about the MOF slab (they may not
import one another): its residue names (the topology contract, docs/contracts.md) and the atomic radii
that define its z-extent (the region the builder fills) and, with the Na+ radius, the power diagram of
the analysis's occupied volume."""

#: the slab's residues: BTC linkers, FMT formate surface caps (systems/mof.py), one-atom metal residues
MOF_RESIDUES = ("BTC", "FMT", "FE", "NI", "CU")

#: van der Waals radii (nm). H, C, N, O, F, S, Ni, Cu: Bondi, J. Phys. Chem. 68, 441 (1964), Table I.
#: Fe is not in Bondi's table; Ni's radius (the neighbouring element, same paddlewheel site) is used.
VDW_RADIUS_NM = {"H": 0.120, "C": 0.170, "N": 0.155, "O": 0.152, "F": 0.147, "S": 0.180,
                 "NI": 0.163, "FE": 0.163, "CU": 0.140}

#: The film-centre band of a slab box (spemd.analysis.volume) starts this far (nm) from the slab's
#: outermost atom centres: the first adsorbed layer (centres within ~0.5 nm of the face on the default
#: CPE box) and the pore mouths stay outside it, so the band holds the film's bulk.
FILM_CENTRE_CLEARANCE_NM = 0.6
