"""`python -m jobkit` is the `jobkit` command."""

import sys

from .cli import main

sys.exit(main())
