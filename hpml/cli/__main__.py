"""`python -m hpml.cli ...`: the same as the `hpml` command (what mpirun and job scripts launch)."""

import sys

from hpml.cli.main import main

sys.exit(main())
