import csv
import json
from pathlib import Path

import numpy as np
import pytest

from spemd.analysis._common import load_universe
from spemd.analysis.interface import analyse_interface
from spemd.analysis.pairing import IonPairing
from spemd.analysis.synthetic import _universe

DATA = Path(__file__).parent / "data"


def test_plain_box_gets_the_free_anion_fraction_only(tmp_path):
    u = load_universe(DATA / "tiny_electrolyte.pdb", DATA / "tiny_electrolyte.dcd")
    out = analyse_interface(u, tmp_path, 0.3, 353.0, extra={"system": "PEO"})
    on_disk = json.loads((tmp_path / "interface.json").read_text())
    assert on_disk["composite"] is False and "not a composite" in on_disk["not_composite_reason"]
    assert on_disk["open_sites"] is on_disk["profiles"] is on_disk["layer_diffusion"] is None
    assert on_disk["provenance"]["packages"]
    # the Na+ classes computed a second way: analysis/pairing.py with the same shell
    p = IonPairing(u.select_atoms("resname NA"), u.select_atoms("resname TFS and name O*"), 0.3,
                   residence=False).run().results
    sp = out["speciation"]
    assert sp["free_fraction"] == pytest.approx(p.free_fraction)
    assert sp["cip_fraction"] == pytest.approx(p.cip_fraction)
    assert 0 < sp["free_tfsi_fraction"] < 1 and sp["free_tfsi_fraction_sem"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["interface.json", "speciation_free_vs_cutoff.csv"]
    # the curve at 0.3 nm is the record's free fractions
    rows = {round(float(r["cutoff (nm)"]), 4): r for r in csv.DictReader((tmp_path / "speciation_free_vs_cutoff.csv").open())}
    assert float(rows[0.3]["free TFSI- fraction"]) == pytest.approx(sp["free_tfsi_fraction"], rel=1e-6)
    assert float(rows[0.3]["free Na+ fraction"]) == pytest.approx(p.free_fraction, rel=1e-6)


def test_null_shell_radius_is_refused_in_the_record(tmp_path):
    u = load_universe(DATA / "tiny_electrolyte.pdb", DATA / "tiny_electrolyte.dcd")
    sp = analyse_interface(u, tmp_path, None, 353.0)["speciation"]
    assert sp["shell_radius_nm"] is None and "first-shell radius" in sp["reason"]
    assert "free_tfsi_fraction" not in sp


def _composite(F=30, seed=0):
    """A slab (z 0..2 nm, one surface paddlewheel per face, BTC atoms) and a film of Na, TFSI (N1, O1, F1), ether O."""
    rng = np.random.default_rng(seed)
    box = (3.0, 3.0, 6.0)
    fixed = [("BTC", "C1", (x, y, z)) for x in (0.25, 1.25, 2.25) for y in (0.25, 1.25, 2.25) for z in (0.0, 2.0)]
    fixed += [("FE", "FE", (0.5, 0.5, 2.0)), ("NI", "NI", (0.763, 0.5, 2.0)),
              ("FE", "FE", (2.0, 2.0, 0.0)), ("NI", "NI", (2.263, 2.0, 0.0))]
    pos, resn, names, resids = [], [], [], []
    for k, (rn, nm, p) in enumerate(fixed):
        pos.append(np.tile(p, (F, 1))), resn.append(rn), names.append(nm), resids.append(k)
    rid = len(fixed)
    for _ in range(20):  # Na+ uniform in the film
        pos.append(np.c_[rng.random((F, 2)) * 3, 2.1 + rng.random(F) * 3.8])
        resn.append("NA"), names.append("NA"), resids.append(rid)
        rid += 1
    for _ in range(20):  # TFSI-: N, O 0.25 nm and F 0.3 nm from it; the first one sits on the top Fe
        c = np.c_[rng.random((F, 2)) * 3, 2.5 + rng.random(F) * 3.0]
        if rid == len(fixed) + 20:
            c = np.tile((0.5, 0.5, 2.45), (F, 1))
        for nm, off in (("N1", 0.0), ("O1", -0.25), ("F1", 0.3)):
            pos.append(c + (0, 0, off)), resn.append("TFS"), names.append(nm), resids.append(rid)
        rid += 1
    for _ in range(30):
        pos.append(np.c_[rng.random((F, 2)) * 3, 2.1 + rng.random(F) * 3.8])
        resn.append("PEM"), names.append("O1"), resids.append(rid)
        rid += 1
    res_names = [None] * rid
    for r, rn in zip(resids, resn):
        res_names[r] = rn
    return _universe(len(pos), np.stack(pos, axis=1), box, 0.5, resnames=res_names, names=names, resids=resids)


def test_composite_writes_all_four_parts_tables_and_figures(tmp_path):
    u = _composite()
    out = analyse_interface(u, tmp_path, 0.3, 353.0, r_site_nm=0.3)
    assert out["composite"] is True
    sites = out["open_sites"]["site_types"]
    assert set(sites) == {"Fe(FeNi)", "Ni(FeNi)"} and sites["Fe(FeNi)"]["n_sites"] == 2
    # the held anion's O is 0.2 nm above the top Fe: one of the two Fe sites is always occupied
    assert sites["Fe(FeNi)"]["occupancy"]["O_TFSI"] >= 0.5
    assert set(out["profiles"]["species"]) == {"Na", "TFSI", "O_ether"}
    assert out["profiles"]["species"]["Na"]["gamma_per_nm2"] is not None
    assert set(out["layer_diffusion"]) >= {"interface", "centre", "method"}
    assert 0 <= out["speciation"]["free_tfsi_fraction"] <= 1
    for name in ("interface.json", "interface_profile.csv", "interface_speciation.csv", "interface_occupancy.csv",
                 "interface_layer_msd.csv"):
        assert (tmp_path / name).is_file(), name
    for stem in ("interface_profile", "interface_occupancy", "interface_speciation"):
        assert (tmp_path / "figures" / f"{stem}.png").is_file()
    header = (tmp_path / "interface_profile.csv").read_text().splitlines()[0]
    assert header.startswith("d (nm),rho Na (nm^-3),rho Na SEM (nm^-3)")
