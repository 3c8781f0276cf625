"""Speed and memory of the analysis package vs MDAnalysis on one synthetic trajectory.

Task: g(r) Na-O (0-1.0 nm, 200 bins) + MSD of Na + D fit, on a DCD written here of 2,000 frames x
20,000 atoms (200 "Na", 800 "O", the rest filler; Brownian, D = 1e-3 nm^2/ps, wrapped), i.e. the
pipeline's file format; topology loading is outside the timed region (the same for both).
Ours: analysis.rdf.RDF + analysis.msd.MSD in one trajectory pass (run_together), D with block
uncertainty. MDAnalysis: InterRDF + EinsteinMSD(fft=True) (+ a least-squares D fit), each its own
pass, as a user would run them. Both read the same file; times are wall clock of the whole analysis
(trajectory reading included) and the process's CPU time over it, best of three alternating repeats.
Both sides run on one core, so on a machine that other jobs share the CPU-time ratio is the fair one
(wall time then counts the time the process waited for a core). Prints both ratios (target >= 2x)
and the peak traced memory of the RDF for two trajectory lengths (must not grow with frames).

Where our time goes (cProfile, issue 30): the pair search of the RDF was ~60 % of it (a periodic
KD-tree); analysis/_kernels.py's compiled all-pairs loop replaced it, and the per-frame volume
reference is summed as counts over the frames of one volume (analysis/rdf.py).

    .venv/bin/python benchmarks/analysis_speed.py            # full size (writes a ~460 MiB temp DCD)
    .venv/bin/python benchmarks/analysis_speed.py --small    # quick check (same system, 200 frames)
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np


def write_trajectory(path, n_atoms, n_frames, n_na, n_o, box_nm, seed=0):
    import MDAnalysis as mda

    from spemd.units import nm_to_angstrom

    rng = np.random.default_rng(seed)
    u = mda.Universe.empty(n_atoms, n_residues=n_atoms, atom_resindex=np.arange(n_atoms), trajectory=True)
    names = ["NA"] * n_na + ["O"] * n_o + ["C"] * (n_atoms - n_na - n_o)
    u.add_TopologyAttr("names", names)
    u.add_TopologyAttr("resnames", names)
    u.add_TopologyAttr("resids", np.arange(1, n_atoms + 1))
    L = nm_to_angstrom(box_nm)
    dims = [L, L, L, 90.0, 90.0, 90.0]
    x = rng.random((n_atoms, 3)) * L
    step = nm_to_angstrom(np.sqrt(2 * 1e-3 * 1.0))  # D = 1e-3 nm^2/ps, dt = 1 ps
    with mda.Writer(str(path), n_atoms, dt=1.0) as w:
        for _ in range(n_frames):
            u.atoms.positions = np.mod(x, L)
            u.dimensions = dims
            w.write(u.atoms)
            x = x + rng.normal(0, step, size=x.shape)
    u.atoms.write(str(Path(path).with_suffix(".pdb")))
    return Path(path).with_suffix(".pdb")


def ours(u):
    from spemd.analysis._common import run_together
    from spemd.analysis.msd import MSD
    from spemd.analysis.rdf import RDF

    na, o = u.select_atoms("name NA"), u.select_atoms("name O")
    rdf = RDF(na, o, r_max_nm=1.0, bins=200)
    msd = MSD(na)
    run_together([rdf, msd])
    return rdf.results.rdf, msd.results.msd_nm2, msd.results.D_nm2_per_ps, msd.results.D_sigma_nm2_per_ps


def mdanalysis(u):
    from MDAnalysis.analysis.msd import EinsteinMSD
    from MDAnalysis.analysis.rdf import InterRDF
    from scipy.stats import linregress

    na, o = u.select_atoms("name NA"), u.select_atoms("name O")
    rdf = InterRDF(na, o, nbins=200, range=(0.0, 10.0)).run()
    # EinsteinMSD needs unwrapped input; the benchmark only times it (the result is not compared here)
    m = EinsteinMSD(na, msd_type="xyz", fft=True).run()
    t = m.times - m.times[0]
    n = len(t)
    i0, i1 = max(1, int(0.1 * (n - 1))), int(0.5 * (n - 1))
    fit = linregress(t[i0:i1 + 1], m.results.timeseries[i0:i1 + 1])
    return rdf.results.rdf, m.results.timeseries, fit.slope / 6 / 100.0


def rdf_peak_memory(top, trj, n_frames):
    from spemd.analysis._common import load_universe
    from spemd.analysis.rdf import RDF

    u = load_universe(top, trj)
    na, o = u.select_atoms("name NA"), u.select_atoms("name O")
    gc.collect()
    tracemalloc.start()
    RDF(na, o, r_max_nm=1.0, bins=200).run(stop=n_frames)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="200 frames x 20,000 atoms (quick check)")
    args = ap.parse_args(argv)
    n_atoms, n_frames = (20000, 200) if args.small else (20000, 2000)
    n_na, n_o = 200, 800
    box = (n_atoms / 100.0) ** (1 / 3)  # 100 atoms / nm^3
    warnings.simplefilter("ignore")
    # import everything before timing so that neither side pays import costs
    import MDAnalysis.analysis.msd  # noqa: F401
    import MDAnalysis.analysis.rdf  # noqa: F401
    import scipy.fft  # noqa: F401
    import scipy.spatial  # noqa: F401
    import scipy.stats  # noqa: F401
    import tidynamics  # noqa: F401

    import spemd.analysis._common  # noqa: F401
    import spemd.analysis._kernels  # noqa: F401  (numba: compiled once, then cached on disk)
    import spemd.analysis.msd  # noqa: F401
    import spemd.analysis.rdf  # noqa: F401
    with tempfile.TemporaryDirectory() as tmp:
        trj = Path(tmp) / "bench.dcd"
        t0 = time.perf_counter()
        top = write_trajectory(trj, n_atoms, n_frames, n_na, n_o, box)
        print(f"trajectory: {n_frames} frames x {n_atoms} atoms ({n_na} Na, {n_o} O), box {box:.3f} nm, "
              f"{trj.stat().st_size / 2**20:.0f} MiB DCD, written in {time.perf_counter() - t0:.1f} s")
        import MDAnalysis as mda

        u_ours, u_mda = mda.Universe(str(top), str(trj)), mda.Universe(str(top), str(trj))
        t_ours, t_mda, c_ours, c_mda = [], [], [], []
        for _ in range(3):  # alternate, keep the best of three (the machine is shared)
            t0, c0 = time.perf_counter(), time.process_time()
            g_ours, msd_ours, D, sD = ours(u_ours)
            t_ours.append(time.perf_counter() - t0)
            c_ours.append(time.process_time() - c0)
            t0, c0 = time.perf_counter(), time.process_time()
            g_mda, _, D_mda_wrapped = mdanalysis(u_mda)
            t_mda.append(time.perf_counter() - t0)
            c_mda.append(time.process_time() - c0)
        t_ours, t_mda, c_ours, c_mda = min(t_ours), min(t_mda), min(c_ours), min(c_mda)
        rel = np.max(np.abs(g_ours - g_mda) / np.maximum(np.abs(g_mda), 1e-12))
        print(f"ours (RDF + MSD + D, one pass): {t_ours:.2f} s wall, {c_ours:.2f} s CPU; D = {D:.4g} +- {sD:.2g} "
              "nm^2/ps (true 1e-3)")
        print(f"MDAnalysis (InterRDF + EinsteinMSD fft + fit): {t_mda:.2f} s wall, {c_mda:.2f} s CPU "
              f"(its D on wrapped input: {D_mda_wrapped:.3g} nm^2/ps, not unwrapped)")
        print(f"speed-up: {t_mda / t_ours:.2f}x wall, {c_mda / c_ours:.2f}x CPU time (target >= 2x); "
              f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; max relative g(r) difference {rel:.2e}")
        short, full = max(2, n_frames // 4), n_frames
        m_short, m_full = rdf_peak_memory(top, trj, short), rdf_peak_memory(top, trj, full)
        print(f"RDF peak traced memory: {m_short / 2**20:.2f} MiB ({short} frames), "
              f"{m_full / 2**20:.2f} MiB ({full} frames); ratio {m_full / m_short:.2f} (must stay ~1)")


if __name__ == "__main__":
    main()
