"""Unit conversions in one named place.

OpenMM units are used inside the project (nm, ps, kJ/mol, elementary charge, amu). Results that users
read into papers are also reported in the units of the field: Angstrom for distances on plots,
cm^2/s for diffusivities and S/cm for conductivities. Every conversion goes through this module.
"""

NM_PER_ANGSTROM = 0.1
ANGSTROM_PER_NM = 10.0
CM_PER_NM = 1.0e-7
M_PER_NM = 1.0e-9
M_PER_CM = 1.0e-2
S_PER_PS = 1.0e-12

#: 1 nm^2/ps expressed in cm^2/s (1e-14 cm^2 / 1e-12 s).
CM2_PER_S_PER_NM2_PER_PS = CM_PER_NM**2 / S_PER_PS

ELEMENTARY_CHARGE_C = 1.602176634e-19
BOLTZMANN_J_PER_K = 1.380649e-23
BOLTZMANN_EV_PER_K = 8.617333262e-5
KJ_PER_MOL_PER_EV = 96.48533212
AVOGADRO = 6.02214076e23
#: grams per amu
G_PER_AMU = 1.0 / AVOGADRO


def nm_to_angstrom(x):
    return x * ANGSTROM_PER_NM


def angstrom_to_nm(x):
    return x * NM_PER_ANGSTROM


def nm2_per_ps_to_cm2_per_s(d):
    """Diffusivity nm^2/ps -> cm^2/s (1 nm^2/ps = 1e-2 cm^2/s)."""
    return d * CM2_PER_S_PER_NM2_PER_PS


def cm2_per_s_to_nm2_per_ps(d):
    return d / CM2_PER_S_PER_NM2_PER_PS


def density_g_per_cm3(mass_amu: float, volume_nm3: float) -> float:
    """Mass density from a mass in amu and a volume in nm^3."""
    return mass_amu * G_PER_AMU / (volume_nm3 * CM_PER_NM**3)


def volume_nm3_for_density(mass_amu: float, density_g_cm3: float) -> float:
    """Volume (nm^3) that `mass_amu` occupies at `density_g_cm3`."""
    return mass_amu * G_PER_AMU / density_g_cm3 / CM_PER_NM**3
