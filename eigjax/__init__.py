"""eigjax: differentiable eigendecompositions for JAX that stay right at degenerate points.

The public API is re-exported here; everything else lives in private modules. This package
(the library) imports jax and numpy only; the experiment runner, batch evaluator and command
line live in :mod:`eigjax.app` (installed with ``pip install eigjax[app]``).
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

# Result NamedTuples serialize inside jax.export programs (as "eigjax.<name>").
from jax import export as _export

from ._diagnostics import GaugeCheck as GaugeCheck
from ._diagnostics import GradCheck as GradCheck
from ._diagnostics import SpectralReport as SpectralReport
from ._diagnostics import check_gauge_invariance as check_gauge_invariance
from ._diagnostics import check_grad as check_grad
from ._diagnostics import format_spectral_report as format_spectral_report
from ._diagnostics import random_gauge as random_gauge
from ._diagnostics import spectral_report as spectral_report
from ._eig import EigGaugeCheck as EigGaugeCheck
from ._eig import EigLeftResult as EigLeftResult
from ._eig import EigResult as EigResult
from ._eig import eig as eig
from ._eig import eig_condition_numbers as eig_condition_numbers
from ._eig import eig_gauge_check as eig_gauge_check
from ._eig import eigvals as eigvals
from ._eigh import EighResult as EighResult
from ._eigh import eigh as eigh
from ._eigh import eigvalsh as eigvalsh
from ._generalized_eigh import eigh_generalized as eigh_generalized
from ._generalized_eigh import eigvalsh_generalized as eigvalsh_generalized
from ._matfun import expm as expm
from ._matfun import inv_sqrtm as inv_sqrtm
from ._matfun import logm as logm
from ._matfun import matrix_function as matrix_function
from ._matfun import powm as powm
from ._matfun import sqrtm as sqrtm
from ._partial import PartialEighResult as PartialEighResult
from ._partial import eigh_partial as eigh_partial
from ._testmatrices import named_matrix as named_matrix

for _cls in (EighResult, EigResult, EigLeftResult, PartialEighResult):
    _export.register_namedtuple_serialization(_cls, serialized_name=f"eigjax.{_cls.__name__}")
del _cls

try:
    __version__ = _version("eigjax")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
