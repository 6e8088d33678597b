"""eigjax's application: the ``eigjax`` command line, config-driven experiments, sweeps and the
batch evaluator. It needs the ``app`` extra (optax, pyyaml, tqdm, matplotlib):
``pip install eigjax[app]``. The library (``import eigjax``) never imports this package.

* :func:`run_batch_eval`: the chunked, sharded, resumable batch evaluator (``eigjax run
  batch_eval``).
* :class:`Experiment`: the interface (a ``typing.Protocol``) an experiment module implements.
* :func:`load_config`, :func:`resolve_config`: a config file as ``eigjax run`` reads it
  (``resolve_config(load_config(path)) -> (cfg, module, problem)``); :func:`make_optimizer`:
  the optax optimizer a config's ``optimizer:`` block names (``benchmarks/bench_runner.py``
  rebuilds the runner's loop with these).
* :func:`batch_input`, :func:`generate_matrices`, :func:`batch_function`: the batch
  evaluator's pieces (its input source by row range, the synthetic generator's rows, the
  per-chunk computation), for benchmarks (``benchmarks/bench_batch_generator.py``).
* :func:`run_check`: the entry point of ``eigjax check`` (``run_check(argv) -> exit
  status``), without the command line.
* :class:`ConfigError` (also named :class:`BatchConfigError`): an invalid config.

Example:
    >>> from eigjax.app import run_check
    >>> run_check(["second_difference", "-n", "3"])  # doctest: +ELLIPSIS
    input: second_difference, shape (3, 3), float64, Hermitian
    ...
    0
"""

from ._batch import _generate as generate_matrices
from ._batch import _make_fn as batch_function
from ._batch import _Source as batch_input
from ._batch import run_batch_eval as run_batch_eval
from ._check import run_check as run_check
from ._config import load_yaml as load_config
from ._config import resolve as resolve_config
from ._errors import BatchConfigError as BatchConfigError
from ._errors import ConfigError as ConfigError
from ._experiment import Experiment as Experiment
from ._optim import make_optimizer as make_optimizer

__all__ = [
    "BatchConfigError",
    "ConfigError",
    "Experiment",
    "batch_function",
    "batch_input",
    "generate_matrices",
    "load_config",
    "make_optimizer",
    "resolve_config",
    "run_batch_eval",
    "run_check",
]
