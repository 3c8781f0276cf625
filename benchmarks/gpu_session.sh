#!/usr/bin/env bash
# One GPU session, one command, from the repository root with spemd installed (docs/running.md, "GPU
# benchmark"):   bash benchmarks/gpu_session.sh      (results: $OUT, default gpu_session_out/)
#   1. engine overhead: our production stage vs a bare OpenMM loop, CUDA and OpenCL, same card;
#   1b. LJ forms: the project's System vs the former table form vs NonbondedForce-LB on the default
#      config's two boxes (benchmarks/lj_forms.py), CUDA and OpenCL, NVT and NPT;
#   2. a slice of the paper study: PEO and CPE-10 at paper scale (params built here beforehand under
#      gpu_inputs/), minimise -> anneal -> cool -> NPT -> production within a wall budget each.
# Results land in $OUT (JSON, state CSVs, gzipped trajectories <= 16 MiB) and $OUT/gpu_results.tar.gz.
set -uo pipefail
if [ -f .whl/preamble.sh ]; then source .whl/preamble.sh || exit 1; fi  # the project's own device machines
export OUT=${OUT:-$PWD/gpu_session_out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-}
for system in PEO CPE-10; do  # paper-scale boxes (< 1 min each), unless prepared beforehand
    [ -f gpu_inputs/$system/box.pdb ] || spemd build --config config/paper.yaml --system $system --out gpu_inputs/$system || exit 1
done
BUDGET_PER_SYSTEM=${BUDGET_PER_SYSTEM:-170}
# at most 8 files come back: small results are bundled into one archive at the end
BUNDLE=gpu_results; mkdir -p $BUNDLE
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee $BUNDLE/gpu.txt
python3 benchmarks/engine_overhead.py --platform CUDA --atoms 23682 --time-ps 100 --out $BUNDLE/engine_overhead_cuda.json 2>&1 | tail -4
python3 benchmarks/engine_overhead.py --platform OpenCL --atoms 23682 --time-ps 50 --out $BUNDLE/engine_overhead_opencl.json 2>&1 | tail -4
for platform in CUDA OpenCL; do
    python3 benchmarks/lj_forms.py --platform $platform --steps 2000 --out $BUNDLE/lj_forms_${platform,,}.json 2>&1 | tail -4
    python3 benchmarks/lj_forms.py --platform $platform --steps 2000 --npt --out $BUNDLE/lj_forms_${platform,,}_npt.json 2>&1 | tail -3
done
for system in PEO CPE-10; do  # parametrise here: system.xml (~25 MB each) would not fit the transfer limit
    python3 -c "import sys, yaml; from pathlib import Path; from spemd.forcefields.parametrise import parametrise; from spemd.config import load_config; parametrise(Path(sys.argv[1]), load_config('config/paper.yaml')['forcefield'], Path(sys.argv[2]))" \
        gpu_inputs/$system/box.pdb gpu_params/$system || exit 1
done
python3 benchmarks/paper_slice.py --params gpu_params/PEO gpu_params/CPE-10 --temperature 353 \
    --budget-s "$BUDGET_PER_SYSTEM" --production-ps 5000 --frame-ps 40 --out slice 2>&1 | grep -v "step .*ETA" | tail -30
python3 - <<'PY'
import gzip, json, os, shutil
from pathlib import Path
from spemd.pipeline.dcd import HEADER_BYTES, read_header, truncate_dcd
out, bundle = Path(os.environ["OUT"]), Path("gpu_results")
shutil.copy("slice/slice_summary.json", bundle / "slice_summary.json")
for system in ("PEO", "CPE-10"):
    prod = Path("slice") / system / "production"
    for stage in ("anneal", "cool", "equilibrate", "production"):  # config/paper.yaml's stages
        csv = Path("slice") / system / stage / "state.csv"
        if csv.exists():
            shutil.copy(csv, bundle / f"{system}_{stage}_state.csv")
        done = Path("slice") / system / stage / "done.json"
        if done.exists():
            shutil.copy(done, bundle / f"{system}_{stage}_done.json")
    traj = prod / "trajectory.dcd"
    if traj.exists():
        info = read_header(traj)
        frame_bytes = (os.path.getsize(traj) - HEADER_BYTES) / max(info["n_frames"], 1)
        max_frames = int(15.5 * 2**20 / frame_bytes)  # stays under 16 MiB even if gzip gains nothing
        if info["n_frames"] > max_frames:
            truncate_dcd(traj, info["first_step"] + (max_frames - 1) * info["interval"])
        with open(traj, "rb") as src, gzip.open(out / f"{system}_production.dcd.gz", "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst)
        print(system, read_header(traj))
shutil.make_archive(str(out / "gpu_results"), "gztar", root_dir=".", base_dir="gpu_results")
PY
ls -la $OUT
