"""eigjax: differentiable eigendecompositions for JAX that stay right at degenerate points.

The public API is re-exported here; everything else lives in private modules.
"""

from importlib.metadata import PackageNotFoundError, version as _version

from ._eigh import EighResult as EighResult
from ._eigh import eigh as eigh
from ._eigh import eigvalsh as eigvalsh
from ._eig import EigGaugeCheck as EigGaugeCheck
from ._eig import EigLeftResult as EigLeftResult
from ._eig import EigResult as EigResult
from ._eig import eig as eig
from ._eig import eig_condition_numbers as eig_condition_numbers
from ._eig import eig_gauge_check as eig_gauge_check
from ._eig import eigvals as eigvals

try:
    __version__ = _version("eigjax")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
