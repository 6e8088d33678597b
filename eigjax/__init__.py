"""eigjax: differentiable eigendecompositions for JAX that stay right at degenerate points.

The public API is re-exported here; everything else lives in private modules.
"""

from importlib.metadata import PackageNotFoundError, version as _version

from ._eigh import EighResult as EighResult
from ._eigh import eigh as eigh
from ._eigh import eigvalsh as eigvalsh

try:
    __version__ = _version("eigjax")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
