"""Test-session settings.

Native thread pools (OpenMP in MDAnalysis' distance kernels, OpenBLAS in numpy/scipy) are limited to one
thread before any of those libraries load: the suite interleaves them with OpenMM contexts in one
process, and with the pools at full size we saw rare segmentation faults in a non-Python thread
(about one run in four of tests/test_analysis_* followed by tests/test_engine*). Speed is unaffected
on CI's two cores. Production code paths are untouched.
"""

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
