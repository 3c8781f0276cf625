"""Ionic conductivity: Nernst-Einstein (self terms) and Einstein-Helfand (collective, with cross terms).

Ions carry q = z * charge_scale elementary charges (z = +1 for Na+, -1 for TFSI-; charge_scale is
the force field's scaling, e.g. 0.8 for scaled-charge models). Volume V is the mean box volume.

Nernst-Einstein (uncorrelated ions):

    sigma_NE = e^2 / (V k_B T) * (N_+ q_+^2 D_+ + N_- q_-^2 D_-)

Einstein-Helfand (collective): with the charge displacement M_a(t) = sum_{i in a} q_i r_i(t) of
species a (cation positions = atoms, anion positions = centres of mass; unwrapped),

    sigma_ab = e^2 / (2 d V k_B T) * d/dt < dM_a(t) . dM_b(t) >      (slope in the fit window)
    sigma_EH = sigma_++ + sigma_-- + 2 sigma_+-

where the cross correlation is < dM_+ . dM_- > = 1/2 (MSD(M_+ + M_-) - MSD(M_+) - MSD(M_-)), each
MSD by the FFT algorithm (analysis.msd.msd_fft) with all time origins. Transference numbers:

    t+_ideal      = N_+ q_+^2 D_+ / (N_+ q_+^2 D_+ + N_- q_-^2 D_-)
    t+_collective = (sigma_++ + sigma_+-) / sigma_EH

Uncertainties: NE and t+_ideal by first-order propagation of sigma_D; EH and t+_collective by block
averaging over independent time blocks (as for D in analysis.msd; the fit window is the configured
one, without the log-log shift, so that the three collective slopes share one window).
Preconditions as analysis.msd: unwrapped (or unwrappable) coordinates, equally spaced frames.
"""

from __future__ import annotations

import numpy as np
from MDAnalysis.analysis.base import AnalysisBase

from spemd.errors import ConfigError, InputError
from spemd.units import BOLTZMANN_J_PER_K, CM_PER_NM, ELEMENTARY_CHARGE_C, angstrom_to_nm, nm2_per_ps_to_cm2_per_s

from spemd.analysis._common import (Unwrapper, box_volume_nm3, check_atomgroup, compound_centres, compound_layout,
                              frame_spacing_ps)
from spemd.analysis.msd import fit_diffusion, fit_window, msd_fft


def _prefactor_S_per_cm(volume_nm3: float, temperature_K: float) -> float:
    """e^2/(V k_B T) such that prefactor * (sum N q^2 D[nm^2/ps]) is S/cm."""
    if not (volume_nm3 > 0 and temperature_K > 0):
        raise ConfigError(f"volume_nm3={volume_nm3!r}, temperature_K={temperature_K!r}: both must be > 0")
    v_cm3 = volume_nm3 * CM_PER_NM**3
    return ELEMENTARY_CHARGE_C**2 * nm2_per_ps_to_cm2_per_s(1.0) / (v_cm3 * BOLTZMANN_J_PER_K * temperature_K)


def nernst_einstein(D_cation_nm2_per_ps, D_anion_nm2_per_ps, n_cations, n_anions, volume_nm3, temperature_K,
                    charge_scale=1.0, z_cation=1, z_anion=-1, sigma_D_cation=0.0, sigma_D_anion=0.0) -> dict:
    """Nernst-Einstein conductivity (S/cm) and the ideal transference number t+ (module docstring)."""
    pref = _prefactor_S_per_cm(volume_nm3, temperature_K)
    qc2 = (z_cation * charge_scale) ** 2
    qa2 = (z_anion * charge_scale) ** 2
    wc = n_cations * qc2 * D_cation_nm2_per_ps
    wa = n_anions * qa2 * D_anion_nm2_per_ps
    sig = pref * (wc + wa)
    sig_err = pref * np.hypot(n_cations * qc2 * sigma_D_cation, n_anions * qa2 * sigma_D_anion)
    total = wc + wa
    tplus = wc / total if total != 0 else float("nan")
    # d t+/d D+ = wa/total^2 * n+ q+^2 ; d t+/d D- = -wc/total^2 * n- q-^2
    t_err = (np.hypot(wa * n_cations * qc2 * sigma_D_cation, wc * n_anions * qa2 * sigma_D_anion) / total**2
             if total != 0 else float("nan"))
    return {"sigma_S_per_cm": float(sig), "sigma_err_S_per_cm": float(sig_err), "t_plus": float(tplus),
            "t_plus_err": float(t_err), "charge_scale": float(charge_scale), "volume_nm3": float(volume_nm3),
            "temperature_K": float(temperature_K)}


def einstein_helfand(cation_positions_nm, anion_positions_nm, dt_ps, volume_nm3, temperature_K, charge_scale=1.0,
                     z_cation=1, z_anion=-1, fit_start_fraction=0.1, fit_end_fraction=0.5, n_blocks=5,
                     min_block_frames=20) -> dict:
    """Einstein-Helfand conductivity and t+_collective from unwrapped positions (T, N, 3) in nm."""
    cat = np.asarray(cation_positions_nm, dtype=np.float64)
    an = np.asarray(anion_positions_nm, dtype=np.float64)
    if cat.shape[0] != an.shape[0]:
        raise InputError(f"einstein_helfand: cation and anion positions have {cat.shape[0]} and {an.shape[0]} frames")
    T = cat.shape[0]
    d = cat.shape[2]
    fit_window(T, fit_start_fraction, fit_end_fraction, "conductivity fit window")
    qc, qa = z_cation * charge_scale, z_anion * charge_scale
    Mp = (qc * cat.sum(axis=1))[:, None, :]
    Mm = (qa * an.sum(axis=1))[:, None, :]
    lags = np.arange(T) * dt_ps
    kw = dict(dim=d, fit_start_fraction=fit_start_fraction, fit_end_fraction=fit_end_fraction, n_blocks=n_blocks,
              min_block_frames=min_block_frames, beta_tolerance=np.inf)
    msd_pp, msd_mm, msd_tot = msd_fft(Mp), msd_fft(Mm), msd_fft(Mp + Mm)
    fp, fm, ft = (fit_diffusion(lags, m, x, **kw) for m, x in ((msd_pp, Mp), (msd_mm, Mm), (msd_tot, Mp + Mm)))
    pref = _prefactor_S_per_cm(volume_nm3, temperature_K)
    # slope/(2d) is what fit_diffusion calls D; sigma_ab = pref * slope_ab / (2d)
    out = {"lagtimes_ps": lags, "msd_M_plus": msd_pp, "msd_M_minus": msd_mm, "msd_M_total": msd_tot,
           "msd_M_cross": 0.5 * (msd_tot - msd_pp - msd_mm), "fit_window_ps": ft["fit_window_ps"],
           "charge_scale": float(charge_scale), "volume_nm3": float(volume_nm3)}
    if ft["n_blocks"] >= 2:
        bp, bm, bt = (np.asarray(f["block_D_nm2_per_ps"]) for f in (fp, fm, ft))
        bpm = 0.5 * (bt - bp - bm)
        s_tot = pref * bt
        s_pp, s_mm, s_pm = pref * bp, pref * bm, pref * bpm
        with np.errstate(divide="ignore", invalid="ignore"):
            tplus = (s_pp + s_pm) / s_tot
        nb = len(bt)

        def ms(x):
            return float(np.mean(x)), float(np.std(x, ddof=1) / np.sqrt(nb))

        method = ft["uncertainty_method"]
    else:
        s_tot, s_pp, s_mm = (np.array([pref * f["D_nm2_per_ps"]]) for f in (ft, fp, fm))
        s_pm = 0.5 * (s_tot - s_pp - s_mm)
        tplus = (s_pp + s_pm) / s_tot if s_tot[0] != 0 else np.array([np.nan])

        def ms(x):
            return float(x[0]), float(abs(x[0]))

        method = "not estimable (too few frames for >= 2 blocks); sigma set to |value|"
    for name, arr in (("sigma_EH", s_tot), ("sigma_plus_plus", s_pp), ("sigma_minus_minus", s_mm),
                      ("sigma_plus_minus", s_pm)):
        m, e = ms(arr)
        out[f"{name}_S_per_cm"] = m
        out[f"{name}_err_S_per_cm"] = e
    m, e = ms(tplus)
    out["t_plus_collective"], out["t_plus_collective_err"] = m, e
    out["uncertainty_method"] = method
    return out


class Conductivity(AnalysisBase):
    """D+, D-, sigma_NE, sigma_EH, t+ (ideal and collective) of a cation group and an anion group.

    Parameters
    ----------
    cations : AtomGroup (one atom per ion)
    anions : AtomGroup (whole anions; their residues' centres of mass are used)
    charge_scale, temperature_K : float
    fit_start_fraction, fit_end_fraction, n_blocks, min_block_frames : as analysis.msd
    unwrap : bool

    Results: ``D_cation``/``D_anion`` (dicts of analysis.msd.fit_diffusion), ``nernst_einstein``
    (dict of :func:`nernst_einstein`), ``einstein_helfand`` (dict of :func:`einstein_helfand`).
    """

    def __init__(self, cations, anions, charge_scale=1.0, temperature_K=300.0, fit_start_fraction=0.1,
                 fit_end_fraction=0.5, n_blocks=5, min_block_frames=20, unwrap=True, anion_compound="residues",
                 **kwargs):
        super().__init__(cations.universe.trajectory, **kwargs)
        self.cations = check_atomgroup(cations, "conductivity cations")
        self.anions = check_atomgroup(anions, "conductivity anions")
        if not temperature_K > 0:
            raise ConfigError(f"temperature_K: {temperature_K!r} must be > 0")
        self.charge_scale = float(charge_scale)
        self.temperature_K = float(temperature_K)
        self.fit_kwargs = dict(fit_start_fraction=fit_start_fraction, fit_end_fraction=fit_end_fraction,
                               n_blocks=n_blocks, min_block_frames=min_block_frames)
        self.unwrap = unwrap
        self.anion_compound = anion_compound

    def _prepare(self):
        self._layout = compound_layout(self.anions, self.anion_compound)
        n_an = len(self.anions) if self.anion_compound == "atoms" else len(self._layout[1])
        self._cat = np.empty((self.n_frames, len(self.cations), 3))
        self._an = np.empty((self.n_frames, n_an, 3))
        self._vol = np.empty(self.n_frames)
        self._uc, self._ua = Unwrapper(), Unwrapper()

    def _single_frame(self):
        dims = self._ts.dimensions
        if dims is None or not np.all(np.asarray(dims[:3]) > 0):
            raise InputError(f"conductivity trajectory: frame {self._ts.frame} has no box; the volume is needed")
        c = self.cations.positions
        a = self.anions.positions
        if self.anion_compound != "atoms":
            a = compound_centres(a, dims, self._layout)
        if self.unwrap:
            c, a = self._uc.step(c, dims), self._ua.step(a, dims)
        i = self._frame_index
        self._cat[i] = angstrom_to_nm(np.asarray(c, dtype=np.float64))
        self._an[i] = angstrom_to_nm(np.asarray(a, dtype=np.float64))
        self._vol[i] = box_volume_nm3(dims)

    def _conclude(self):
        dt = frame_spacing_ps(self.times, "conductivity trajectory")
        self.results.update(conductivity_from_positions(self._cat, self._an, dt, float(self._vol.mean()),
                                                        self.temperature_K, self.charge_scale, **self.fit_kwargs))


def conductivity_from_positions(cation_positions_nm, anion_positions_nm, dt_ps, volume_nm3, temperature_K,
                                charge_scale=1.0, fit_start_fraction=0.1, fit_end_fraction=0.5, n_blocks=5,
                                min_block_frames=20, cation_fit=None, anion_fit=None) -> dict:
    """Everything of :class:`Conductivity` from unwrapped positions (e.g. ``MSD.results.positions_nm``).

    `cation_fit`/`anion_fit`: already computed fit_diffusion dicts (e.g. MSD.results) to reuse.
    """
    T = len(cation_positions_nm)
    lags = np.arange(T) * dt_ps
    kw = dict(fit_start_fraction=fit_start_fraction, fit_end_fraction=fit_end_fraction, n_blocks=n_blocks,
              min_block_frames=min_block_frames)
    if cation_fit is None:
        cation_fit = fit_diffusion(lags, msd_fft(cation_positions_nm), cation_positions_nm, **kw)
    if anion_fit is None:
        anion_fit = fit_diffusion(lags, msd_fft(anion_positions_nm), anion_positions_nm, **kw)
    ne = nernst_einstein(cation_fit["D_nm2_per_ps"], anion_fit["D_nm2_per_ps"], np.shape(cation_positions_nm)[1],
                         np.shape(anion_positions_nm)[1], volume_nm3, temperature_K, charge_scale,
                         sigma_D_cation=cation_fit["D_sigma_nm2_per_ps"], sigma_D_anion=anion_fit["D_sigma_nm2_per_ps"])
    eh = einstein_helfand(cation_positions_nm, anion_positions_nm, dt_ps, volume_nm3, temperature_K, charge_scale,
                          **kw)
    return {"D_cation": dict(cation_fit), "D_anion": dict(anion_fit), "nernst_einstein": ne, "einstein_helfand": eh,
            "haven_ratio": (ne["sigma_S_per_cm"] / eh["sigma_EH_S_per_cm"]
                            if eh["sigma_EH_S_per_cm"] else float("nan"))}
