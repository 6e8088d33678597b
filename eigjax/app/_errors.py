"""The application's errors and the one style of their messages.

Every message reads ``<key or function>: expected <what>, got <what arrived>``, as the
library's trace-time checks (``eigjax/_checks.py``) do; values quoted in a message are
shortened to about ``MAX_MESSAGE_VALUE`` characters (:func:`short_repr`), never built
whole (a config value can be huge: a long list, or a YAML alias expanded many times).

- :class:`ConfigError`: an invalid config, argument or input, found before anything is
  written (the runner's and the batch evaluator's alike; ``BatchConfigError`` is the same
  class under its older name). The CLI exits with code 2.
- :class:`StateError`: a file in the output directory cannot be used (damaged, missing,
  or a link eigjax did not create). The CLI exits with code 3.
- :class:`NonFiniteObjective`: a run's objective became NaN or inf. The CLI exits with code 3.
"""

from __future__ import annotations

import reprlib


class ConfigError(ValueError):
    """An invalid config: the message names the key, the expected and the given value."""


BatchConfigError = ConfigError  # the batch evaluator's name for it (eigjax.app.BatchConfigError)


class StateError(RuntimeError):
    """A file in the output directory cannot be used (damaged, missing, or a link eigjax
    did not create): the message names the file. The CLI exits with code 3."""


class NonFiniteObjective(RuntimeError):
    """The objective became NaN or inf; the message names the step."""


MAX_MESSAGE_VALUE = 200  # characters of a value quoted in an error message

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 4, 12, 12, 12
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = MAX_MESSAGE_VALUE, MAX_MESSAGE_VALUE, 60


def short_repr(value, limit: int = MAX_MESSAGE_VALUE) -> str:
    """``repr(value)`` cut to about ``limit`` characters, without building the whole repr."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_text(text, limit: int = MAX_MESSAGE_VALUE) -> str:
    """``str(text)`` on one line, cut to ``limit`` characters (a message quoting another)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value) -> str:
    """A value as a message quotes it: its short repr and its type, ``[1, 2] (list)``."""
    return f"{short_repr(value)} ({type(value).__name__})"


def config_error(key: str, expected: str, value) -> ConfigError:
    """``ConfigError("<key>: expected <expected>, got <value> (<type>)")``."""
    return ConfigError(f"{key}: expected {expected}, got {describe(value)}")
