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
    return app.ForceField(str(mof.MOF_XML))


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


@pytest.mark.parametrize("key", [("FeNi", (1, 1, 1)), ("FeNi", (2, 1, 1)), ("Cu", (1, 1, 2))])
def test_slab_neutral_connected_and_scaled(slabs, key):
    slab = slabs[key]
    nx, ny, nz = key[1]
    n = nx * ny * nz
    top = slab.topology
    assert top.getNumAtoms() == 624 * n == len(slab.positions_nm)
    residues = Counter(r.name for r in top.residues())
    assert residues["BTC"] == 32 * n
    assert sum(residues[m] for m in ("FE", "NI", "CU")) == 48 * n  # 3 M per 2 BTC
    for res in top.residues():
        if res.name == "BTC":
            assert Counter(a.element.symbol for a in res.atoms()) == {"C": 9, "O": 6, "H": 3}
            assert len({a.name for a in res.atoms()}) == 18
        else:
            assert [a.name for a in res.atoms()] == [res.name]
    assert abs(slab.charge_e) < 1e-9
    assert _connected_components(top) == 1
    assert slab.box_x_nm == pytest.approx(2.6343 * nx) and slab.box_y_nm == pytest.approx(2.6343 * ny)
    z = slab.positions_nm[:, 2]
    assert z.min() == pytest.approx(0.0, abs=1e-12) and z.max() == pytest.approx(slab.thickness_nm, abs=1e-12)
    # thickness: exactly nz * a (the outermost atoms are the in-plane boundary paddlewheel metals)
    assert slab.thickness_nm == pytest.approx(2.6343 * nz, abs=1e-6)
    assert slab.n_metal_sites_exposed == 8 * nx * ny


@pytest.mark.parametrize("cells", [(1, 1, 1), (2, 1, 1), (1, 1, 2)])
@pytest.mark.parametrize("metal", mof.METALS)
def test_slab_has_no_z_dipole(metal, cells):
    """sum_i q_i z_i with the forcefields/mof.xml charges: a polar slab would put a field across the
    electrolyte of the z-periodic composite box."""
    slab = mof.build_slab(metal, cells)
    q = mof.template_charges()
    charges = np.array([q[a.residue.name][a.name] for a in slab.topology.atoms()])
    assert abs(charges.sum()) < 1e-9
    assert abs(float(charges @ slab.positions_nm[:, 2])) < 1e-6


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
        kinds = ["M" if a.residue.name != "BTC" else a.element.symbol for a in slab.topology.atoms()]
        assert [kinds[k] for k in nearest] == kinds


def test_slab_cut_is_the_neutral_symmetric_cut_nearest_nz_cells():
    a_nm = 2.6343
    for nz in (1, 2):
        cut, units = mof.slab_cut(nz)
        assert (cut.plane, cut.z0, cut.half_width) == ("mirror z=0", 0.0, 0.5 * nz)
        assert cut.partial_boundary and (cut.n_boundary_per_face, cut.n_boundary_layer) == (2, 4)
        assert Counter(u_.kind for u_, _ in units) == {"PW": 24 * nz, "BTC": 32 * nz}
        candidates = mof._cut_candidates(nz)
        # no cut of whole unit-centre layers is neutral (module doc): every candidate is partial
        assert candidates and all(c.partial_boundary for c, _ in candidates)
        assert all(abs(c.thickness_nm - nz * a_nm) >= abs(cut.thickness_nm - nz * a_nm) for c, _ in candidates)


def test_slab_bonds_are_chemical_and_cross_the_boundary(slabs):
    slab = slabs[("FeNi", (1, 1, 1))]
    lengths = _bond_lengths(slab)
    kinds = Counter()
    crossing = 0
    for a, b, d in lengths:
        pair = "".join(sorted(("M" if x.residue.name != "BTC" else x.element.symbol) for x in (a, b)))
        kinds[pair] += 1
        ref = {"MM": 0.263, "MO": 0.195, "CO": 0.125, "CH": 0.093, "CC": 0.145}[pair]
        assert d == pytest.approx(ref, abs=0.01), (pair, d)
        raw = np.linalg.norm(slab.positions_nm[a.index] - slab.positions_nm[b.index])
        crossing += raw > 0.5
    assert kinds["MM"] == 24
    assert kinds["CO"] == 6 * 32 and kinds["CH"] == 3 * 32 and kinds["CC"] == 9 * 32
    # 4 carboxylate O per metal, except the 8 face metals (4 per face) that kept 2 of their 4 carboxylates
    assert kinds["MO"] == 4 * 48 - 2 * 8
    assert crossing > 0  # some M-O bonds are only closed through the x/y periodic boundary
    # no non-bonded atom pair is at bonding distance (the bond list is complete)
    bonded = {frozenset((a.index, b.index)) for a, b, _ in lengths}
    box = np.array([slab.box_x_nm, slab.box_y_nm])
    pos = slab.positions_nm
    d = pos[:, None, :] - pos[None, :, :]
    d[..., :2] -= np.round(d[..., :2] / box) * box
    dist = np.linalg.norm(d, axis=2)
    is_metal = np.array([a.residue.name != "BTC" for a in slab.topology.atoms()])
    # organic bonds are < 0.16 nm (shortest organic non-bond, C...H 1-3, is 0.203 nm); metal bonds
    # M-O 0.195 and M-M 0.263 nm (shortest metal non-bond, M...C(carboxyl), is 0.284 nm)
    cutoff = np.where(is_metal[:, None] | is_metal[None, :], 0.275, 0.16)
    close = np.argwhere(np.triu(dist < cutoff, k=1))
    assert {frozenset(map(int, p)) for p in close} <= bonded


def test_feni_every_paddlewheel_has_one_fe_and_one_ni(slabs):
    for key in [("FeNi", (1, 1, 1)), ("FeNi", (2, 1, 1))]:
        slab = slabs[key]
        pairs = [
            {a.residue.name, b.residue.name}
            for a, b in slab.topology.bonds()
            if a.residue.name != "BTC" and b.residue.name != "BTC"
        ]
        assert len(pairs) == 24 * key[1][0]
        assert all(p == {"FE", "NI"} for p in pairs)
    # both kinds expose axial sites at both faces
    slab = slabs[("FeNi", (1, 1, 1))]
    partner = {}
    for a, b in slab.topology.bonds():
        if a.residue.name != "BTC" and b.residue.name != "BTC":
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
    assert faces == {("bottom", "FE"): 2, ("bottom", "NI"): 2, ("top", "FE"): 2, ("top", "NI"): 2}


def test_slab_masses(slabs):
    mass = {s: app.Element.getBySymbol(s).mass.value_in_unit(u.dalton) for s in ("Fe", "Ni", "Cu", "C", "O", "H")}
    btc = 9 * mass["C"] + 3 * mass["H"] + 6 * mass["O"]
    for metal in ("Fe", "Ni", "Cu"):
        assert slabs[(metal, (1, 1, 1))].mass_amu == pytest.approx(32 * btc + 48 * mass[metal], rel=1e-12)
    feni = slabs[("FeNi", (1, 1, 1))].mass_amu
    assert feni == pytest.approx(32 * btc + 24 * mass["Fe"] + 24 * mass["Ni"], rel=1e-12)
    assert slabs[("Cu", (1, 1, 2))].mass_amu == pytest.approx(2 * slabs[("Cu", (1, 1, 1))].mass_amu, rel=1e-12)


def test_build_is_deterministic():
    a = mof.build_slab("FeNi", (1, 1, 1))
    b = mof.build_slab("FeNi", (1, 1, 1))
    assert np.array_equal(a.positions_nm, b.positions_nm)
    assert [x.residue.name for x in a.topology.atoms()] == [x.residue.name for x in b.topology.atoms()]


# --------------------------------------------------------------------------------------------- force field


def test_xml_templates_charges_neutral_and_consistent():
    root = ET.parse(mof.MOF_XML).getroot()
    charges = {r.get("name"): {a.get("name"): float(a.get("charge")) for a in r.iter("Atom")} for r in root.iter("Residue")}
    btc = charges["BTC"]
    assert len(btc) == 18
    assert 3 * charges["CU"]["CU"] + 2 * sum(btc.values()) == pytest.approx(0.0, abs=1e-12)
    assert sum(btc.values()) == pytest.approx(-1.872, abs=1e-12)
    # every surface variant carries the base charges
    for name, q in charges.items():
        base = name.split("_")[0]
        assert q == charges[base], name
    assert charges["FE"]["FE"] == charges["NI"]["NI"] == charges["CU"]["CU"] == 1.248  # Cu proxy for Fe/Ni
    ext = {r.get("name"): len(r.findall("ExternalBond")) for r in root.iter("Residue")}
    assert ext["BTC"] == 6 and ext["FE"] == ext["NI"] == ext["CU"] == 5
    nb = {a.get("type"): (float(a.get("sigma")), float(a.get("epsilon"))) for a in root.find("NonbondedForce").iter("Atom")}
    assert nb["mof_Fe"] == (0.2594, 0.0544) and nb["mof_Cu"] == (0.3114, 0.0209) and nb["mof_O"] == (0.3118, 0.2510)


@pytest.mark.parametrize("metal", mof.METALS)
def test_createsystem_matches_every_residue_and_is_neutral(slabs, forcefield, metal):
    slab = slabs[(metal, (1, 1, 1))]
    system = forcefield.createSystem(slab.topology, nonbondedMethod=app.NoCutoff)
    assert system.getNumParticles() == slab.topology.getNumAtoms()
    nb = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    q = [nb.getParticleParameters(i)[0].value_in_unit(u.elementary_charge) for i in range(system.getNumParticles())]
    assert sum(q) == pytest.approx(0.0, abs=1e-9)
    assert sum(q) == pytest.approx(slab.charge_e, abs=1e-9)
    total_mass = sum(system.getParticleMass(i).value_in_unit(u.dalton) for i in range(system.getNumParticles()))
    assert total_mass == pytest.approx(slab.mass_amu, rel=1e-9)
    sigma_of = {"FE": 0.2594, "NI": 0.2525, "CU": 0.3114}
    for atom in slab.topology.atoms():
        charge, sigma, eps = nb.getParticleParameters(atom.index)
        if atom.residue.name in sigma_of:
            assert charge.value_in_unit(u.elementary_charge) == pytest.approx(1.248)
            assert sigma.value_in_unit(u.nanometer) == pytest.approx(sigma_of[atom.residue.name])
        elif atom.name.startswith("O"):
            assert charge.value_in_unit(u.elementary_charge) == pytest.approx(-0.624)
        elif atom.name in ("C1", "C3", "C5"):
            assert charge.value_in_unit(u.elementary_charge) == pytest.approx(0.130)
        elif atom.name in ("C2", "C4", "C6"):
            assert charge.value_in_unit(u.elementary_charge) == pytest.approx(-0.156)
        elif atom.name in ("C7", "C8", "C9"):
            assert charge.value_in_unit(u.elementary_charge) == pytest.approx(0.494)
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
