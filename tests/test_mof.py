"""M3(BTC)2 crystal, slab builder (systems/mof.py) and force field (forcefields/mof.xml)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter, deque

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import pytest

from spemd.errors import ConfigError
from spemd.units import density_g_per_cm3
from spemd.forcefields.library import load_forcefield
from spemd.systems import mof

A = mof.A_CELL_ANGSTROM
ELEMENT_OF = {"M": "M", "O": "O", "Ccarb": "C", "Cring": "C", "CH": "C", "H": "H"}


def _cell_distances():
    labels, frac = mof.unit_cell()
    d = frac[:, None, :] - frac[None, :, :]
    d -= np.round(d)
    dist = np.linalg.norm(d * A, axis=2)
    np.fill_diagonal(dist, np.inf)
    return np.asarray(labels), dist


def _nearest(labels, dist, a, b):
    return dist[np.ix_(labels == a, labels == b)].min(axis=1)


@pytest.fixture(scope="module")
def slabs():
    return {(metal, cells): mof.build_slab(metal, cells) for metal in mof.METALS for cells in [(1, 1, 1)]} | {
        ("FeNi", (2, 1, 1)): mof.build_slab("FeNi", (2, 1, 1)),
        ("Cu", (1, 1, 2)): mof.build_slab("Cu", (1, 1, 2)),
    }


@pytest.fixture(scope="module")
def forcefield():
    return load_forcefield([mof.MOF_XML])  # with its FeNi-Fe template matcher


# --------------------------------------------------------------------------------------------- crystal


def test_cell_atom_counts_by_element():
    labels, frac = mof.unit_cell()
    assert frac.shape == (624, 3)
    assert ((frac >= 0) & (frac < 1)).all()
    by_element = Counter(ELEMENT_OF[lab] for lab in labels)
    assert by_element == {"M": 48, "O": 192, "C": 288, "H": 96}
    assert Counter(labels)["Ccarb"] == Counter(labels)["Cring"] == Counter(labels)["CH"] == 96


def test_cell_geometry_metal_distances():
    labels, dist = _cell_distances()
    mm = _nearest(labels, dist, "M", "M")
    mo = _nearest(labels, dist, "M", "O")
    assert mm == pytest.approx(2.63, abs=0.02)
    assert mo == pytest.approx(1.95, abs=0.03)
    # every metal has exactly 4 carboxylate O at M-O distance and one M partner
    assert ((dist[np.ix_(labels == "M", labels == "O")] < 2.3).sum(axis=1) == 4).all()
    assert ((dist[np.ix_(labels == "M", labels == "M")] < 2.9).sum(axis=1) == 1).all()


def test_ring_carbon_roles():
    # Cring (0.322, 0.178, 0.887) carries the carboxylate, CH (0.3655, 0.1994, 0.8655) the H
    labels, dist = _cell_distances()
    assert _nearest(labels, dist, "Cring", "Ccarb") == pytest.approx(1.50, abs=0.02)
    assert _nearest(labels, dist, "CH", "H") == pytest.approx(0.93, abs=0.02)
    assert _nearest(labels, dist, "Cring", "CH") == pytest.approx(1.40, abs=0.02)
    assert _nearest(labels, dist, "CH", "Ccarb").min() > 2.4
    assert _nearest(labels, dist, "Cring", "H").min() > 1.9


def test_cu_cell_density():
    labels, _ = mof.unit_cell()
    mass_of = {s: app.Element.getBySymbol(s).mass.value_in_unit(u.dalton) for s in ("Cu", "C", "O", "H")}
    mass = sum(mass_of["Cu" if lab == "M" else ELEMENT_OF[lab]] for lab in labels)
    rho = density_g_per_cm3(mass, (A / 10.0) ** 3)
    assert rho == pytest.approx(0.88, abs=0.02)
    assert mof.cell_density_g_cm3("Cu") == pytest.approx(rho, rel=1e-12)
    # lighter metals, lighter framework (same cell)
    assert mof.cell_density_g_cm3("Fe") < mof.cell_density_g_cm3("FeNi") < mof.cell_density_g_cm3("Ni") < rho


# --------------------------------------------------------------------------------------------- slab


def _connected_components(top):
    adj = [[] for _ in range(top.getNumAtoms())]
    for a, b in top.bonds():
        adj[a.index].append(b.index)
        adj[b.index].append(a.index)
    seen = [False] * len(adj)
    n = 0
    for s in range(len(adj)):
        if seen[s]:
            continue
        n += 1
        seen[s] = True
        queue = deque([s])
        while queue:
            i = queue.popleft()
            for j in adj[i]:
                if not seen[j]:
                    seen[j] = True
                    queue.append(j)
    return n


def _bond_lengths(slab):
    box = np.array([slab.box_x_nm, slab.box_y_nm])
    out = []
    for a, b in slab.topology.bonds():
        d = slab.positions_nm[a.index] - slab.positions_nm[b.index]
        d[:2] -= np.round(d[:2] / box) * box
        out.append((a, b, float(np.linalg.norm(d))))
    return out


METAL_RES = ("FE", "NI", "CU")


def _kind(atom):
    return "M" if atom.residue.name in METAL_RES else atom.element.symbol


@pytest.mark.parametrize("key", [("FeNi", (1, 1, 1)), ("FeNi", (2, 1, 1)), ("Cu", (1, 1, 2))])
def test_slab_neutral_connected_and_scaled(slabs, key):
    slab = slabs[key]
    nx, ny, nz = key[1]
    n, area = nx * ny * nz, nx * ny
    top = slab.topology
    # nz cells of framework, plus per cell area the 4 outermost paddlewheels of the second face
    # (8 metals) and 16 formate caps (8 per face)
    assert top.getNumAtoms() == 624 * n + 8 * area + 4 * 16 * area == len(slab.positions_nm)
    residues = Counter(r.name for r in top.residues())
    assert residues["BTC"] == 32 * n
    assert residues["FMT"] == slab.n_formate == 16 * area
    assert sum(residues[m] for m in METAL_RES) == 48 * n + 8 * area
    for res in top.residues():
        if res.name == "BTC":
            assert Counter(a.element.symbol for a in res.atoms()) == {"C": 9, "O": 6, "H": 3}
            assert len({a.name for a in res.atoms()}) == 18
        elif res.name == "FMT":
            assert [a.name for a in res.atoms()] == ["C", "O1", "O2", "H"]
        else:
            assert [a.name for a in res.atoms()] == [res.name]
    assert abs(slab.charge_e) < 1e-6
    assert _connected_components(top) == 1
    assert slab.box_x_nm == pytest.approx(2.6343 * nx) and slab.box_y_nm == pytest.approx(2.6343 * ny)
    z = slab.positions_nm[:, 2]
    assert z.min() == pytest.approx(0.0, abs=1e-12) and z.max() == pytest.approx(slab.thickness_nm, abs=1e-12)
    # the metals span exactly nz * a (outermost: the in-plane face paddlewheels); the formate H stick
    # out 0.266 nm beyond them on each face
    metal_z = z[[a.index for a in top.atoms() if a.residue.name in METAL_RES]]
    assert np.ptp(metal_z) == pytest.approx(2.6343 * nz, abs=1e-6)
    assert slab.thickness_nm == pytest.approx(2.6343 * nz + 2 * 0.2659, abs=1e-3)
    assert slab.n_metal_sites_exposed == 16 * nx * ny


@pytest.mark.parametrize("cells", [(1, 1, 1), (2, 1, 1), (1, 1, 2)])
@pytest.mark.parametrize("metal", mof.METALS)
def test_slab_is_neutral_with_no_z_dipole(metal, cells):
    """sum_i q_i and sum_i q_i z_i with the forcefields/mof.xml charges: a polar slab would put a field
    across the electrolyte of the z-periodic composite box."""
    slab = mof.build_slab(metal, cells)
    q_type = mof.type_charges()
    charges = np.array([q_type[t] for t in slab.atom_types])
    assert np.array_equal(charges, slab.charges_e)
    assert abs(charges.sum()) < 1e-6
    assert abs(float(charges @ (slab.positions_nm[:, 2] - 0.5 * slab.thickness_nm))) < 1e-6
    # the caps carry charge: without the formates the slab would be -0.549 e per cap
    fmt = np.array([a.residue.name == "FMT" for a in slab.topology.atoms()])
    assert charges[fmt].sum() == pytest.approx(-0.549 * slab.n_formate, abs=1e-9)


def test_slab_faces_are_mirror_images(slabs):
    """Every atom at (x, y, z) has an atom of the same element (metal: any metal) at (x, y, thickness - z)."""
    for key in [("FeNi", (1, 1, 1)), ("Cu", (1, 1, 2))]:
        slab = slabs[key]
        box = np.array([slab.box_x_nm, slab.box_y_nm])
        pos = slab.positions_nm
        mirrored = pos * [1.0, 1.0, -1.0] + [0.0, 0.0, slab.thickness_nm]
        d = mirrored[:, None, :] - pos[None, :, :]
        d[..., :2] -= np.round(d[..., :2] / box) * box
        nearest = np.linalg.norm(d, axis=2).argmin(axis=1)
        assert np.linalg.norm(d[np.arange(len(pos)), nearest], axis=1).max() < 1e-6
        # metals as "M": the FeNi Fe/Ni pattern is not mirrored, their charges and positions are
        kinds = [_kind(a) for a in slab.topology.atoms()]
        assert [kinds[k] for k in nearest] == kinds


def test_slab_cut_is_the_capped_neutral_symmetric_cut_nearest_nz_cells():
    a_nm = 2.6343
    for nz in (1, 2):
        cut, units = mof.slab_cut(nz)
        assert (cut.plane, cut.z0, cut.half_width, cut.n_formate) == ("mirror z=0", 0.0, 0.5 * nz, 16)
        # whole layers: nz cells plus the second face's outermost paddlewheel layer (4 per cell area)
        assert Counter(u_.kind for u_, _ in units) == {"PW": 24 * nz + 4, "BTC": 32 * nz}
        assert cut.thickness_nm == pytest.approx(nz * a_nm, abs=1e-9)
        candidates = mof._cut_candidates(nz)
        # linker-terminated cuts leave free carboxylates and are not candidates; every paddlewheel-
        # terminated one is neutral once capped
        assert len(candidates) == 2 * (2 * nz + 3)  # paddlewheel layers every a/4 up to nz/2 + 1/2
        assert all(abs(c.thickness_nm - nz * a_nm) >= abs(cut.thickness_nm - nz * a_nm) for c, _ in candidates)


def test_slab_bonds_are_chemical_and_cross_the_boundary(slabs):
    slab = slabs[("FeNi", (1, 1, 1))]
    lengths = _bond_lengths(slab)
    kinds = Counter()
    crossing = 0
    for a, b, d in lengths:
        pair = "".join(sorted(_kind(x) for x in (a, b)))
        if "FMT" in (a.residue.name, b.residue.name) and pair == "CH":
            pair = "CH(formate)"
        kinds[pair] += 1
        ref = {"MM": 0.263, "MO": 0.195, "CO": 0.125, "CH": 0.093, "CC": 0.145, "CH(formate)": 0.109}[pair]
        assert d == pytest.approx(ref, abs=0.01), (pair, d)
        raw = np.linalg.norm(slab.positions_nm[a.index] - slab.positions_nm[b.index])
        crossing += raw > 0.5
    n_metal = 56
    assert kinds["MM"] == n_metal // 2
    assert kinds["CO"] == 6 * 32 + 2 * 16 and kinds["CH"] == 3 * 32 and kinds["CC"] == 9 * 32 and kinds["CH(formate)"] == 16
    # capped: every metal keeps all 4 carboxylate O (linkers or formates)
    assert kinds["MO"] == 4 * n_metal
    assert crossing > 0  # some M-O bonds are only closed through the x/y periodic boundary
    # no non-bonded atom pair is at bonding distance (the bond list is complete)
    bonded = {frozenset((a.index, b.index)) for a, b, _ in lengths}
    box = np.array([slab.box_x_nm, slab.box_y_nm])
    pos = slab.positions_nm
    d = pos[:, None, :] - pos[None, :, :]
    d[..., :2] -= np.round(d[..., :2] / box) * box
    dist = np.linalg.norm(d, axis=2)
    is_metal = np.array([a.residue.name in METAL_RES for a in slab.topology.atoms()])
    # organic bonds are < 0.16 nm (shortest organic non-bond, C...H 1-3, is 0.203 nm); metal bonds
    # M-O 0.195 and M-M 0.263 nm (shortest metal non-bond, M...C(carboxyl), is 0.284 nm)
    cutoff = np.where(is_metal[:, None] | is_metal[None, :], 0.275, 0.16)
    close = np.argwhere(np.triu(dist < cutoff, k=1))
    assert {frozenset(map(int, p)) for p in close} <= bonded


def test_formate_caps_geometry_and_placement(slabs):
    """Formate (HCOO-) caps against the formate ion: C-O 1.25-1.26 A, O-C-O ~125-130 degrees
    (e.g. sodium formate), C-H 1.09-1.10 A; each bridges the two metals of one paddlewheel, as the
    linker carboxylate it replaces, and its H points out of the slab."""
    slab = slabs[("FeNi", (1, 1, 1))]
    pos = slab.positions_nm * 10.0  # Angstrom
    box = np.array([slab.box_x_nm, slab.box_y_nm]) * 10.0
    mid = 0.5 * slab.thickness_nm * 10.0

    def vec(i, j):
        d = pos[j] - pos[i]
        d[:2] -= np.round(d[:2] / box) * box
        return d

    metal_of = {}
    partner = {}
    for a, b in slab.topology.bonds():
        if a.residue.name in METAL_RES and b.residue.name in METAL_RES:
            partner[a.index], partner[b.index] = b.index, a.index
        for x, y in ((a, b), (b, a)):
            if x.residue.name == "FMT" and y.residue.name in METAL_RES:
                metal_of[x.index] = y.index
    n = 0
    for res in slab.topology.residues():
        if res.name != "FMT":
            continue
        at = {a.name: a.index for a in res.atoms()}
        c, o1, o2, h = at["C"], at["O1"], at["O2"], at["H"]
        assert np.linalg.norm(vec(c, o1)) == pytest.approx(1.25, abs=0.01)
        assert np.linalg.norm(vec(c, o2)) == pytest.approx(1.25, abs=0.01)
        assert np.linalg.norm(vec(c, h)) == pytest.approx(1.09, abs=0.005)
        u1, u2 = vec(c, o1), vec(c, o2)
        angle = np.degrees(np.arccos(u1 @ u2 / np.linalg.norm(u1) / np.linalg.norm(u2)))
        assert 122 < angle < 130
        assert partner[metal_of[o1]] == metal_of[o2]  # bridges one paddlewheel
        assert abs(pos[h, 2] - mid) > abs(pos[c, 2] - mid)  # H points away from the slab centre
        n += 1
    assert n == 16


def test_open_metal_sites_per_face_stay_open(slabs):
    """8 exposed open sites per face per cell area (4 in-plane paddlewheels x 2 metals), no atom on
    any of them: the nearest atom to the axial point is one of the metal's own carboxylate O."""
    for key in [("Fe", (1, 1, 1)), ("FeNi", (2, 1, 1))]:
        slab = slabs[key]
        area = key[1][0] * key[1][1]
        pos = slab.positions_nm
        box = np.array([slab.box_x_nm, slab.box_y_nm])
        partner = {}
        for a, b in slab.topology.bonds():
            if a.residue.name in METAL_RES and b.residue.name in METAL_RES:
                partner[a.index], partner[b.index] = b.index, a.index
        faces = Counter()
        for i, j in partner.items():
            axis = (pos[i] - pos[j]) / np.linalg.norm(pos[i] - pos[j])
            site = pos[i] + mof.AXIAL_SITE_NM * axis
            if mof.EXPOSED_FACE_NM < site[2] < slab.thickness_nm - mof.EXPOSED_FACE_NM:
                continue
            faces["top" if site[2] > slab.thickness_nm / 2 else "bottom"] += 1
            d = pos - site
            d[:, :2] -= np.round(d[:, :2] / box) * box
            r = np.linalg.norm(d, axis=1)
            r[i] = np.inf
            assert r.min() > 0.30
        assert faces == {"top": 8 * area, "bottom": 8 * area}
        assert slab.n_metal_sites_exposed == 16 * area


def test_feni_every_paddlewheel_has_one_fe_and_one_ni(slabs):
    for key in [("FeNi", (1, 1, 1)), ("FeNi", (2, 1, 1))]:
        slab = slabs[key]
        pairs = [
            {a.residue.name, b.residue.name}
            for a, b in slab.topology.bonds()
            if a.residue.name in METAL_RES and b.residue.name in METAL_RES
        ]
        assert len(pairs) == 28 * key[1][0]
        assert all(p == {"FE", "NI"} for p in pairs)
    # both kinds expose axial sites at both faces
    slab = slabs[("FeNi", (1, 1, 1))]
    partner = {}
    for a, b in slab.topology.bonds():
        if a.residue.name in METAL_RES and b.residue.name in METAL_RES:
            partner[a.index], partner[b.index] = b.index, a.index
    faces = Counter()
    pos = slab.positions_nm
    for i, j in partner.items():
        axis = (pos[i] - pos[j]) / np.linalg.norm(pos[i] - pos[j])
        site_z = pos[i, 2] + mof.AXIAL_SITE_NM * axis[2]
        name = next(a for a in slab.topology.atoms() if a.index == i).residue.name
        if site_z <= 0.3:
            faces[("bottom", name)] += 1
        elif site_z >= slab.thickness_nm - 0.3:
            faces[("top", name)] += 1
    assert faces == {("bottom", "FE"): 4, ("bottom", "NI"): 4, ("top", "FE"): 4, ("top", "NI"): 4}


def test_slab_masses(slabs):
    mass = {s: app.Element.getBySymbol(s).mass.value_in_unit(u.dalton) for s in ("Fe", "Ni", "Cu", "C", "O", "H")}
    btc = 9 * mass["C"] + 3 * mass["H"] + 6 * mass["O"]
    caps = 16 * (mass["C"] + mass["H"] + 2 * mass["O"])  # HCOO
    for metal in ("Fe", "Ni", "Cu"):
        assert slabs[(metal, (1, 1, 1))].mass_amu == pytest.approx(32 * btc + 56 * mass[metal] + caps, rel=1e-12)
    feni = slabs[("FeNi", (1, 1, 1))].mass_amu
    assert feni == pytest.approx(32 * btc + 28 * mass["Fe"] + 28 * mass["Ni"] + caps, rel=1e-12)
    cu1, cu2 = slabs[("Cu", (1, 1, 1))].mass_amu, slabs[("Cu", (1, 1, 2))].mass_amu
    assert cu2 - cu1 == pytest.approx(32 * btc + 48 * mass["Cu"], rel=1e-12)  # one more cell of framework


def test_build_is_deterministic():
    a = mof.build_slab("FeNi", (1, 1, 1))
    b = mof.build_slab("FeNi", (1, 1, 1))
    assert np.array_equal(a.positions_nm, b.positions_nm)
    assert [x.residue.name for x in a.topology.atoms()] == [x.residue.name for x in b.topology.atoms()]


# --------------------------------------------------------------------------------------------- force field


#: Castillo, Vlugt & Calero, J. Phys. Chem. C 112 (2008) 15934 (Cu-BTC); Fe/Ni take the Cu value.
CASTILLO = {"mof_Cu": 1.098, "mof_Fe": 1.098, "mof_FeNiFe": 1.098, "mof_Ni": 1.098, "mof_O": -0.665, "mof_Ccarb": 0.778,
            "mof_Cring": -0.092, "mof_CH": -0.014, "mof_H": 0.109}  # fmt: skip


def test_xml_charge_table_is_castillo_and_neutral():
    root = ET.parse(mof.MOF_XML).getroot()
    nb = {a.get("type"): a.attrib for a in root.find("NonbondedForce").iter("Atom")}
    q = {t: float(a["charge"]) for t, a in nb.items()}
    assert {t: q[t] for t in CASTILLO} == CASTILLO
    assert q["mof_Hfmt"] == pytest.approx(0.003, abs=1e-12)  # formate: the rest of its formal -1 (-0.549 e)
    assert set(q) == set(CASTILLO) | {"mof_Hfmt"}
    btc = sum(q[t] for t in mof.BTC_TYPES.values())
    assert btc == pytest.approx(-1.647, abs=1e-12)
    assert 3 * q["mof_Cu"] + 2 * btc == pytest.approx(0.0, abs=1e-12)
    assert sum(q[t] for t in mof.FMT_TYPES.values()) == pytest.approx(-q["mof_Cu"] / 2, abs=1e-12)
    # the old unsourced set (Cu 1.248, O -0.624, ...) is gone, and charges live in one table only
    assert not any("charge" in a.attrib for a in root.iter("Residues") for a in a.iter("Atom"))
    assert root.find("NonbondedForce").find("UseAttributeFromResidue") is None
    assert "Castillo" in ET.tostring(root, encoding="unicode") or "Castillo" in mof.MOF_XML.read_text()
    ext = {r.get("name"): len(r.findall("ExternalBond")) for r in root.iter("Residue")}
    assert ext == {"BTC": 6, "FMT": 2, "FE": 5, "FE_FENI": 5, "NI": 5, "CU": 5}
    lj = {t: (float(a["sigma"]), float(a["epsilon"])) for t, a in nb.items()}
    assert lj["mof_Fe"] == lj["mof_FeNiFe"] == (0.2594, 0.0544) and lj["mof_Cu"] == (0.3114, 0.0209) and lj["mof_O"] == (0.3118, 0.2510)


@pytest.mark.parametrize("metal", mof.METALS)
def test_createsystem_matches_every_residue_and_is_neutral(slabs, forcefield, metal):
    slab = slabs[(metal, (1, 1, 1))]
    system = forcefield.createSystem(slab.topology, nonbondedMethod=app.NoCutoff)
    assert system.getNumParticles() == slab.topology.getNumAtoms()
    nb = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    q = np.array([nb.getParticleParameters(i)[0].value_in_unit(u.elementary_charge) for i in range(system.getNumParticles())])
    assert q.sum() == pytest.approx(0.0, abs=1e-6)
    assert np.allclose(q, slab.charges_e, atol=1e-12)  # the builder's charges are what OpenMM assigns
    total_mass = sum(system.getParticleMass(i).value_in_unit(u.dalton) for i in range(system.getNumParticles()))
    assert total_mass == pytest.approx(slab.mass_amu, rel=1e-9)
    sigma_of = {"FE": 0.2594, "NI": 0.2525, "CU": 0.3114}
    for atom in slab.topology.atoms():
        charge, sigma, _ = nb.getParticleParameters(atom.index)
        charge = charge.value_in_unit(u.elementary_charge)
        if atom.residue.name in sigma_of:
            assert charge == pytest.approx(1.098)
            assert sigma.value_in_unit(u.nanometer) == pytest.approx(sigma_of[atom.residue.name])
        elif atom.name.startswith("O"):
            assert charge == pytest.approx(-0.665)
        elif atom.residue.name == "BTC":
            ref = {"C1": -0.092, "C3": -0.092, "C5": -0.092, "C2": -0.014, "C4": -0.014, "C6": -0.014, "C7": 0.778, "C8": 0.778, "C9": 0.778}
            assert charge == pytest.approx(ref.get(atom.name, 0.109))
        else:
            assert charge == pytest.approx({"C": 0.778, "H": 0.003}[atom.name])
    # no bonded forces: the framework is rigid
    assert not any(isinstance(f, (openmm.HarmonicBondForce, openmm.HarmonicAngleForce)) for f in system.getForces())


# --------------------------------------------------------------------------------------------- errors


def test_unknown_metal_names_key_and_allowed_values():
    with pytest.raises(ConfigError) as exc:
        mof.build_slab("Co", (1, 1, 1))
    msg = str(exc.value)
    assert "mof_metal" in msg and "'Co'" in msg
    assert all(f"'{m}'" in msg for m in mof.METALS)
    assert "\n" not in msg


@pytest.mark.parametrize("cells", [(0, 1, 1), (1, 1), (1.5, 1, 1), "abc"])
def test_bad_cells(cells):
    with pytest.raises(ConfigError, match="mof_cells"):
        mof.build_slab("Cu", cells)
