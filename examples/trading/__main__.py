"""``python -m examples.trading``: see :mod:`examples.trading.run`."""
from __future__ import annotations

import sys

from examples.trading.run import main

sys.exit(main())
