"""`spemd analyse` prints a summary (--quiet, --json, -v) and `spemd inspect` finds the selections."""

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from spemd.analysis.console import conductivity_lines, msd_lines, rdf_lines
from spemd.analysis.inspection import suggest_selections
from spemd.pipeline.cli import main

DATA = Path(__file__).parent / "data"
COMMON = ["--topology", str(DATA / "tiny_electrolyte.pdb"), "--trajectory", str(DATA / "tiny_electrolyte.dcd")]
RDF = ["analyse", "rdf", *COMMON, "--select", "resname NA", "--select2", "resname TFS and name O*", "--bins", "50"]


def _spemd(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "spemd", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_rdf_summary_prints_the_numbers_of_the_result_file(tmp_path, capsys):
    assert main([*RDF, "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    rec = json.loads((tmp_path / "a" / "rdf.json").read_text())
    assert f"first peak: {rec['peaks_A'][0]:.2f} Å" in out
    assert f"radius {rec['first_shell_radius_A']:.2f} Å" in out
    assert f"coordination number {rec['first_shell_cn']:.3g}" in out
    assert main([*RDF, "--quiet", "--out", str(tmp_path / "b")]) == 0
    assert capsys.readouterr().out == ""
    assert main([*RDF, "--json", "--out", str(tmp_path / "c")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "c" / "rdf.json").read_text())


def test_msd_summary_gives_D_or_the_refusal(tmp_path, capsys):
    assert main(["analyse", "msd", *COMMON, "--select", "resname NA", "--dt-ps", "2", "--out", str(tmp_path / "na")]) == 0
    out = capsys.readouterr().out
    rec = json.loads((tmp_path / "na" / "msd.json").read_text())
    assert f"D = {rec['D_cm2_per_s']:.3g} ± {rec['D_sigma_cm2_per_s']:.3g} cm²/s" in out
    w = rec["fit_window_ps"]
    assert f"beta = {rec['beta']:.2f} over {w[0]:.3g}-{w[1]:.3g} ps" in out
    # a refusal prints the record's own reason: 4 frames leave no window to search
    assert main(["analyse", "msd", *COMMON, "--select", "resname TFS", "--compound", "residues", "--stop", "4",
                 "--out", str(tmp_path / "tfs")]) == 0
    rec = json.loads((tmp_path / "tfs" / "msd.json").read_text())
    assert rec["D_cm2_per_s"] is None and f"no D: {rec['no_window_reason']}" in capsys.readouterr().out


def test_formatters_fall_back_on_missing_or_null_keys():
    # the shell radius may be null with a reason (and a record may lack keys entirely)
    lines = rdf_lines({"select": "A", "peaks_A": [], "first_shell_radius_A": None, "reason": "g(r) never exceeds 1"})
    assert lines[1] == "  first peak: none found" and "none (g(r) never exceeds 1)" in lines[2]
    assert "none (no first minimum after the peak)" in rdf_lines({})[2]
    assert msd_lines({"D_cm2_per_s": None})[1] == "  no D: no diffusive fit window"
    lines = msd_lines({"D_cm2_per_s": 1.234e-7, "D_sigma_cm2_per_s": 2e-8, "beta": 0.97, "fit_window_ps": [10, 80],
                       "flags": ["short"]})
    assert lines[1:] == ["  D = 1.23e-07 ± 2e-08 cm²/s", "  beta = 0.97 over 10-80 ps", "  flags: short"]
    lines = conductivity_lines({"nernst_einstein": {"sigma_S_per_cm": 1e-4, "sigma_err_S_per_cm": 1e-5,
                                                    "t_plus": 0.31, "t_plus_err": 0.02},
                                "einstein_helfand": {"sigma_EH_S_per_cm": 5e-5, "sigma_EH_err_S_per_cm": 2e-5,
                                                     "t_plus_collective": 0.2, "t_plus_collective_err": 0.1},
                                "haven_ratio": 2.0, "haven_ratio_err": 0.8})
    assert lines[1:] == ["  sigma_NE = 0.0001 ± 1e-05 S/cm, t+ (ideal) = 0.31 ± 0.02",
                         "  sigma_EH = 5e-05 ± 2e-05 S/cm, t+ (collective) = 0.20 ± 0.10",
                         "  Haven ratio = 2.00 ± 0.80"]
    lines = conductivity_lines({"D_cation": {"D_nm2_per_ps": 1e-5}, "D_anion": {"D_nm2_per_ps": None},
                                "nernst_einstein": {"sigma_S_per_cm": None}, "einstein_helfand": {}})
    assert lines[1] == "  sigma_NE: none (no D for the anions)" and lines[3] == "  Haven ratio = n/a"


@pytest.mark.slow
def test_mdanalysis_info_lines_only_with_verbose(tmp_path):
    quiet = _spemd(*RDF, "--out", str(tmp_path / "q"))
    assert quiet.returncode == 0, quiet.stderr
    assert "INFO MDAnalysis" not in quiet.stderr and "first peak" in quiet.stdout
    loud = _spemd(*RDF, "-v", "--out", str(tmp_path / "v"))
    assert loud.returncode == 0 and "INFO MDAnalysis" in loud.stderr


def _suggested(text, label):
    m = re.search(rf"^  {label}: +'(.+)'$", text, re.M)
    return m.group(1) if m else None


@pytest.mark.slow
def test_inspect_then_rdf_on_a_foreign_trajectory(tmp_path):
    """MDAnalysisTests' cobrotoxin in water (GROMACS PDB + XTC, 8 Na+, 11 Cl-): two commands to a printed RDF."""
    datafiles = pytest.importorskip("MDAnalysisTests.datafiles")
    data = Path(datafiles.__file__).parent / "data"
    top, xtc = str(data / "cobrotoxin.pdb"), str(data / "cobrotoxin.xtc")
    seen = _spemd("inspect", top, xtc)
    assert seen.returncode == 0, seen.stderr
    assert re.search(r"^  SOL +4612: OW HW1 HW2 MW$", seen.stdout, re.M)
    assert re.search(r"^  NA +8: NA$", seen.stdout, re.M)
    assert "box: 5.276 x 5.276 x 5.276 nm" in seen.stdout and "3 frames, time step 50 ps" in seen.stdout
    cations, water_o = _suggested(seen.stdout, "cations"), _suggested(seen.stdout, "water oxygens")
    assert (cations, water_o) == ("resname NA and name NA", "resname SOL and name OW")
    assert _suggested(seen.stdout, "anions") == "resname CL and name CL"
    assert "ether oxygens:  none found" in seen.stdout  # a protein has no C-O-C
    done = _spemd("analyse", "rdf", "--topology", top, "--trajectory", xtc, "--select", cations,
                  "--select2", water_o, "--out", str(tmp_path / "rdf"))
    assert done.returncode == 0, done.stderr
    rec = json.loads((tmp_path / "rdf" / "rdf.json").read_text())
    # Na+-O(water) first peak at ~2.4 Å in every water model
    assert 2.2 < rec["peaks_A"][0] < 2.6 and f"first peak: {rec['peaks_A'][0]:.2f} Å" in done.stdout


def test_inspect_finds_gromacs_ion_names(tmp_path):
    """A GRO file whose sodium residues are `NA+`: the suggested selection is usable as it stands."""
    import MDAnalysis as mda

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        u = mda.Universe(str(DATA / "tiny_electrolyte.pdb"))
        na = u.select_atoms("resname NA")
        na.residues.resnames = ["NA+"] * len(na.residues)
        u.atoms.write(str(tmp_path / "box.gro"))
        gro = mda.Universe(str(tmp_path / "box.gro"))
    sel = suggest_selections(gro)
    assert sel["cations"] == "resname NA+ and name NA" and gro.select_atoms(sel["cations"]).n_atoms == 12
    out = tmp_path / "rdf"
    assert main(["analyse", "rdf", "--topology", str(tmp_path / "box.gro"), "--trajectory",
                 str(DATA / "tiny_electrolyte.dcd"), "--select", sel["cations"], "--select2",
                 "resname TFS and name O*", "--quiet", "--out", str(out)]) == 0
    # same atoms, same frames: the same g(r) as under the project's own names
    ref = tmp_path / "ref"
    assert main([*RDF[:-2], "--quiet", "--out", str(ref)]) == 0
    assert json.loads((out / "rdf.json").read_text())["peaks_A"] == json.loads((ref / "rdf.json").read_text())["peaks_A"]


def test_inspect_without_bonds_uses_the_bond_band():
    """No bonds in the topology: dimethyl ether's O (two C at 1.43 Å) is an ether O, a sulfonyl O (S at
    1.44 Å) an anion O; an O 2.0 Å from a C is neither."""
    import MDAnalysis as mda

    atoms = [("ETH", "C1", "C", (0, 0, 0)), ("ETH", "O1", "O", (1.43, 0, 0)), ("ETH", "C2", "C", (2.14, 1.24, 0)),
             ("SUL", "S1", "S", (10, 10, 10)), ("SUL", "O1", "O", (11.44, 10, 10)), ("SUL", "C1", "C", (9, 11.5, 10)),
             ("LI", "LI", "Li", (15, 3, 3)), ("ALC", "O1", "O", (5, 15, 5)), ("ALC", "C1", "C", (7, 15, 5))]
    res = {"ETH": 0, "SUL": 1, "LI": 2, "ALC": 3}
    u = mda.Universe.empty(len(atoms), n_residues=4, atom_resindex=[res[a[0]] for a in atoms], trajectory=True)
    u.add_TopologyAttr("resnames", list(res))
    u.add_TopologyAttr("names", [a[1] for a in atoms])
    u.add_TopologyAttr("elements", [a[2] for a in atoms])
    u.atoms.positions = np.array([a[3] for a in atoms], dtype=float)
    u.dimensions = [20, 20, 20, 90, 90, 90]
    sel = suggest_selections(u)
    assert sel == {"cations": "resname LI and name LI", "anions": None, "anion oxygens": "resname SUL and name O1",
                   "ether oxygens": "resname ETH and name O1", "water oxygens": None}


def test_inspect_uses_the_topology_bonds():
    """tiny_electrolyte.pdb has CONECT bonds: they decide (its packing puts some ether O within 0.17 nm of
    an S, which the distance band alone would call anion oxygens)."""
    from spemd.analysis._common import load_universe

    sel = suggest_selections(load_universe(DATA / "tiny_electrolyte.pdb"))
    assert sel["anion oxygens"] == "resname TFS and name O1 O2 O3 O4"
    assert sel["ether oxygens"] == "resname PEH PEM and name O1"
    assert sel["cations"] == "resname NA and name NA" and sel["water oxygens"] is None
