"""Reference numbers the study is compared with, each with where it comes from.

PAPER: Dong et al., EES Batteries 2025, 1, 1569 (``PAPER_CITATION``), PEO/NaTFSI with and without an
Fe-Ni M3(BTC)2 host. Each entry says whether the paper's number comes from its
MD simulations or from experiment: experimental numbers (t+, Ea, sigma at 30 C, the optimum loading,
the Fe-only/Ni-only hosts) are not what an MD model must reproduce number for number, so the study
compares trends for them and states which is which.

PEO_MELT_DENSITY: measured density of the salt-free PEO melt, for a model-vs-experiment check the paper
does not make. Tait zero-pressure isobar tabulated by Rodgers (J. Appl. Polym. Sci. 1993, 48,
1061-1080, Tait parameters for 56 polymer liquids; PEO from the PVT data of Tsujita et al.):

    V(0, t) = 0.8766 exp(7.087e-4 t) cm^3/g,   t in deg C,  fitted range 88-224 C (361-497 K)

rho = 1/V: 1.078 g/cm^3 at 353 K, 1.063 at 373 K. Outside its range the value is an extrapolation
(below ~338 K real PEO is semicrystalline, the correlation describes the supercooled melt) and is
marked so. The coefficients were transcribed from that table; check them against the printed table
before quoting a deviation in a publication.
"""

from __future__ import annotations

import math

PAPER_CITATION = "Dong et al., EES Batteries 2025, 1, 1569"

#: Each entry: value(s), unit, what it is, and its source ("MD" or "experiment") in the paper.
PAPER = {
    "rdf_peaks_NaO_TFSI_A": {
        "value": (2.3, 4.5), "unit": "Å", "source": "MD", "where": "Fig. 4e (Na-O(TFSI) g(r))",
        "text": "Na-O(TFSI) g(r) peaks at ~2.3 and ~4.5 Å",
    },
    "cn_NaO_TFSI_trend": {
        "value": None, "unit": "", "source": "MD", "where": "Fig. 4e (n(r))",
        "text": "weaker Na-O(TFSI) coordination (lower first-shell n(r)) in CPE-10 than in PEO",
    },
    "D_Na_cm2_per_s": {
        "value": {"PEO": 4.9e-7, "CPE-10": 2.12e-6}, "unit": "cm²/s", "source": "MD", "where": "Fig. 4f (MSD)",
        "text": "D(Na+) 4.9e-7 (PEO) vs 2.12e-6 cm²/s (CPE-10)",
    },
    "t_plus": {
        "value": {"PEO": 0.23, "CPE-10": 0.63}, "unit": "", "source": "experiment", "where": "t+ measurement",
        "text": "t+ 0.23 (PEO) vs 0.63 (CPE-10), experiment",
    },
    "optimum_wt_percent": {
        "value": 10.0, "unit": "wt%", "source": "experiment", "where": "conductivity vs MOF loading",
        "text": "highest conductivity at 10 wt% among 0/3/5/7/10/15 wt% Fe-Ni M3(BTC)2",
    },
    "Ea_eV": {
        "value": 0.50, "unit": "eV", "source": "experiment", "where": "Arrhenius fit of sigma(T)",
        "text": "Ea = 0.50 eV (CPE-10), experiment",
    },
    "sigma_30C_S_per_cm": {
        "value": 1.37e-4, "unit": "S/cm", "source": "experiment", "where": "EIS at 30 °C",
        "text": "sigma(30 °C) = 1.37e-4 S/cm (CPE-10), experiment",
    },
    "free_tfsi_fraction": {
        "value": {"PEO": 0.668, "CPE-10": 0.877}, "unit": "", "source": "experiment",
        "where": "Raman (free vs Na+-coordinated TFSI- bands)",
        "text": "free TFSI- 66.8 % (PEO) vs 87.7 % (CPE-10), Raman, experiment",
    },
    "bimetallic_better": {
        "value": None, "unit": "", "source": "experiment", "where": "Fe-only / Ni-only hosts",
        "text": "10 wt% Fe-only and Ni-only hosts conduct worse than Fe-Ni",
    },
}

PEO_MELT_DENSITY = {
    "citation": ("P. A. Rodgers, J. Appl. Polym. Sci. 1993, 48, 1061-1080 (Tait parameters; PEO data of "
                 "Tsujita et al.): V(0,t) = 0.8766 exp(7.087e-4 t) cm³/g, t in °C"),
    "A_cm3_per_g": 0.8766,
    "B_per_C": 7.087e-4,
    "valid_K": (361.15, 497.15),
    "material": "PEO melt, salt-free",
}


def peo_melt_density_g_cm3(temperature_K: float) -> dict:
    """Measured salt-free PEO melt density at `temperature_K` (module docstring), with its source and range."""
    t_c = float(temperature_K) - 273.15
    ref = PEO_MELT_DENSITY
    rho = 1.0 / (ref["A_cm3_per_g"] * math.exp(ref["B_per_C"] * t_c))
    lo, hi = ref["valid_K"]
    inside = lo <= float(temperature_K) <= hi
    return {"density_g_cm3": rho, "source": ref["citation"], "material": ref["material"],
            "valid_range_K": [lo, hi], "extrapolated": not inside}
