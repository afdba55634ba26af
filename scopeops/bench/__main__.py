"""``python -m scopeops.bench``: print the ratio table."""

import sys

from scopeops.bench import main

sys.exit(main())
