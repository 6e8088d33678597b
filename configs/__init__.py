"""Configs shipped with eigjax (installed as ``eigjax.configs``; ``eigjax list`` shows them)."""
