"""Ionic conductivity: Nernst-Einstein (self terms) and Einstein-Helfand (collective, with cross terms).

Ions carry q = z * charge_scale elementary charges (z = +1 for Na+, -1 for TFSI-; charge_scale is
the force field's scaling, e.g. 0.8 for scaled-charge models). Volume V is the mean volume the ions
move in: the box volume of a plain box, the electrolyte's occupied volume of a slab box
(:class:`spemd.analysis.volume.ElectrolyteVolume`; a slab box normalised by its whole volume
under-counts the carrier density by the slab's share).

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

Uncertainties: NE and t+_ideal by first-order propagation of sigma_D. EH: the whole-trajectory MSDs
of M_+, M_- and M_+ + M_- are fitted by least squares (one collective trajectory is too noisy to
weight a GLS with), and the covariance of the three slopes is the sandwich C S C^T with S their joint
covariance (the Gaussian/Isserlis covariance of analysis.msd_fit, with the cross-MSDs <dM_a . dM_b> for
the off-diagonal blocks), so it carries the correlation of MSD points and of the three curves; sigma_+-,
t+_collective (= 1/2 + (s_++ - s_--)/(2 sigma_EH)) get their errors by first-order propagation. The
Haven ratio H = sigma_NE / sigma_EH: (s_H/H)^2 = (s_NE/NE)^2 + (s_EH/EH)^2 - 2 Cov(NE, EH)/(NE EH),
with the covariance of the two estimates from the same ions (:func:`ne_eh_covariance`, independent
ions). The window starts at the later of the two ions' window starts (one collective trajectory is
too noisy for its own constant-slope test) and ends at fit_end_fraction;
with no diffusive window for either ion every EH value is NaN and ``no_window_reason`` says why.
Preconditions as analysis.msd: unwrapped (or unwrappable) coordinates, equally spaced frames,
Gaussian charge displacements at the window's lags.
"""

from __future__ import annotations

import numpy as np
from MDAnalysis.analysis.base import AnalysisBase

from spemd.errors import ConfigError, InputError
from spemd.units import BOLTZMANN_J_PER_K, CM_PER_NM, ELEMENTARY_CHARGE_C, angstrom_to_nm, nm2_per_ps_to_cm2_per_s

from spemd.analysis._common import (Unwrapper, box_volume_nm3, check_atomgroup, check_finite, check_ion_species,
                                    compound_centres, compound_layout, frame_spacing_ps, linear_fit)
from spemd.analysis.msd import msd_fft
from spemd.analysis.msd_fit import (_gamma_series, _gls_rows, _pair_covariance, fit_diffusion, fit_lags, fit_window,
                                    loglog_slope, msd_covariance)


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
                     z_cation=1, z_anion=-1, fit_start_fraction=0.1, fit_end_fraction=0.5, beta_tolerance=0.1,
                     max_fit_points=8, cation_fit=None, anion_fit=None) -> dict:
    """Einstein-Helfand conductivity and t+_collective from unwrapped positions (T, N, 3) in nm.

    The window is the later start of the two ions' diffusive windows (`cation_fit`/`anion_fit`, dicts of
    analysis.msd_fit.fit_diffusion, computed here when not given): the collective MSDs, one trajectory each,
    are too noisy for their own local-beta test. Their betas over that window are reported.
    """
    cat = np.asarray(cation_positions_nm, dtype=np.float64)
    an = np.asarray(anion_positions_nm, dtype=np.float64)
    if cat.shape[0] != an.shape[0]:
        raise InputError(f"einstein_helfand: cation and anion positions have {cat.shape[0]} and {an.shape[0]} frames")
    T = cat.shape[0]
    d = cat.shape[2]
    s0, s1 = fit_window(T, fit_start_fraction, fit_end_fraction, "conductivity fit window")
    lags = np.arange(T) * dt_ps
    kw = dict(dim=d, fit_start_fraction=fit_start_fraction, fit_end_fraction=fit_end_fraction,
              beta_tolerance=beta_tolerance)
    if cation_fit is None:
        cation_fit = fit_diffusion(lags, msd_fft(cat), cat.shape[1], **kw)
    if anion_fit is None:
        anion_fit = fit_diffusion(lags, msd_fft(an), an.shape[1], **kw)
    qc, qa = z_cation * charge_scale, z_anion * charge_scale
    Mp = (qc * cat.sum(axis=1))[:, None, :]
    Mm = (qa * an.sum(axis=1))[:, None, :]
    msd_pp, msd_mm, msd_tot = msd_fft(Mp), msd_fft(Mm), msd_fft(Mp + Mm)
    out = {"lagtimes_ps": lags, "msd_M_plus": msd_pp, "msd_M_minus": msd_mm, "msd_M_total": msd_tot,
           "msd_M_cross": 0.5 * (msd_tot - msd_pp - msd_mm), "charge_scale": float(charge_scale),
           "volume_nm3": float(volume_nm3)}
    keys = ("sigma_EH", "sigma_plus_plus", "sigma_minus_minus", "sigma_plus_minus")
    nan = float("nan")
    if not (cation_fit.get("diffusive") and anion_fit.get("diffusive")):
        for k in keys:
            out[f"{k}_S_per_cm"] = out[f"{k}_err_S_per_cm"] = nan
        out.update({"t_plus_collective": nan, "t_plus_collective_err": nan, "fit_window_ps": [nan, nan],
                    "beta_M": [nan] * 3, "diffusive": False,
                    "no_window_reason": "no diffusive window for " + " and ".join(
                        n for n, f in (("the cations", cation_fit), ("the anions", anion_fit))
                        if not f.get("diffusive")),
                    "uncertainty_method": "none (no diffusive window)"})
        return out
    i0 = int(round(max(cation_fit["fit_window_ps"][0], anion_fit["fit_window_ps"][0]) / dt_ps))
    i1 = s1
    sel = fit_lags(i0, i1, max_fit_points)
    ys = [msd_pp[sel], msd_mm[sel], msd_tot[sel]]
    # Point estimates by ordinary least squares: one collective trajectory is too noisy to build the
    # covariance that GLS would weight with (GLS iterations on it run away); the OLS slopes' covariance
    # is the sandwich C S C^T with the joint Gaussian covariance S of the three MSDs.
    fits = [linear_fit(lags[sel], y)[:2] for y in ys]
    g = [_gamma_series(m / d, i0, a * dt_ps / d, b / d, T) for m, (a, b) in zip((msd_pp, msd_mm, msd_tot), fits)]
    g_pm = 0.5 * (g[2] - g[0] - g[1])  # per-component cross-MSD <dM+ . dM->
    gammas = {(0, 0): g[0], (1, 1): g[1], (2, 2): g[2], (0, 1): g_pm, (0, 2): g[0] + g_pm, (1, 2): g[1] + g_pm}
    cov = msd_covariance(gammas, [sel] * 3, T, d, 1)
    t = lags[sel] - lags[sel].mean()
    c = t / np.sum(t * t)  # OLS slope = c . y
    C = np.kron(np.eye(3), c[None, :])
    slopes = np.array([f[0] for f in fits])
    pcov = C @ cov @ C.T
    pref = _prefactor_S_per_cm(volume_nm3, temperature_K) / (2 * d)
    aA, aB, aS = slopes
    # sigma_ab = pref * slope_ab; sigma_+- = (sigma_EH - sigma_++ - sigma_--)/2; errors from the slope covariance
    J = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0], [-0.5, -0.5, 0.5]]) * pref
    vals, var = J @ slopes, np.einsum("ij,jk,ik->i", J, pcov, J)
    for k, v, s2 in zip(keys, vals, var):
        out[f"{k}_S_per_cm"], out[f"{k}_err_S_per_cm"] = float(v), float(np.sqrt(max(s2, 0.0)))
    # t+ = (s_++ + s_+-)/s_EH = 1/2 + (aA - aB)/(2 aS)
    if aS != 0:
        tplus = 0.5 + (aA - aB) / (2 * aS)
        grad = np.array([1 / (2 * aS), -1 / (2 * aS), -(aA - aB) / (2 * aS**2)])
        t_err = float(np.sqrt(max(grad @ pcov @ grad, 0.0)))
    else:
        tplus, t_err = nan, nan
    out.update({"t_plus_collective": float(tplus), "t_plus_collective_err": t_err,
                "fit_window_ps": [float(lags[i0]), float(lags[i1])], "diffusive": True, "no_window_reason": None,
                "fit_lags": [int(k) for k in sel], "beta_M": [loglog_slope(lags[i0:i1 + 1], m[i0:i1 + 1]) for m in (msd_pp, msd_mm, msd_tot)],
                "uncertainty_method": (f"least-squares slopes of the three collective MSDs at {len(sel)} lags, "
                                       "slope covariance from their joint Gaussian (Isserlis) covariance with "
                                       "cross-MSDs (analysis.msd_fit); sigma_+-, t+ by propagation")})
    return out


class Conductivity(AnalysisBase):
    """D+, D-, sigma_NE, sigma_EH, t+ (ideal and collective) of a cation group and an anion group.

    Parameters
    ----------
    cations : AtomGroup (one atom per ion)
    anions : AtomGroup (whole anions; their residues' centres of mass are used)
    charge_scale, temperature_K : float
    fit_start_fraction, fit_end_fraction, beta_tolerance : as analysis.msd_fit.fit_diffusion
    unwrap : bool
    carrier_volume_nm3 : float or None: the carrier volume of a slab box (e.g.
        ``ElectrolyteVolume.results.mean_volume_nm3``); None: the mean box volume

    Results: ``D_cation``/``D_anion`` (dicts of analysis.msd_fit.fit_diffusion), ``nernst_einstein``
    (dict of :func:`nernst_einstein`), ``einstein_helfand`` (dict of :func:`einstein_helfand`).
    """

    def __init__(self, cations, anions, charge_scale=1.0, temperature_K=300.0, fit_start_fraction=0.1,
                 fit_end_fraction=0.5, beta_tolerance=0.1, unwrap=True, anion_compound="residues",
                 carrier_volume_nm3=None, **kwargs):
        super().__init__(cations.universe.trajectory, **kwargs)
        self.cations = check_atomgroup(cations, "conductivity cations")
        self.anions = check_atomgroup(anions, "conductivity anions")
        check_ion_species(self.cations, self.anions)
        if not temperature_K > 0:
            raise ConfigError(f"temperature_K: {temperature_K!r} must be > 0")
        self.charge_scale = float(charge_scale)
        self.temperature_K = float(temperature_K)
        self.fit_kwargs = dict(fit_start_fraction=fit_start_fraction, fit_end_fraction=fit_end_fraction,
                               beta_tolerance=beta_tolerance)
        self.unwrap = unwrap
        self.anion_compound = anion_compound
        if carrier_volume_nm3 is not None and not carrier_volume_nm3 > 0:
            raise ConfigError(f"carrier_volume_nm3: {carrier_volume_nm3!r} must be > 0 nm^3 or None")
        self.carrier_volume_nm3 = carrier_volume_nm3

    def _prepare(self):
        self._layout = compound_layout(self.anions, self.anion_compound)
        n_an = len(self.anions) if self.anion_compound == "atoms" else len(self._layout[1])
        self._cat = np.empty((self.n_frames, len(self.cations), 3))
        self._an = np.empty((self.n_frames, n_an, 3))
        self._vol = np.empty(self.n_frames)
        self._uc, self._ua = Unwrapper(), Unwrapper()

    def _single_frame(self):
        check_finite(self._ts, (self.cations, self.anions), "conductivity trajectory")
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
        volume = float(self._vol.mean()) if self.carrier_volume_nm3 is None else float(self.carrier_volume_nm3)
        self.results.update(conductivity_from_positions(self._cat, self._an, dt, volume,
                                                        self.temperature_K, self.charge_scale, **self.fit_kwargs))


def conductivity_from_positions(cation_positions_nm, anion_positions_nm, dt_ps, volume_nm3, temperature_K,
                                charge_scale=1.0, fit_start_fraction=0.1, fit_end_fraction=0.5, beta_tolerance=0.1,
                                cation_fit=None, anion_fit=None) -> dict:
    """Everything of :class:`Conductivity` from unwrapped positions (e.g. ``MSD.results.positions_nm``).

    `cation_fit`/`anion_fit`: already computed fit_diffusion dicts (e.g. MSD.results) to reuse.
    Haven ratio H = sigma_NE / sigma_EH; its error by first-order propagation with the covariance of the
    two (:func:`ne_eh_covariance`: both come from the same ions' displacements).
    """
    cat, an = np.asarray(cation_positions_nm, dtype=float), np.asarray(anion_positions_nm, dtype=float)
    lags = np.arange(len(cat)) * dt_ps
    kw = dict(fit_start_fraction=fit_start_fraction, fit_end_fraction=fit_end_fraction, beta_tolerance=beta_tolerance)
    if cation_fit is None:
        cation_fit = fit_diffusion(lags, msd_fft(cat), cat.shape[1], dim=cat.shape[2], **kw)
    if anion_fit is None:
        anion_fit = fit_diffusion(lags, msd_fft(an), an.shape[1], dim=an.shape[2], **kw)
    ne = nernst_einstein(cation_fit["D_nm2_per_ps"], anion_fit["D_nm2_per_ps"], cat.shape[1], an.shape[1], volume_nm3,
                         temperature_K, charge_scale, sigma_D_cation=cation_fit["D_sigma_nm2_per_ps"],
                         sigma_D_anion=anion_fit["D_sigma_nm2_per_ps"])
    eh = einstein_helfand(cat, an, dt_ps, volume_nm3, temperature_K, charge_scale, cation_fit=cation_fit,
                          anion_fit=anion_fit, **kw)
    s_ne, s_eh = ne["sigma_S_per_cm"], eh["sigma_EH_S_per_cm"]
    cov = float("nan")
    if np.isfinite(s_eh) and s_eh != 0 and s_ne:
        cov = ne_eh_covariance(cat, an, dt_ps, cation_fit, anion_fit, eh, volume_nm3, temperature_K, charge_scale)
        haven = s_ne / s_eh
        rel2 = ((ne["sigma_err_S_per_cm"] / s_ne) ** 2 + (eh["sigma_EH_err_S_per_cm"] / s_eh) ** 2
                - 2 * cov / (s_ne * s_eh))
        haven_err = abs(haven) * float(np.sqrt(max(rel2, 0.0)))
    else:
        haven, haven_err = float("nan"), float("nan")
    return {"D_cation": dict(cation_fit), "D_anion": dict(anion_fit), "nernst_einstein": ne, "einstein_helfand": eh,
            "haven_ratio": float(haven), "haven_ratio_err": float(haven_err), "ne_eh_covariance": cov}


def ne_eh_covariance(cat, an, dt_ps, cation_fit, anion_fit, eh, volume_nm3, temperature_K, charge_scale=1.0,
                     z_cation=1, z_anion=-1) -> float:
    """Cov(sigma_NE, sigma_EH) in (S/cm)^2. sigma_NE = p sum_s N_s q_s^2 a_s / (2d) with a_s the GLS slope of
    species s's self-MSD, sigma_EH = p a_M / (2d) with a_M the least-squares slope of MSD(M_+ + M_-). For
    independent ions (the model of both error bars) Cov(|dx_i|^2, |dM|^2) = 2 q^2 Cov(dx_i, dx_i)^2 per
    component (Isserlis), so Cov(MSD_self(n), MSD_M(m)) = d q^2 C_1(n, m), C_1 the one-particle term of
    analysis.msd_fit.msd_covariance, and Cov(a_s, a_M) = h_s C h_M with the two estimators' weight rows."""
    T, d = cat.shape[0], cat.shape[2]
    sel_m = np.asarray(eh["fit_lags"])
    t = sel_m * dt_ps - np.mean(sel_m * dt_ps)
    c_m = t / np.sum(t * t)  # OLS slope weights of the collective fit
    total = 0.0
    for x, fit, q in ((cat, cation_fit, z_cation * charge_scale), (an, anion_fit, z_anion * charge_scale)):
        sel, n = np.asarray(fit["fit_lags"]), x.shape[1]
        msd = msd_fft(x)
        gamma = _gamma_series(msd / d, sel[0], 2 * fit["D_nm2_per_ps"] * dt_ps, fit["offset_nm2"] / d, T)
        h = _gls_rows(np.column_stack([sel * dt_ps, np.ones(len(sel))]),
                      msd_covariance({(0, 0): gamma}, [sel], T, d, n))[0]
        cross = d * q**2 * np.array([[_pair_covariance(gamma, int(i), int(j), T) for j in sel_m] for i in sel])
        total += n * q**2 * float(h @ cross @ c_m)
    return _prefactor_S_per_cm(volume_nm3, temperature_K) ** 2 / (2 * d) ** 2 * total
