"""``python -m spemd``: the same command line as the ``spemd`` console script."""

import sys

from spemd.pipeline.cli import main

sys.exit(main())
