"""Mean squared displacement (FFT algorithm) and self-diffusion coefficient with an uncertainty.

MSD (Einstein), averaged over particles and time origins, for lag m (frames), T frames:

    MSD(m) = 1/P sum_p 1/(T-m) sum_{t=0}^{T-1-m} |x_p(t+m) - x_p(t)|^2
           = S1(m) - 2 S2(m)                                   (Calandrini et al. 2011)
    S1(m)  = 1/(T-m) sum_t [x(t)^2 + x(t+m)^2]   (cumulative sums)
    S2(m)  = 1/(T-m) sum_t x(t).x(t+m)           (autocorrelation by FFT, zero padded to 2T)

Preconditions: MSD needs unwrapped coordinates. A wrapped trajectory is unwrapped here by
accumulating frame-to-frame minimum-image displacements, valid only when no particle moves more
than half the shortest box width between consecutive frames (``results.max_step_fraction`` reports
the largest step as a fraction of that half width). Particles are atoms or centres of mass of
residues (``compound="residues"``, molecule made whole by minimum image to its first atom, so it must
be smaller than half the box). Frames must be equally spaced in time.

Diffusion coefficient D with its uncertainty: :func:`spemd.analysis.msd_fit.fit_diffusion` (its module
docstring has the window rule, the power-law and drift tests and the GLS covariance); ``MSD`` runs it
on the whole-trajectory MSD and reports its results. Replicas combine as independent estimates
(:func:`combine_estimates`).

Finite-size correction (Yeh & Hummer 2004): D_inf = D_PBC + k_B T xi / (6 pi eta L), xi = 2.837297,
valid for a cubic box of edge L and shear viscosity eta only. For a non-cubic box (e.g. a slab box
long in z) the correction depends on the box shape and direction (Kikugawa et al. 2015; Vögele &
Hummer 2016) and needs the anisotropic hydrodynamic sums; it is refused here, and
``finite_size_correction`` records why.
"""

from __future__ import annotations

import numpy as np
from MDAnalysis.analysis.base import AnalysisBase

from spemd.errors import ConfigError, InputError, one_of
from spemd.units import (BOLTZMANN_J_PER_K, M_PER_CM, M_PER_NM, angstrom_to_nm, cm2_per_s_to_nm2_per_ps,
                           nm2_per_ps_to_cm2_per_s)

from spemd.analysis.msd_fit import fit_diffusion, fit_window
from spemd.analysis._common import (Unwrapper, box_volume_nm3, check_atomgroup, check_finite, compound_centres, compound_layout,
                              frame_spacing_ps)

MSD_TYPES = ("xyz", "xy", "xz", "yz", "x", "y", "z")
YEH_HUMMER_XI = 2.837297


#: working memory of one block of msd_fft's columns (bytes): the FFT buffers of a block are ~10 x 8 bytes per
#: frame and column, so the block narrows as the trajectory grows and the peak memory stays flat
FFT_BLOCK_BYTES = 64 * 2**20


def msd_fft(positions, chunk_columns: int | None = None) -> np.ndarray:
    """Particle-averaged MSD for every lag 0..T-1 of `positions` (T, P, d) by the FFT algorithm, over blocks
    of `chunk_columns` coordinate columns (default: as many as fit FFT_BLOCK_BYTES)."""
    from scipy.fft import irfft, next_fast_len, rfft

    x = np.asarray(positions, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, :, None]
    T, P = x.shape[0], x.shape[1]
    cols = x.reshape(T, -1)
    n = next_fast_len(2 * T, real=True)
    if chunk_columns is None:
        chunk_columns = max(16, FFT_BLOCK_BYTES // (80 * n))
    s1_num = np.zeros(T)
    s2_num = np.zeros(T)
    for c0 in range(0, cols.shape[1], chunk_columns):
        block = cols[:, c0:c0 + chunk_columns]
        block = block - block.mean(axis=0)  # MSD is shift invariant; improves precision
        f = rfft(block, n=n, axis=0)
        ac = irfft(f * np.conj(f), n=n, axis=0)[:T]
        s2_num += ac.sum(axis=1)
        dsq = (block**2).sum(axis=1)
        csum = np.r_[0.0, np.cumsum(dsq)]
        m = np.arange(T)
        s1_num += csum[T - m] + csum[T] - csum[m]
    counts = (T - np.arange(T)) * P
    msd = (s1_num - 2.0 * s2_num) / counts
    msd[0] = 0.0
    return np.maximum(msd, 0.0)


class MSD(AnalysisBase):
    """MSD and D of the atoms of `group` (``compound="atoms"``) or of their residues' centres of mass.

    Parameters
    ----------
    group : AtomGroup
    compound : "atoms" | "residues" | "molecules"
    msd_type : "xyz" (default), "xy", "z", ...
    unwrap : bool, unwrap by minimum-image displacement accumulation (module docstring)
    fit_start_fraction, fit_end_fraction, beta_tolerance, max_fit_points : see fit_diffusion
    viscosity_Pa_s, temperature_K : optional, add the Yeh-Hummer corrected D (cubic boxes only; any
        other shape is refused with the reason in ``finite_size_correction``)

    Results: ``lagtimes_ps``, ``msd_nm2``, ``positions_nm`` (T, P, 3 unwrapped), ``dt_ps``,
    ``n_particles``, ``mean_volume_nm3``, ``mean_box_nm``, ``max_step_fraction`` and everything of
    :func:`fit_diffusion` (``D_nm2_per_ps``, ``D_sigma_nm2_per_ps``, ``D_cm2_per_s``, ``beta``,
    ``diffusive``, ``no_window_reason`` ...).
    """

    def __init__(self, group, compound="atoms", msd_type="xyz", unwrap=True, fit_start_fraction=0.1,
                 fit_end_fraction=0.5, beta_tolerance=0.1, max_fit_points=16, viscosity_Pa_s=None, temperature_K=None, **kwargs):
        super().__init__(group.universe.trajectory, **kwargs)
        self.group = check_atomgroup(group, "MSD group")
        if msd_type not in MSD_TYPES:
            raise ConfigError(one_of("msd_type", msd_type, MSD_TYPES))
        self.compound = compound
        self.msd_type = msd_type
        self._dims = ["xyz".index(c) for c in msd_type]
        self.unwrap = unwrap
        self.fit_kwargs = dict(fit_start_fraction=fit_start_fraction, fit_end_fraction=fit_end_fraction,
                               beta_tolerance=beta_tolerance, max_fit_points=max_fit_points)
        self.viscosity_Pa_s = viscosity_Pa_s
        self.temperature_K = temperature_K

    def _prepare(self):
        self._layout = compound_layout(self.group, self.compound)
        n = len(self.group) if self.compound == "atoms" else len(self._layout[1])
        self._pos = np.empty((self.n_frames, n, 3), dtype=np.float64)
        self._vol = np.full(self.n_frames, np.nan)
        self._box = np.full((self.n_frames, 3), np.nan)
        self._unwrapper = Unwrapper()

    def _single_frame(self):
        check_finite(self._ts, (self.group,), "MSD trajectory")
        p = self.group.positions
        dims = self._ts.dimensions
        has_box = dims is not None and np.all(np.asarray(dims[:3]) > 0)
        if self.compound != "atoms":
            if not has_box:
                raise InputError(f"MSD trajectory: frame {self._ts.frame} has no box; centres of mass need one")
            p = compound_centres(p, dims, self._layout)
        if self.unwrap:
            if not has_box:
                raise InputError(f"MSD trajectory: frame {self._ts.frame} has no box; unwrapping needs one "
                                 "(give unwrap=False for already unwrapped coordinates)")
            p = self._unwrapper.step(p, dims)
        self._pos[self._frame_index] = angstrom_to_nm(np.asarray(p, dtype=np.float64))
        if has_box:
            self._vol[self._frame_index] = box_volume_nm3(dims)
            self._box[self._frame_index] = angstrom_to_nm(np.asarray(dims[:3], dtype=float))

    def _conclude(self):
        r = self.results
        dt = frame_spacing_ps(self.times, "MSD trajectory")
        T = self.n_frames
        fit_window(T, self.fit_kwargs["fit_start_fraction"], self.fit_kwargs["fit_end_fraction"])
        pos = self._pos[:, :, self._dims]
        r.dt_ps = dt
        r.lagtimes_ps = np.arange(T) * dt
        r.msd_nm2 = msd_fft(pos)
        r.positions_nm = self._pos
        r.n_particles = self._pos.shape[1]
        r.msd_type = self.msd_type
        r.mean_volume_nm3 = float(np.nanmean(self._vol)) if np.isfinite(self._vol).any() else float("nan")
        r.mean_box_nm = np.nanmean(self._box, axis=0) if np.isfinite(self._box).any() else np.full(3, np.nan)
        r.max_step_fraction = self._unwrapper.max_step_fraction
        r.unwrap_precondition_ok = bool(r.max_step_fraction < 0.9)
        r.update(fit_diffusion(r.lagtimes_ps, r.msd_nm2, r.n_particles, dim=len(self._dims), positions_nm=pos,
                               **self.fit_kwargs))
        if self.viscosity_Pa_s is not None:
            if self.temperature_K is None:
                raise ConfigError("temperature_K: required with viscosity_Pa_s for the Yeh-Hummer correction")
            r.update(finite_size_correction(r.D_nm2_per_ps, r.mean_box_nm, self.viscosity_Pa_s, self.temperature_K))


def finite_size_correction(D_nm2_per_ps, box_nm, viscosity_Pa_s, temperature_K, cubic_tolerance=0.01) -> dict:
    """Yeh-Hummer corrected D for a cubic box; for any other shape the correction is refused (NaN) and
    ``finite_size_correction`` says why (module docstring)."""
    box = np.asarray(box_nm, dtype=float)
    if not (np.all(np.isfinite(box)) and np.ptp(box) <= cubic_tolerance * box.mean()):
        return {"finite_size_correction": (
                    f"not applied: box edges {np.round(box, 4).tolist()} nm are not cubic (within "
                    f"{100 * cubic_tolerance:g} %); Yeh-Hummer holds for cubic boxes only, a slab or other "
                    "anisotropic box needs the shape-dependent correction (Kikugawa et al. 2015, Vogele & "
                    "Hummer 2016)"),
                "yeh_hummer_correction_nm2_per_ps": float("nan"), "D_corrected_nm2_per_ps": float("nan"),
                "D_corrected_cm2_per_s": float("nan")}
    corr = yeh_hummer_correction_nm2_per_ps(float(box.mean()), viscosity_Pa_s, temperature_K)
    Dc = D_nm2_per_ps + corr
    return {"finite_size_correction": f"Yeh-Hummer, cubic box L = {box.mean():.4g} nm",
            "yeh_hummer_correction_nm2_per_ps": corr, "D_corrected_nm2_per_ps": float(Dc),
            "D_corrected_cm2_per_s": float(nm2_per_ps_to_cm2_per_s(Dc))}


def yeh_hummer_correction_nm2_per_ps(box_length_nm: float, viscosity_Pa_s: float, temperature_K: float) -> float:
    """k_B T xi / (6 pi eta L) in nm^2/ps (cubic box of edge L, shear viscosity eta in Pa s)."""
    if not (box_length_nm > 0 and viscosity_Pa_s > 0 and temperature_K > 0):
        raise ConfigError(
            f"yeh_hummer: box_length_nm={box_length_nm!r}, viscosity_Pa_s={viscosity_Pa_s!r}, "
            f"temperature_K={temperature_K!r}; all must be > 0")
    L_m = box_length_nm * M_PER_NM
    d_m2_per_s = BOLTZMANN_J_PER_K * temperature_K * YEH_HUMMER_XI / (6 * np.pi * viscosity_Pa_s * L_m)
    d_cm2_per_s = d_m2_per_s / M_PER_CM**2
    return float(cm2_per_s_to_nm2_per_ps(d_cm2_per_s))


def combine_estimates(values, sigmas) -> dict:
    """Combine independent estimates (e.g. D of replicas) into one value with an uncertainty.

    Inverse-variance weighted mean; sigma = internal error 1/sqrt(sum w) scaled by the Birge ratio
    sqrt(chi2/(n-1)) when that exceeds 1 (replicas scatter more than their error bars say). Without
    usable sigmas (non-finite or zero), the plain mean and its standard error are used.
    """
    x = np.asarray(values, dtype=float)
    s = np.asarray(sigmas, dtype=float)
    keep = np.isfinite(x)
    x, s = x[keep], s[keep]
    n = len(x)
    if n == 0:
        return {"mean": float("nan"), "sigma": float("nan"), "n": 0, "method": "no finite values"}
    if n == 1:
        return {"mean": float(x[0]), "sigma": float(s[0]) if np.isfinite(s[0]) else float("nan"), "n": 1,
                "method": "single estimate"}
    if np.all(np.isfinite(s)) and np.all(s > 0):
        w = 1.0 / s**2
        mean = float(np.sum(w * x) / np.sum(w))
        internal = float(1.0 / np.sqrt(np.sum(w)))
        chi2 = float(np.sum(w * (x - mean) ** 2))
        birge = float(np.sqrt(chi2 / (n - 1)))
        return {"mean": mean, "sigma": internal * max(1.0, birge), "n": n, "birge_ratio": birge,
                "method": "inverse-variance weighted mean; sigma scaled by the Birge ratio when > 1"}
    return {"mean": float(x.mean()), "sigma": float(x.std(ddof=1) / np.sqrt(n)), "n": n,
            "method": "plain mean and standard error (some sigmas unusable)"}
