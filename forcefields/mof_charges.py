"""Published partial-charge sets of the M3(BTC)2 framework, selectable as ``forcefield.mof_charges``.

forcefields/mof.xml carries ONE charge table, Castillo, Vlugt & Calero 2008 (``castillo2008``, the
default). Any other set is applied per atom type by ``forcefields/parametrise.create_system`` from the
tables here, before ``forcefield.mof_charge_scale``:

* every MOF metal type (any element of ``METAL_ELEMENTS``: Fe, Ni, Cu and any further metal type a
  mof.xml adds, e.g. a Fe-in-FeNi type) takes the set's ``"metal"`` charge. The sets are for Cu-BTC;
  Fe and Ni take the Cu value as a stated proxy, as in mof.xml (same-method charges of Fe- and
  Ni-MOF-74 differ by only 0.01 e, Mercado et al., J. Phys. Chem. C 2016: Fe +1.288, Ni +1.298 e);
* every other MOF type takes its own entry; a MOF type missing from the set is an InputError.

Neutrality. Per formula unit M3(BTC)2: 3 q_M + 2 q_BTC = 0 with
q_BTC = 6 q_O + 3 q_Ccarb + 3 q_Cring + 3 q_CH + 3 q_H, so the linker carries -1.5 q_M, i.e. q_M / 2
per formal unit of charge. The formate cap (HCOO-, formal -1, docs/mof_surface.md) keeps the set's
carboxylate C and O and its H takes the rest of -q_M / 2 (derivation in each set's comment), which keeps
every capped slab neutral with either set (tests/test_forcefields_params.py).
"""

from __future__ import annotations

from spemd.errors import ConfigError, InputError, one_of

#: The set in forcefields/mof.xml itself (applied by the XML, nothing to substitute).
XML_SET = "castillo2008"
#: Elements that are paddlewheel metals: every MOF atom type of one of these takes the set's metal charge.
METAL_ELEMENTS = ("Fe", "Ni", "Cu")

# DDEC (density-derived electrostatic and chemical) charges of Cu-BTC (HKUST-1): Boyd, Moosavi, Witman &
# Smit, J. Phys. Chem. Lett. 8 (2017) 357, Supporting Information (the DDEC set of its HKUST-1 model).
# Values as given in the copy of the SI; NOT verified against the SI itself (no copy was at hand).
# Neutral: 3 * 0.8789 + 2 * (6 * -0.53193 + 3 * 0.61036 + 3 * -0.09685 + 3 * -0.02448 + 3 * 0.13538)
#        = 2.6367 + 2 * -1.31835 = 0 (exactly, at these digits).
# Formate H: formal -1 at q_M / 2 = 0.43945 e per formal unit: -0.43945 - (0.61036 - 2 * 0.53193) = +0.01405.
_DDEC_CU = 0.8789
_DDEC_O = -0.53193
_DDEC_CCARB = 0.61036
DDEC_BOYD2017 = {
    "metal": _DDEC_CU,  # DDEC Cu; Fe, Ni (and any further metal type): Cu value as a proxy (module doc)
    "mof_O": _DDEC_O,  # carboxylate O (linker and formate)
    "mof_Ccarb": _DDEC_CCARB,  # carboxylate C (linker and formate)
    "mof_Cring": -0.09685,  # ring C bonded to the carboxylate
    "mof_CH": -0.02448,  # ring C bonded to H
    "mof_H": 0.13538,  # ring H
    "mof_Hfmt": round(-_DDEC_CU / 2 - (_DDEC_CCARB + 2 * _DDEC_O), 10),  # formate H, derived above: +0.01405
}

#: Allowed values of forcefield.mof_charges -> per-type table (None: mof.xml's own charges).
CHARGE_SETS: dict[str, dict[str, float] | None] = {XML_SET: None, "ddec_boyd2017": DDEC_BOYD2017}
#: Literature source of each set (recorded in forcefield.json).
SOURCES = {
    XML_SET: "Castillo, Vlugt & Calero, J. Phys. Chem. C 112 (2008) 15934 (forcefields/mof.xml)",
    "ddec_boyd2017": "DDEC, Boyd, Moosavi, Witman & Smit, J. Phys. Chem. Lett. 8 (2017) 357, SI (not verified against the SI)",
}
DEFAULT_SET = XML_SET


def check_set(name) -> str:
    """The set name, or ConfigError naming forcefield.mof_charges and the allowed values."""
    if name not in CHARGE_SETS:
        raise ConfigError(one_of("forcefield.mof_charges", name, list(CHARGE_SETS)))
    return name


def type_charges(name: str, mof_types: dict[str, str]) -> dict[str, float] | None:
    """Charge per MOF atom type for set `name`, or None for the set mof.xml carries.

    `mof_types` maps each MOF atom type present to its element symbol; every type whose element is in
    METAL_ELEMENTS takes the set's metal charge.
    """
    table = CHARGE_SETS[check_set(name)]
    if table is None:
        return None
    out = {}
    for t, element in sorted(mof_types.items()):
        if element in METAL_ELEMENTS:
            out[t] = table["metal"]
        elif t in table:
            out[t] = table[t]
        else:
            raise InputError(f"forcefield.mof_charges: set {name!r} has no charge for MOF atom type {t!r}")
    return out
