#!/usr/bin/env python3
"""Stand-in for `spemd md`: a resumable "simulation" with the real stage's exit-code contract.

Writes one frame (``frame,time_ps,value``) to ``frames.csv`` every ``--seconds-per-frame``; every
``--checkpoint-every`` frames it records the frame count and byte length in ``checkpoint.json``
(atomically). A new attempt truncates ``frames.csv`` back to the checkpoint, so frames written after
the last checkpoint by a killed job are dropped and written again: the finished output is the same
however the run was cut. Before a frame that would overrun the budget (``SPEMD_MAX_WALL_SECONDS``,
else ``SLURM_JOB_END_TIME``, else none) it checkpoints and exits 75; when all frames exist it writes
``done.json``. Each attempt claims a GPU through ``pipeline.gpus.claim_gpu`` like the real engine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from spemd.files import write_json_atomic
from spemd.pipeline.gpus import claim_gpu

EXIT_RERUN_TO_CONTINUE = 75


def budget_seconds(margin: float) -> float:
    if os.environ.get("SPEMD_MAX_WALL_SECONDS"):
        return float(os.environ["SPEMD_MAX_WALL_SECONDS"])
    if os.environ.get("SLURM_JOB_END_TIME"):
        return float(os.environ["SLURM_JOB_END_TIME"]) - time.time() - margin
    return math.inf


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--frames", type=int, required=True)
    ap.add_argument("--dt-ps", type=float, default=0.2)
    ap.add_argument("--seconds-per-frame", type=float, default=0.2)
    ap.add_argument("--checkpoint-every", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frames_path, ckpt_path = out / "frames.csv", out / "checkpoint.json"
    if (out / "done.json").exists():
        return 0
    ckpt = json.loads(ckpt_path.read_text()) if ckpt_path.exists() else {"frames": 0, "bytes": 0, "segments": []}
    with open(frames_path, "ab") as fh:
        dropped = fh.tell() - ckpt["bytes"]
        fh.truncate(ckpt["bytes"])
    budget = budget_seconds(margin=2.0)
    job = os.environ.get("SLURM_JOB_ID", "local")
    print(f"fake_md: resume at frame {ckpt['frames']} (dropped {dropped} bytes after the checkpoint), "
          f"budget {budget:.1f} s, job {job}", flush=True)

    with claim_gpu() as device:
        segment = {"job": job, "device": device, "first": ckpt["frames"], "dropped_bytes": dropped,
                   "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
        n = ckpt["frames"]
        with open(frames_path, "a") as fh:
            while n < args.frames:
                if time.time() - t0 + args.seconds_per_frame > budget:
                    break
                time.sleep(args.seconds_per_frame)
                value = ((args.seed * 1103515245 + n * 12345) % 2**31) / 2**31
                fh.write(f"{n},{(n + 1) * args.dt_ps:.6f},{value:.9f}\n")
                fh.flush()
                n += 1
                if n % args.checkpoint_every == 0 or n == args.frames:
                    os.fsync(fh.fileno())
                    ckpt = {"frames": n, "bytes": fh.tell(), "segments": ckpt["segments"]}
                    write_json_atomic(ckpt_path, ckpt)
            # checkpoint what is there before stopping for the wall time
            os.fsync(fh.fileno())
            segment["last"] = n
            ckpt = {"frames": n, "bytes": fh.tell(), "segments": ckpt["segments"] + [segment]}
            write_json_atomic(ckpt_path, ckpt)

    if n < args.frames:
        print(f"fake_md: stopped at frame {n}/{args.frames} before the wall-time limit; exit 75", flush=True)
        return EXIT_RERUN_TO_CONTINUE
    write_json_atomic(out / "done.json", {"frames": n, "dt_ps": args.dt_ps, "segments": ckpt["segments"]})
    print(f"fake_md: done, {n} frames", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
