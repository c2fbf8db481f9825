"""`python -m servermanager`: the same as the `servermanager` console script."""

import sys

from servermanager.cli import main

sys.exit(main())
