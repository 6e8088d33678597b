"""``python -m eigjax``: the same as the ``eigjax`` console script."""

import sys

from .cli import main

sys.exit(main())
