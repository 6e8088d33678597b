"""Experiments that ship with eigjax, each runnable with ``eigjax run configs/NAME.yaml``.

See ``eigjax/app/_runner.py`` for the interface an experiment module implements.
"""
