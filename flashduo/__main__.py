"""``python -m flashduo``: see ``flashduo.cli``."""

import sys

from flashduo.cli import main

sys.exit(main())
