import numpy as np
import pytest

from spemd.analysis.pairing import IonPairing, residence_correlations, residence_time
from spemd.analysis.synthetic import _universe


def _pair_universe():
    # 3 Na, 3 anions of 2 O atoms each; box 4 nm; 2 frames
    na = np.array([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [3.5, 3.5, 0.5]])
    o = np.array([[1.2, 1.0, 1.0], [0.5, 0.2, 0.2],     # anion 0: one O at 0.2 nm from Na0 -> CIP
                  [2.2, 2.0, 2.0], [3.0, 3.0, 3.0],     # anion 1: O near Na1
                  [2.0, 1.8, 2.0], [1.0, 3.0, 3.0]])    # anion 2: O near Na1 too -> AGG; Na2 free
    pos = np.concatenate([na, o])[None].repeat(2, axis=0)
    resids = [0, 1, 2, 3, 3, 4, 4, 5, 5]
    return _universe(9, pos, (4.0, 4.0, 4.0), 1.0, resnames=["NA"] * 3 + ["TFS"] * 3,
                     names=["NA"] * 3 + ["O1", "O2"] * 3, resids=resids)


def test_free_cip_agg_fractions():
    u = _pair_universe()
    r = IonPairing(u.select_atoms("resname NA"), u.select_atoms("resname TFS"), 0.25).run().results
    assert (r.free_fraction, r.cip_fraction, r.agg_fraction) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert r.mean_bound_oxygens == pytest.approx(1.0)
    assert r.anion_count_histogram[:3] == pytest.approx([1 / 3, 1 / 3, 1 / 3])


def test_residence_correlations_by_hand():
    # one pair bound in frames 0,1,2,4 (out in 3); a second never bound is absent
    frames = [np.array([7]), np.array([7]), np.array([7]), np.array([], dtype=int), np.array([7])]
    cc, ci = residence_correlations(frames)
    np.testing.assert_allclose(cc, [1, 2 / 3, 1 / 3, 0, 0])
    np.testing.assert_allclose(ci, [1, 2 / 3, 2 / 3, 1 / 2, 1])
    tau, lower = residence_time(np.arange(5.0), cc)
    assert tau == pytest.approx(0.5 * (1 + 2 / 3) + 0.5 * (2 / 3 + 1 / 3) + 0.5 * (1 / 3))
    assert not lower


def test_rejects_bad_cutoff():
    u = _pair_universe()
    from spemd.errors import ConfigError

    with pytest.raises(ConfigError, match="cutoff_nm"):
        IonPairing(u.select_atoms("resname NA"), u.select_atoms("resname TFS"), float("nan"))
