import argparse
import json
from pathlib import Path

import pytest

from spemd.analysis.cli import add_analyse_parser, main
from spemd.errors import InputError

DATA = Path(__file__).parent / "data"
COMMON = ["--topology", str(DATA / "tiny_electrolyte.pdb"), "--trajectory", str(DATA / "tiny_electrolyte.dcd")]


def _parse(argv):
    p = argparse.ArgumentParser(prog="spemd")
    add_analyse_parser(p.add_subparsers(dest="command", required=True))
    return p.parse_args(argv)


def test_rdf_msd_conductivity_subcommands(tmp_path):
    a = _parse(["analyse", "rdf", *COMMON, "--select", "resname NA", "--select2", "resname TFS and name O*",
                "--bins", "50", "--out", str(tmp_path / "rdf")])
    assert a.func(a) == 0
    rec = json.loads((tmp_path / "rdf" / "rdf.json").read_text())
    assert rec["peaks_A"][0] == pytest.approx(2.3, abs=0.11)
    assert (tmp_path / "rdf" / "figures" / "rdf.svg").exists()
    # a plain box: the lateral reference is the volume one in expectation (same first peak, tail near it)
    a = _parse(["analyse", "rdf", *COMMON, "--select", "resname NA", "--select2", "resname TFS and name O*",
                "--bins", "50", "--normalisation", "lateral", "--out", str(tmp_path / "rdf_lateral")])
    assert a.func(a) == 0
    lateral = json.loads((tmp_path / "rdf_lateral" / "rdf.json").read_text())
    assert lateral["normalisation"].startswith("lateral") and lateral["peaks_A"][0] == rec["peaks_A"][0]
    a = _parse(["analyse", "msd", *COMMON, "--select", "resname NA", "--dt-ps", "2.0", "--out", str(tmp_path / "msd")])
    a.func(a)
    rec = json.loads((tmp_path / "msd" / "msd.json").read_text())
    assert rec["dt_ps"] == pytest.approx(2.0) and rec["diffusive"] and rec["D_cm2_per_s"] > 0
    a = _parse(["analyse", "msd", *COMMON, "--select", "resname TFS", "--compound", "residues",
                "--out", str(tmp_path / "msd2")])
    a.func(a)  # 40 frames of TFSI: local beta leaves 0.9-1.1, so no D and the reason instead
    rec = json.loads((tmp_path / "msd2" / "msd.json").read_text())
    assert rec["D_cm2_per_s"] is None and "no diffusive window" in rec["no_window_reason"]
    assert main(["analyse", "conductivity", *COMMON, "--select", "resname NA", "--select2", "resname TFS",
                 "--temperature-K", "353", "--charge-scale", "0.8", "--out", str(tmp_path / "c")]) == 0
    rec = json.loads((tmp_path / "c" / "conductivity.json").read_text())
    assert rec["nernst_einstein"]["charge_scale"] == 0.8
    assert rec["einstein_helfand"]["sigma_EH_S_per_cm"] is None  # needs both ions' diffusive windows
    assert rec["einstein_helfand"]["no_window_reason"] == "no diffusive window for the anions"


def test_errors_are_one_line(tmp_path, capsys):
    a = _parse(["analyse", "rdf", *COMMON, "--select", "resname XX", "--out", str(tmp_path)])
    with pytest.raises(InputError, match="resname XX"):
        a.func(a)
    assert main(["analyse", "conductivity", *COMMON, "--select", "resname NA", "--temperature-K", "300",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--select2" in err and "\n" not in err
