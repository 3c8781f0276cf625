import numpy as np
import pytest

from spemd.analysis.speciation import Speciation
from spemd.analysis.synthetic import _universe
from spemd.errors import ConfigError

BOX = (3.0, 3.0, 6.0)  # slab atom centres at z 0..2 nm (resname BTC); film 2..6 nm


def _universe_with(na, anions, F=10, slab=True):
    """`na`: list of positions; `anions`: list of lists of O positions (one list per anion); fixed frames."""
    pos, resn, names, resids = [], [], [], []
    slab_atoms = [(x, y, z) for x in (0.5, 1.5, 2.5) for y in (0.5, 1.5, 2.5) for z in (0.0, 2.0)] if slab else []
    for p in slab_atoms:
        pos.append(p), resn.append("BTC"), names.append("C1"), resids.append(0)
    for k, p in enumerate(na):
        pos.append(p), resn.append("NA"), names.append("NA"), resids.append(1 + k)
    for a, oxygens in enumerate(anions):
        for p in oxygens:
            pos.append(p), resn.append("TFS"), names.append("O1"), resids.append(1 + len(na) + a)
    n_res = max(resids) + 1
    res_names = ["BTC"] + ["NA"] * len(na) + ["TFS"] * len(anions)
    coords = np.tile(np.asarray(pos, dtype=float), (F, 1, 1))
    return _universe(len(pos), coords, BOX, 1.0, resnames=res_names[:n_res], names=names, resids=resids)


def _run(u, rc=0.3, slab=True, **kw):
    return Speciation(u.select_atoms("resname NA"), u.select_atoms("resname TFS and name O*"), rc,
                      slab=u.select_atoms("resname BTC") if slab else None, **kw).run().results


NA = [(0.5, 0.5, 2.3), (1.5, 1.5, 2.6), (1.5, 0.5, 4.05), (2.5, 2.5, 4.1)]  # face distances 0.3, 0.6, 1.95, 1.9
ANIONS = [
    [(0.5, 0.5, 2.5), (0.5, 0.7, 2.9)],  # 0.2 nm from Na0: Na0 CIP
    [(2.5, 2.5, 4.3)],                   # Na3 with two anions: AGG
    [(2.3, 2.5, 4.1)],
    [(1.0, 2.5, 5.0)],                   # free anion
    [(2.0, 0.5, 3.0)],                   # free anion
]


def test_hand_placed_speciation_by_distance():
    r = _run(_universe_with(NA, ANIONS))
    assert r.reason is None
    frac = {k: v[0] for k, v in r.fractions.items()}
    assert frac == pytest.approx({"free": 0.5, "CIP": 0.25, "AGG": 0.25, "free_TFSI": 2 / 5})
    assert r.na_per_bin.sum() == 40  # 4 ions x 10 frames
    at = {d: np.searchsorted(r.edges_nm, d, side="right") - 1 for d in (0.3, 0.6, 1.9)}
    assert r.na_per_bin[at[0.3]] == r.na_per_bin[at[0.6]] == 10 and r.na_per_bin[at[1.9]] == 20
    assert r.by_distance["CIP"][at[0.3]] == pytest.approx(1.0)
    assert r.by_distance["free"][at[0.6]] == pytest.approx(1.0)
    assert r.by_distance["AGG"][at[1.9]] == pytest.approx(0.5) and r.by_distance["free"][at[1.9]] == pytest.approx(0.5)
    assert np.all(np.isnan(r.by_distance["free"][r.na_per_bin == 0]))  # no ion there: no fraction


def test_plain_box_gives_overall_fractions_only():
    r = _run(_universe_with(NA, ANIONS, slab=False), slab=False)
    assert r.fractions["free_TFSI"][0] == pytest.approx(2 / 5)
    assert "by_distance" not in r


def test_null_shell_radius_is_refused_with_reason():
    r = _run(_universe_with(NA, ANIONS), rc=None)
    assert r.fractions is None and "first-shell radius" in r.reason
    with pytest.raises(ConfigError, match="shell_radius_nm"):
        _run(_universe_with(NA, ANIONS), rc=-0.1)


def test_free_fractions_against_the_cutoff_step_at_each_contact_distance():
    # Na+ i with its one anion O at 0.302, 0.353 and 0.421 nm (off the grid's 5 pm steps); a fourth Na+
    # and a fourth anion far from all
    na = [(0.5, 0.5, 1.0), (1.5, 0.5, 3.0), (2.5, 1.5, 5.0), (1.5, 2.5, 2.0)]
    anions = [[(0.5, 0.5, 1.302)], [(1.5, 0.5, 3.353)], [(2.5, 1.5, 5.421)], [(0.5, 2.5, 4.0)]]
    r = _run(_universe_with(na, anions, slab=False), rc=None, slab=False)
    assert r.fractions is None  # no radius: no classes, but the curves are there
    grid = r.cutoff_grid_nm
    contacts = np.array([0.302, 0.353, 0.421])
    beyond = (contacts[None, :] > grid[:, None]).sum(axis=1)  # contacts still beyond the cutoff
    np.testing.assert_allclose(r.free_vs_cutoff["free_Na"][0], (1 + beyond) / 4, atol=1e-12)
    np.testing.assert_allclose(r.free_vs_cutoff["free_TFSI"][0], (1 + beyond) / 4, atol=1e-12)
    # at a grid radius the curve equals the classification's free fractions (hand-placed case above)
    r = _run(_universe_with(NA, ANIONS), rc=0.3)
    k = int(np.argmin(np.abs(r.cutoff_grid_nm - 0.3)))
    assert r.free_vs_cutoff["free_Na"][0][k] == pytest.approx(r.fractions["free"][0])
    assert r.free_vs_cutoff["free_TFSI"][0][k] == pytest.approx(r.fractions["free_TFSI"][0])
