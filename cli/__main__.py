"""`python -m cli`: the same as the `petrel` command."""

import sys

from cli.main import main

sys.exit(main())
