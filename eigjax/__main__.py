"""``python -m eigjax``: the same as the ``eigjax`` console script."""

import sys

from .app._cli import main

sys.exit(main())
