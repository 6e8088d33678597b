"""eigjax's application: the ``eigjax`` command line, config-driven experiments, sweeps and the
batch evaluator. It needs the ``app`` extra (optax, pyyaml, tqdm, matplotlib):
``pip install eigjax[app]``. The library (``import eigjax``) never imports this package.
"""

from ._batch import BatchConfigError as BatchConfigError
from ._batch import run_batch_eval as run_batch_eval
