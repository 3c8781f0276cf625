import numpy as np

from spemd.analysis.arrhenius import arrhenius_fit
from spemd.analysis.plots import plot_arrhenius, plot_msd, plot_rdf


def test_plots_write_png_and_svg(tmp_path):
    r = np.linspace(0.005, 0.995, 100)
    g = 1 + np.exp(-((r - 0.23) / 0.02) ** 2)
    paths = plot_rdf([{"r_nm": r, "g": g, "cn": np.cumsum(g) / 50, "label": "Na-O", "first_shell_radius_nm": 0.3}],
                     tmp_path / "rdf")
    t = np.arange(100.0)
    paths += plot_msd([{"lag_ps": t, "msd_nm2": 6e-3 * t, "label": "Na", "fit_window_ps": [10, 50],
                        "D_nm2_per_ps": 1e-3, "beta": 1.0}], tmp_path / "msd")
    T = np.array([300.0, 330.0, 360.0])
    D = np.exp(-3000 / T)
    paths += plot_arrhenius(T, D, 0.05 * D, arrhenius_fit(T, D, 0.05 * D), tmp_path / "arr")
    assert sorted(p.name for p in paths) == ["arr.png", "arr.svg", "msd.png", "msd.svg", "rdf.png", "rdf.svg"]
    for p in paths:
        assert p.stat().st_size > 1000
    assert (tmp_path / "rdf.svg").read_text().lstrip().startswith("<?xml")
    assert not list(tmp_path.glob(".*.tmp"))
