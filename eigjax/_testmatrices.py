"""Classic test matrices with known spectra, for tests, benchmarks and ``eigjax check``.

Each matrix is returned as a float64 NumPy array (build it once on the host, then
``jnp.asarray`` it in the dtype you need); :func:`known_eigenvalues` gives the
closed-form spectrum where one exists.

* ``"rosser"`` (8 x 8, symmetric; Rosser, Lanczos, Hestenes & Karush 1951): eigenvalues
  ``-10 sqrt(10405)``, ``0``, ``510 - 100 sqrt(26)`` (about 0.098), ``1000`` (double),
  ``510 + 100 sqrt(26)``, ``1020``, ``10 sqrt(10405)`` - a double eigenvalue, three
  eigenvalues within 0.15 of each other, a zero and a tiny one.
* ``"wilkinson"`` (``W_n^+``, n odd, symmetric tridiagonal; Wilkinson 1965, p. 308):
  diagonal ``|(n-1)/2 - i|``, off-diagonals 1. No closed form; its two largest
  eigenvalues agree to about ``(n-1)/2 ! ^ -2`` (for ``W_21^+``: 10.746194182903...,
  a gap of about 7e-14), a pair that is *numerically* degenerate in float64 but not
  exactly.
* ``"clement"`` (Kac-Clement matrix, nonsymmetric tridiagonal; Clement 1959):
  sub-diagonal ``1, 2, ..., n-1``, super-diagonal ``n-1, ..., 1``; eigenvalues
  ``-(n-1), -(n-3), ..., n-3, n-1``. ``"clement_sym"`` is its symmetric similarity
  transform (off-diagonals ``sqrt(i (n - i))``), same spectrum.
* ``"second_difference"`` (``tridiag(-1, 2, -1)``): eigenvalues
  ``2 - 2 cos(k pi / (n + 1))``, ``k = 1..n``, eigenvectors ``sin(j k pi / (n + 1))``.

Example:
  >>> import numpy as np
  >>> from eigjax._testmatrices import named_matrix, known_eigenvalues
  >>> a = named_matrix("clement", 4)
  >>> known_eigenvalues("clement", 4).tolist()
  [-3.0, -1.0, 1.0, 3.0]
  >>> np.allclose(np.sort(np.linalg.eigvals(a).real), [-3, -1, 1, 3])
  True
"""

from __future__ import annotations

import numpy as np

_ROSSER = np.array(
    [
        [611, 196, -192, 407, -8, -52, -49, 29],
        [196, 899, 113, -192, -71, -43, -8, -44],
        [-192, 113, 899, 196, 61, 49, 8, 52],
        [407, -192, 196, 611, 8, 44, 59, -23],
        [-8, -71, 61, 8, 411, -599, 208, 208],
        [-52, -43, 49, 44, -599, 411, 208, 208],
        [-49, -8, 8, 59, 208, 208, 99, -911],
        [29, -44, 52, -23, 208, 208, -911, 99],
    ],
    dtype=np.float64,
)

NAMES = ("rosser", "wilkinson", "clement", "clement_sym", "second_difference")
SYMMETRIC = {"rosser": True, "wilkinson": True, "clement": False, "clement_sym": True, "second_difference": True}
_DEFAULT_N = {"rosser": 8, "wilkinson": 21, "clement": 8, "clement_sym": 8, "second_difference": 8}


def _check(name: str, n: int | None) -> int:
    if name not in NAMES:
        raise ValueError(f"eigjax.named_matrix: unknown matrix name {name!r}; expected one of {NAMES}.")
    if n is None:
        n = _DEFAULT_N[name]
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"eigjax.named_matrix: size `n` must be a non-negative int; got {n!r}.")
    n = int(n)
    if name == "rosser" and n != 8:
        raise ValueError(f"eigjax.named_matrix: the Rosser matrix is 8 x 8; got n={n}.")
    if name == "wilkinson" and n % 2 == 0:
        raise ValueError(f"eigjax.named_matrix: the Wilkinson matrix W_n^+ needs an odd n; got n={n}.")
    return n


def _tridiag(sub, diag, sup) -> np.ndarray:
    return np.diag(np.asarray(diag, float)) + np.diag(np.asarray(sub, float), -1) + np.diag(np.asarray(sup, float), 1)


def named_matrix(name: str, n: int | None = None) -> np.ndarray:
    """The named test matrix of size ``n`` (float64 NumPy array).

    Args:
      name: one of ``"rosser"`` (n = 8), ``"wilkinson"`` (odd n, default 21),
        ``"clement"``, ``"clement_sym"``, ``"second_difference"`` (default n = 8).
      n: size; ``None`` for the default.

    Raises:
      ValueError: unknown name or a size the matrix does not exist in.
    """
    n = _check(name, n)
    if name == "rosser":
        return _ROSSER.copy()
    if name == "wilkinson":
        m = (n - 1) // 2
        return _tridiag(np.ones(max(n - 1, 0)), np.abs(m - np.arange(n)), np.ones(max(n - 1, 0)))
    i = np.arange(1, n, dtype=float)
    if name == "clement":
        return _tridiag(i, np.zeros(n), n - i)
    if name == "clement_sym":
        off = np.sqrt(i * (n - i))
        return _tridiag(off, np.zeros(n), off)
    return _tridiag(-np.ones(max(n - 1, 0)), 2 * np.ones(n), -np.ones(max(n - 1, 0)))


def known_eigenvalues(name: str, n: int | None = None) -> np.ndarray | None:
    """Closed-form eigenvalues in ascending order (float64), or None (Wilkinson)."""
    n = _check(name, n)
    if name == "rosser":
        r1, r2 = 10 * np.sqrt(10405.0), 100 * np.sqrt(26.0)
        return np.sort(np.array([-r1, 0.0, 510 - r2, 1000.0, 1000.0, 510 + r2, 1020.0, r1]))
    if name == "wilkinson":
        return None
    if name in ("clement", "clement_sym"):
        return np.arange(-(n - 1), n, 2, dtype=np.float64)
    k = np.arange(1, n + 1)
    return np.sort(2 - 2 * np.cos(k * np.pi / (n + 1)))
