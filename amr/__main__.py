import sys

from amr.cli import main

sys.exit(main())
