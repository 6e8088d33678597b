"""Configs shipped with eigjax (installed as ``eigjax.configs``): ``eigjax list`` shows them,
``eigjax run NAME`` runs one by its file's stem, ``eigjax run NAME --smoke`` its smoke overlay."""
