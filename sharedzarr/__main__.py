"""``python -m sharedzarr``: the ``sharedzarr`` command (see :mod:`sharedzarr.cli`)."""

import sys

from .cli import main

sys.exit(main())
