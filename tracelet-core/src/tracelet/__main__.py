"""``python -m tracelet``: the ``tracelet`` command."""

import sys

from tracelet.cli import main

sys.exit(main())
