"""Experiments that ship with eigjax, installed as ``eigjax.experiments``.

A config names one by its short name (``experiment: fmmc``); ``eigjax list`` shows them,
and ``eigjax run fmmc`` runs the shipped config of the same name. Inside this package,
modules import each other relatively (``from ._graphs import ...``): the repository keeps
the folder at its root, an installed eigjax has it under its own namespace.

See :class:`eigjax.app.Experiment` (``eigjax/app/_experiment.py``) for the interface an experiment module implements, and
``eigjax/app/_shipped.py`` for how a config's ``experiment:`` name is resolved.
"""
