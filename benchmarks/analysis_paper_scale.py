"""Wall time and peak memory of `spemd analyse-run` on config/paper.yaml's CPE-10 box (53,058 atoms).

Targets (issue 30, on 2 cores): <= 0.1 s per frame for the whole analyse-run, i.e. a 50 ns production
saved every 10 ps (5,000 frames) in under 10 minutes, and a peak RSS < 4 GB whatever the length.

What it does:
1. builds CPE-10 with the project's builder and parametrises it (what benchmarks/build_speed.py times),
   or reuses the params folder of an earlier call (`--work`);
2. writes a synthetic production DCD of N frames at 10 ps (paper.yaml's production interval): every
   electrolyte atom jiggles about its built position (Gaussian, THERMAL_NM per component), the slab is
   rigid (as in the workflow), and each Na+ and each TFSI- (as a rigid residue) random-walks with
   D = D_NM2_PER_PS, wrapped into the box by residue, so the MSD has a diffusive window and the whole
   analysis path runs (D, conductivities, pairing, residence, interface parts). The box is constant
   (the paper's production is NVT). The Na-O(TFSI) shell radius is set (analysis.shell_radius_nm)
   because ions that walk independently of each other form no first shell; pairing, residence and
   speciation then run as on a real trajectory;
3. times `spemd analyse-run` as its own process at each length (wall clock from start to exit, Python
   start-up and imports included, and the CPU time, user + system, of that process) and reads its
   peak RSS from the kernel (os.wait4: ru_usage of that child alone);
4. prints s/frame and peak RSS per length and the extrapolation to 5,000 frames (t = a + b N through
   the two lengths; memory likewise), and writes them to a results file naming the machine, the date
   and the load (1-minute load average before and after each run). On a machine that other jobs share,
   the wall clock counts the time the process waited for a core; its CPU time is then the better
   estimate of the wall time on an idle machine (the analysis runs on one core, except the volume
   grid's KD-tree look-ups, which use both: there CPU time exceeds wall time). The exit status
   follows the wall-clock targets.

    .venv/bin/python benchmarks/analysis_paper_scale.py                      # 100 and 400 frames
    .venv/bin/python benchmarks/analysis_paper_scale.py --frames 100 400 --work /tmp/spemd_cpe10

The DCDs (~64 MB per 100 frames) go to --work (default: a folder under the system's temp dir), never
into the repository.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAPER = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
SYSTEM = "CPE-10"
TARGET_S_PER_FRAME = 0.1
TARGET_RSS_GB = 4.0
EXTRAPOLATE_TO = 5000
FRAME_PS = 10.0  # paper.yaml production: trajectory_interval_ps
THERMAL_NM = 0.02  # per-component jiggle of every electrolyte atom about its built position
D_NM2_PER_PS = 1e-4  # 1e-8 cm^2/s, the order of Na+ in PEO/NaTFSI at 353 K
TEMPERATURE_K = 353.0
NA_O_SHELL_NM = 0.32  # inside analysis/rdf.py's Na-O(TFSI) bounds (0.28-0.40 nm)


def machine() -> str:
    model = "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()}-vCPU {model}"


def params_folder(work: Path) -> Path:
    """config/paper.yaml's CPE-10 built and parametrised under `work` (reused when already there)."""
    params = work / "params"
    if (params / "topology.pdb").is_file() and (params / "forcefield.json").is_file():
        print(f"reusing {params}", flush=True)
        return params
    from spemd.config import validate_sections
    from spemd.forcefields.parametrise import parametrise
    from spemd.systems.build import build_box

    t0 = time.perf_counter()
    cfg = validate_sections({"build": PAPER["build"]})["build"]
    build_box(SYSTEM, PAPER["systems"][SYSTEM], cfg, PAPER["seed"], work / "build",
              PAPER["forcefield"]["nonbonded_cutoff_nm"])
    parametrise(work / "build" / "box.pdb", {**PAPER["forcefield"], "rigid_mof": True}, params)
    print(f"built and parametrised {SYSTEM} in {time.perf_counter() - t0:.0f} s", flush=True)
    return params


def write_trajectory(topology: Path, dcd: Path, n_frames: int, seed: int = 0) -> int:
    """The synthetic production of the module docstring; returns the number of atoms."""
    import MDAnalysis as mda

    from spemd.analysis.volume import slab_atoms
    from spemd.units import nm_to_angstrom

    u = mda.Universe(str(topology))
    rng = np.random.default_rng(seed)
    L = np.asarray(u.dimensions[:3], dtype=np.float64)
    x0 = u.atoms.positions.astype(np.float64)
    slab = slab_atoms(u)
    mobile = np.ones(len(x0), dtype=bool)
    if slab is not None:
        mobile[slab.indices] = False
    ions = u.select_atoms("resname NA TFS")
    # every ion residue walks as one body: a walker per residue, atoms follow their residue
    res_of_atom = np.full(len(x0), -1)
    res_of_atom[ions.indices] = np.unique(ions.resindices, return_inverse=True)[1]
    n_walkers = int(res_of_atom.max()) + 1
    first = np.array([ions.residues[k].atoms[0].index for k in range(n_walkers)])
    walk = np.zeros((n_walkers, 3))
    jiggle, step = nm_to_angstrom(THERMAL_NM), nm_to_angstrom(np.sqrt(2 * D_NM2_PER_PS * FRAME_PS))
    is_ion = res_of_atom >= 0
    with mda.Writer(str(dcd), len(x0), dt=FRAME_PS) as w:
        for _ in range(n_frames):
            shift = walk - L * np.floor((x0[first] + walk) / L)  # wrap each residue by its first atom
            x = x0.copy()
            x[is_ion] += shift[res_of_atom[is_ion]]
            x[mobile] += rng.normal(0.0, jiggle, size=(int(mobile.sum()), 3))
            u.atoms.positions = x
            w.write(u.atoms)
            walk += rng.normal(0.0, step, size=walk.shape)
    return len(x0)


def analyse(params: Path, production: Path, out: Path, log: Path) -> dict:
    """One `spemd analyse-run` process: wall s, peak RSS (ru_maxrss of that child), load before/after."""
    cfg = {"analysis": {**PAPER.get("analysis", {}), "shell_radius_nm": {"Na-O_TFSI": NA_O_SHELL_NM}}}
    cmd = [sys.executable, "-m", "spemd", "analyse-run", "--config-json", json.dumps(cfg), "--params", str(params),
           "--production", str(production), "--temperature", f"{TEMPERATURE_K:g}", "--system", SYSTEM,
           "--out", str(out)]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"analyse-run failed ({proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    return {"wall_s": wall, "rss_gb": usage.ru_maxrss * 1024 / 1e9, "cpu_s": usage.ru_utime + usage.ru_stime,
            "load_before": load0, "load_after": os.getloadavg()[0]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, nargs=2, default=[100, 400], help="two trajectory lengths (frames)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "spemd_analysis_paper_scale",
                    help="folder for the built box, params and DCDs (reused; default %(default)s)")
    ap.add_argument("--results", type=Path, default=None,
                    help="results file (default benchmarks/results/analysis_paper_scale_<machine>_<load>.txt)")
    args = ap.parse_args(argv)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    params = params_folder(work)
    rows = []
    for n in sorted(args.frames):
        production = work / f"production_{n}"
        production.mkdir(exist_ok=True)
        dcd = production / "trajectory.dcd"
        if not dcd.is_file():
            t0 = time.perf_counter()
            write_trajectory(params / "topology.pdb", dcd, n)
            print(f"wrote {n} frames ({dcd.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.0f} s", flush=True)
        out = work / f"analysis_{n}"
        r = analyse(params, production, out, work / f"analyse_{n}.log")
        transport = json.loads((out / "transport.json").read_text())
        r.update(frames=n, s_per_frame=r["wall_s"] / n,
                 D_Na=transport["diffusion"]["Na"]["D_nm2_per_ps"],
                 pairing=transport["pairing"] is not None,
                 volume_frames=len(transport["electrolyte"].get("volume_frames") or []))
        rows.append(r)
        print(f"{n:5d} frames: {r['wall_s']:7.1f} s wall ({r['s_per_frame']:.3f} s/frame), {r['cpu_s']:.0f} s CPU, "
              f"peak RSS {r['rss_gb']:.2f} GB, load {r['load_before']:.2f} -> {r['load_after']:.2f}; "
              f"D(Na) {r['D_Na']} nm^2/ps (true {D_NM2_PER_PS:g}), pairing {'ran' if r['pairing'] else 'skipped'}",
              flush=True)
    (na, nb) = rows[0]["frames"], rows[1]["frames"]
    rss_slope = (rows[1]["rss_gb"] - rows[0]["rss_gb"]) / (nb - na)
    rss_ext = rows[1]["rss_gb"] + rss_slope * (EXTRAPOLATE_TO - nb)
    met_m = all(r["rss_gb"] < TARGET_RSS_GB for r in rows) and rss_ext < TARGET_RSS_GB
    summary, met = [], {}
    for key, what in (("wall_s", "wall clock"), ("cpu_s", "CPU time (user + system) of the analyse-run process")):
        per_frame = (rows[1][key] - rows[0][key]) / (nb - na)
        fixed = rows[0][key] - per_frame * na
        t_ext = fixed + per_frame * EXTRAPOLATE_TO
        met[key] = (all(r[key] / r["frames"] <= TARGET_S_PER_FRAME for r in rows)
                    and t_ext / EXTRAPOLATE_TO <= TARGET_S_PER_FRAME)
        per_len = ", ".join(f"{r['frames']} frames {r[key] / r['frames']:.3f} s/frame" for r in rows)
        summary.append(f"{what}: {per_len}; extrapolated to {EXTRAPOLATE_TO} frames: {fixed:.1f} s fixed + "
                       f"{per_frame:.4f} s/frame x {EXTRAPOLATE_TO} = {t_ext:.0f} s ({t_ext / 60:.1f} min, "
                       f"{t_ext / EXTRAPOLATE_TO:.3f} s/frame); target <= {TARGET_S_PER_FRAME} s/frame at both "
                       f"lengths and extrapolated: {'met' if met[key] else 'MISSED'}")
    rss = ", ".join(f"{r['rss_gb']:.2f}" for r in rows)
    summary.append(f"peak RSS {rss} GB; "
                   f"{rss_slope * 1e3 * 1000:.1f} MB per 1000 frames, extrapolated {rss_ext:.2f} GB at {EXTRAPOLATE_TO} "
                   f"frames; target < {TARGET_RSS_GB:g} GB: {'met' if met_m else 'MISSED'}")
    print("\n".join(summary))
    mach = machine()
    busy = max(max(r["load_before"], r["load_after"]) for r in rows)
    state = "idle" if busy < 1.5 else "loaded"  # analyse-run itself keeps one core busy (load ~1)
    slug = "_".join(re.sub(r"\(R\)|\(TM\)", "", mach).lower().split()[1:3])  # "intel_xeon", "amd_epyc"
    name = args.results or (ROOT / "benchmarks" / "results" /
                            f"analysis_paper_scale_cpu_{os.cpu_count()}core_{slug}_{state}.txt")
    lines = [f"# python benchmarks/analysis_paper_scale.py --frames {na} {nb}",
             f"# Machine: {mach}; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; Python "
             f"{platform.python_version()}; 1-minute load average {min(r['load_before'] for r in rows):.2f}-{busy:.2f} "
             f"({state}: {'other jobs shared the cores, so the times are upper bounds' if state == 'loaded' else 'nothing else running; the load is its own'})",
             f"# {SYSTEM} of config/paper.yaml, synthetic production at {FRAME_PS:g} ps/frame (module docstring); "
             f"analysis section of paper.yaml + shell_radius_nm Na-O_TFSI {NA_O_SHELL_NM}",
             "frames  wall_s  s_per_frame  cpu_s  peak_rss_GB  load_before  load_after  D_Na_nm2_per_ps  volume_frames"]
    lines += [f"{r['frames']:6d}  {r['wall_s']:6.1f}  {r['s_per_frame']:11.4f}  {r['cpu_s']:5.0f}  {r['rss_gb']:11.3f}  "
              f"{r['load_before']:11.2f}  {r['load_after']:10.2f}  {r['D_Na']!s:>15}  {r['volume_frames']:13d}" for r in rows]
    lines += ["# " + line for line in summary]
    name.parent.mkdir(parents=True, exist_ok=True)
    name.write_text("\n".join(lines) + "\n")
    print(f"wrote {name}")
    return 0 if met["wall_s"] and met_m else 1


if __name__ == "__main__":
    raise SystemExit(main())
