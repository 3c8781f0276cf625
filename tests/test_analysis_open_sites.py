import numpy as np
import pytest

from spemd.analysis.open_sites import OpenSiteOccupancy, site_types
from spemd.analysis.synthetic import _universe
from spemd.errors import ConfigError

BOX = (3.0, 3.0, 6.0)  # slab atoms span z 0..2 nm, the film 2..6 nm
F = 20


def _slab_atoms():
    grid = [(x, y) for x in (0.25, 1.25, 2.25) for y in (0.25, 1.25, 2.75)]
    btc = [(x, y, z) for x, y in grid for z in (0.0, 2.0)]
    metals = [  # (resname, position): surface paddlewheels in the face planes, one deep one with an axis along z
        ("FE", (0.5, 0.5, 2.0)), ("NI", (0.763, 0.5, 2.0)),      # top face, pw 1
        ("FE", (2.0, 2.0, 2.0)), ("NI", (2.263, 2.0, 2.0)),      # top face, pw 2
        ("FE", (0.5, 2.0, 0.0)), ("NI", (0.763, 2.0, 0.0)),      # bottom face
        ("FE", (1.5, 1.5, 0.8685)), ("NI", (1.5, 1.5, 1.1315)),  # deep: axial sites 0.65 nm below the faces
    ]
    return btc, metals


def _universe_with(ligands):
    """`ligands`: list of (resname, name, resid_key, positions (F, 3)); slab fixed in every frame."""
    btc, metals = _slab_atoms()
    pos, resn, names, resids = [], [], [], []
    for p in btc:
        pos.append(np.tile(p, (F, 1)))
        resn.append("BTC"), names.append("C1"), resids.append(0)
    for k, (rn, p) in enumerate(metals):
        pos.append(np.tile(p, (F, 1)))
        resn.append(rn), names.append(rn), resids.append(1 + k)
    base = 1 + len(metals)
    for rn, name, key, p in ligands:
        pos.append(np.asarray(p, dtype=float))
        resn.append(rn), names.append(name), resids.append(base + key)
    coords = np.stack(pos, axis=1)
    n_res = max(resids) + 1
    res_names = ["X"] * n_res
    for rid, rn in zip(resids, resn):
        res_names[rid] = rn
    return _universe(len(resids), coords, BOX, 1.0, resnames=res_names, names=names, resids=resids)


def _held(p_on, frames_on, p_off):
    out = np.tile(p_off, (F, 1)).astype(float)
    out[frames_on] = p_on
    return out


def _run(u, **kw):
    a = OpenSiteOccupancy(u.select_atoms("resname FE NI CU"), u.select_atoms("resname BTC FE NI CU"),
                          u.select_atoms("resname TFS and name O*"), u.select_atoms("resname TFS and name N1 F*"),
                          u.select_atoms("resname PEM and name O*"), **kw)
    return a.run().results


def test_hand_placed_occupancy_and_residence():
    ligands = [
        # anion 0: an O 0.2 nm above pw 1's Fe for frames 0-9, then in the film centre
        ("TFS", "O1", 0, _held((0.5, 0.5, 2.2), slice(0, 10), (1.5, 2.5, 4.0))),
        ("TFS", "N1", 0, np.tile((0.5, 0.5, 2.6), (F, 1))),
        # anion 1: an O 0.2 nm above pw 2's Ni all the time (0.33 nm from its Fe), an F 0.22 nm from the bottom Ni
        ("TFS", "O1", 1, np.tile((2.263, 2.0, 2.2), (F, 1))),
        ("TFS", "F1", 1, np.tile((0.763, 2.0, 5.78), (F, 1))),
        # an ether O 0.25 nm below the bottom Fe (0.36 nm from its Ni)
        ("PEM", "O1", 2, np.tile((0.5, 2.0, 5.75), (F, 1))),
    ]
    r = _run(_universe_with(ligands), r_site_nm=0.28)
    fe, ni = r.site_types["Fe(FeNi)"], r.site_types["Ni(FeNi)"]
    assert fe["n_sites"] == ni["n_sites"] == 3  # the deep paddlewheel is not a surface site
    assert fe["r_site_source"] == "configured" and fe["reason"] is None
    assert fe["occupancy"] == pytest.approx({"O_TFSI": 1 / 6, "NF_TFSI": 0.0, "O_ether": 1 / 3})
    assert ni["occupancy"] == pytest.approx({"O_TFSI": 1 / 3, "NF_TFSI": 1 / 3, "O_ether": 0.0})
    assert ni["occupancy_sem"]["O_TFSI"] == pytest.approx(0.0)
    assert fe["occupancy_sem"]["O_TFSI"] > 0  # occupied in the first half only: the blocks differ
    np.testing.assert_allclose(r.series["Fe(FeNi)"]["O_TFSI"], [1 / 3] * 10 + [0] * 10)
    # held for exactly 10 frames of 1 ps: C_C(k) = 1 - k/10, tau = 5 ps; the Ni site never lets go
    np.testing.assert_allclose(r.c_continuous["Fe(FeNi)"][:11], 1 - np.arange(11) / 10)
    assert fe["tau_continuous_ps"] == pytest.approx(5.0)
    assert not fe["tau_continuous_lower_bound"]
    assert ni["tau_continuous_ps"] == pytest.approx(F - 1.0) and ni["tau_continuous_lower_bound"]


@pytest.mark.parametrize("shell", ["TFS", "PEM"])
def test_radius_from_the_first_minimum_of_g(shell):
    # one O 0.2 nm from every surface metal (a sharp first shell; TFSI O or ether O, whichever fills it) and
    # many TFSI O spread in the film: the minimum lies between the shell and the spread, and the shell alone
    # gives the occupancy
    rng = np.random.default_rng(1)
    btc, metals = _slab_atoms()
    ligands, key = [], 0
    for rn, (x, y, z) in metals[:6]:
        up = 0.2 if z > 1 else -0.2
        ligands.append((shell, "O1", key, np.tile((x, y, (z + up) % BOX[2]), (F, 1))))
        key += 1
    for _ in range(150):
        p = np.c_[rng.random((F, 2)) * 3.0, 2.45 + rng.random(F) * 3.1]
        ligands.append(("TFS", "O1", key, p))
        key += 1
    r = _run(_universe_with(ligands))
    for t in ("Fe(FeNi)", "Ni(FeNi)"):
        s = r.site_types[t]
        assert s["r_site_source"].startswith("first minimum")
        assert 0.2 < s["r_site_nm"] < 0.33
        assert s["occupancy"]["O_TFSI"] == pytest.approx(1.0 if shell == "TFS" else 0.0)
        assert s["occupancy"].get("O_ether") == (None if shell == "TFS" else pytest.approx(1.0))  # no ether: no key


def test_no_surface_site_is_a_reason_not_a_number():
    u = _universe_with([("TFS", "O1", 0, np.tile((1.0, 1.0, 4.0), (F, 1)))])
    metals = u.select_atoms("resname FE NI and prop z > 5 and prop z < 15")  # the deep paddlewheel only
    a = OpenSiteOccupancy(metals, u.select_atoms("resname BTC FE NI"), u.select_atoms("resname TFS"),
                          u.select_atoms("resname TFS"))
    r = a.run().results
    assert "no surface open sites" in r.reason and r.site_types == {}


def test_site_type_names():
    u = _universe_with([("TFS", "O1", 0, np.tile((1.0, 1.0, 4.0), (F, 1)))])
    assert site_types(u.select_atoms("resname FE NI")[:2]) == ["Fe(FeNi)", "Ni(FeNi)"]
    assert site_types(u.select_atoms("resname FE")[:1]) == ["Fe"]


def test_fallback_radius_only_where_g_has_no_minimum():
    # TFSI O spread uniformly through the film: no first peak, so no minimum; the fallback radius then gives
    # the occupancy, checked against a direct count of sites with an O within it (minimum image)
    from MDAnalysis.lib.distances import distance_array

    rng = np.random.default_rng(4)
    ligands = [("TFS", "O1", k, np.c_[rng.random((F, 2)) * 3.0, 2.1 + rng.random(F) * 3.8]) for k in range(200)]
    u = _universe_with(ligands)
    r = _run(u)
    assert r.site_types["Fe(FeNi)"]["occupancy"] is None and "configure r_site_nm" in r.site_types["Fe(FeNi)"]["reason"]
    r = _run(u, r_site_fallback_nm=0.35)
    _, metals = _slab_atoms()
    sites = 10.0 * np.array([p for _, p in metals[:6]])  # the surface paddlewheels' metals, in A
    occupied = []
    for ts in u.trajectory:
        d = distance_array(sites, u.select_atoms("resname TFS").positions, box=ts.dimensions)
        occupied.append((d < 3.5).any(axis=1))
    occupied = np.mean(occupied, axis=0)  # per site, over frames
    for t, idx in (("Fe(FeNi)", [0, 2, 4]), ("Ni(FeNi)", [1, 3, 5])):
        s = r.site_types[t]
        assert s["r_site_nm"] == 0.35 and s["r_site_source"].startswith("fallback") and s["reason"] is None
        assert s["occupancy"]["O_TFSI"] == pytest.approx(occupied[idx].mean())
    assert 0 < occupied.mean() < 1
    with pytest.raises(ConfigError, match="r_site_fallback_nm"):
        _run(u, r_site_fallback_nm=0.9)
