"""``python -m scopeops``: the ``scopeops`` command."""

import sys

from scopeops.cli import main

sys.exit(main())
