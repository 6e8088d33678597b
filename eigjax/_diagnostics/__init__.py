"""Diagnostics: spectral reports, a gradient checker and a gauge-invariance check.

Three questions a user of a differentiable eigendecomposition keeps asking, one module
each:

1. *Is my matrix near a degenerate point?* :func:`spectral_report` (:mod:`._report`).
2. *Is the derivative of my loss right?* :func:`check_grad` (:mod:`._grad`).
3. *Is my loss well defined at all?* :func:`check_gauge_invariance` and
   :func:`random_gauge` (:mod:`._gauge`).

All three return NamedTuples of arrays and work under ``jit``. The ``eigjax check``
command built on them is part of the application (:mod:`eigjax.app._check`).
"""

from ._gauge import GaugeCheck as GaugeCheck
from ._gauge import check_gauge_invariance as check_gauge_invariance
from ._gauge import random_gauge as random_gauge
from ._grad import GradCheck as GradCheck
from ._grad import check_grad as check_grad
from ._report import SpectralReport as SpectralReport
from ._report import format_spectral_report as format_spectral_report
from ._report import spectral_report as spectral_report
