"""`python -m amr.cli` runs the `amr` command."""

import sys

from amr.cli import main

sys.exit(main())
