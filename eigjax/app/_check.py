"""The ``eigjax check`` command: spectral report and derivative checks for one matrix.

``eigjax check MATRIX`` (a ``.npy``/``.npz`` file or a named test matrix) prints
:func:`eigjax.spectral_report` and checks, with :func:`eigjax.check_grad`, the derivatives
of two gauge-invariant quantities against finite differences (docs/diagnostics.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .. import (
    SpectralReport,
    check_grad,
    eig,
    eigh,
    eigvals,
    eigvalsh,
    format_spectral_report,
    spectral_report,
)
from .._checks import as_square_matrix
from .._testmatrices import NAMES, named_matrix


def _check_parser():
    import argparse

    p = argparse.ArgumentParser(
        prog="eigjax check",
        description="Spectral report and derivative checks for one matrix (or a batch in a .npy file).",
        epilog="examples:\n  eigjax check rosser\n  eigjax check wilkinson -n 21\n  eigjax check mats.npy --general --no-grad\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "matrix", help=f"a .npy file holding an (..., n, n) array, or a named test matrix: {', '.join(NAMES)}"
    )
    p.add_argument("-n", "--size", type=int, default=None, help="size of a named test matrix")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument(
        "--hermitian",
        dest="kind",
        action="store_const",
        const="hermitian",
        help="treat the input as Hermitian (eigh); default: detected",
    )
    kind.add_argument(
        "--general",
        dest="kind",
        action="store_const",
        const="general",
        help="treat the input as a general matrix (eig)",
    )
    p.add_argument("--degenerate-tol", type=float, default=None, help="degeneracy tolerance (default: eigjax's)")
    p.add_argument(
        "--dtype",
        choices=("float32", "float64", "complex64", "complex128"),
        default=None,
        help="cast the input to this dtype (default: the file's; float64 for named matrices)",
    )
    p.add_argument("--directions", type=int, default=3, help="random directions for the gradient checks")
    p.add_argument("--no-grad", action="store_true", help="only print the spectral report")
    return p


def _load_matrix(args) -> np.ndarray:
    import os

    if args.matrix in NAMES:
        return named_matrix(args.matrix, args.size)
    if not os.path.exists(args.matrix):
        raise ValueError(f"no such file and no test matrix named {args.matrix!r}")
    if args.size is not None:
        raise ValueError("-n/--size only applies to a named test matrix")
    try:
        loaded = np.load(args.matrix, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{args.matrix}: not a readable .npy/.npz array file ({exc})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            names = list(loaded.files)
            if len(names) != 1:
                listed = ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
                raise ValueError(
                    f"{args.matrix}: expected an .npz file holding one array, got {len(names)} arrays"
                    + (f" ({listed})" if names else "")
                    + "; save the matrix to check on its own (np.save)"
                )
            return np.asarray(loaded[names[0]])
    return np.asarray(loaded)


def _no_derivative_reason(a, report: SpectralReport, hermitian: bool) -> str | None:
    """Why no derivative check applies to ``a`` (None when they do): NaN/inf input, or a
    numerically defective general matrix (condition numbers ~ eps^(-1/2)): the derivatives
    are NaN there by contract, so comparing them with finite differences tests nothing."""
    xn = np.asarray(a)
    bad = ~np.isfinite(xn).all(axis=(-2, -1))
    if np.any(bad):
        count = f"{int(np.sum(bad))} of {bad.size} matrices have" if bad.ndim else "the input has"
        return (
            f"{count} NaN or inf entries: eigenvalues and derivatives are NaN by contract "
            "(nothing to compare with finite differences)"
        )
    if not hermitian:
        s = np.asarray(report.condition_numbers)
        eps = np.finfo(s.dtype).eps
        worst = np.max(s, axis=-1, initial=0.0)
        defective = ~(worst < 0.05 / np.sqrt(eps))
        if np.any(defective):
            count = f"{int(np.sum(defective))} of {defective.size} matrices are" if defective.ndim else "the matrix is"
            return (
                f"{count} numerically defective (eigenvalue condition number {float(np.max(worst)):.1e}): "
                "at a defective matrix (a Jordan block) the eigenvalues have no derivative, and eig's "
                "derivatives are NaN there by contract"
            )
    return None


def run_check(argv: list[str] | None = None) -> int:
    """Entry point of ``eigjax check``: prints a report, returns the exit status.

    0: every derivative check that applies passed (checks that do not apply, at NaN or
    inf input or a defective matrix where no derivative exists, are skipped with the
    reason); 1: a check failed or a derivative is not finite; 2: bad arguments or input
    (message on stderr).

    Example:
      >>> from eigjax.app._check import run_check
      >>> run_check(["second_difference", "-n", "4"])  # doctest: +ELLIPSIS
      input: second_difference, shape (4, 4), float64, Hermitian
      ...
      0
    """
    import sys

    parser = _check_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    jax.config.update("jax_enable_x64", True)
    try:
        x = _load_matrix(args)
        if args.dtype is not None:
            if np.iscomplexobj(x) and not np.issubdtype(np.dtype(args.dtype), np.complexfloating):
                raise ValueError(
                    f"--dtype {args.dtype}: the matrix is complex ({x.dtype}); casting would drop its imaginary part"
                )
            x = x.astype(args.dtype)
        a = as_square_matrix(x, name="matrix", fn="eigjax check")
    except (ValueError, TypeError, OSError) as exc:
        print(f"eigjax check: error: {exc}", file=sys.stderr)
        return 2
    if args.directions < 1:
        print("eigjax check: error: --directions must be >= 1", file=sys.stderr)
        return 2
    if args.degenerate_tol is not None and not args.degenerate_tol >= 0:
        print(
            f"eigjax check: error: --degenerate-tol must be a number >= 0; got {args.degenerate_tol}", file=sys.stderr
        )
        return 2
    n = a.shape[-1]
    if args.kind is None:
        xn = np.asarray(a)
        with np.errstate(invalid="ignore"):  # inf - inf: such input is reported, not checked
            herm_err = np.max(np.abs(xn - np.conj(np.swapaxes(xn, -1, -2))), initial=0.0)
        scale = np.max(np.abs(xn), initial=0.0)
        hermitian = bool(herm_err <= 10 * max(n, 1) * np.finfo(xn.dtype).eps * scale)
    else:
        hermitian = args.kind == "hermitian"
    print(f"input: {args.matrix}, shape {tuple(a.shape)}, {a.dtype}, {'Hermitian' if hermitian else 'general'}")
    report = spectral_report(a, hermitian=hermitian, degenerate_tol=args.degenerate_tol)
    print(format_spectral_report(report))
    if args.no_grad or n == 0:
        return 0
    skip = _no_derivative_reason(a, report, hermitian)
    if skip:
        print(f"derivative checks: skipped - {skip}")
        return 0

    # Derivative checks of gauge-invariant quantities, well defined even at degenerate
    # points: power sums of the eigenvalues (order-free), and the spectral projectors
    # of the degenerate groups weighted by distinct numbers (needs a stable order of
    # the groups over the finite-difference stencil).
    group = np.asarray(report.group)
    rdtype = jnp.finfo(a.dtype).dtype
    weights = jnp.asarray(1.0 + group.astype(np.float64) / max(n, 1), dtype=rdtype)
    xn = np.asarray(a)
    anorm = float(np.linalg.norm(xn.reshape(-1)))
    eps = float(jnp.finfo(rdtype).eps)
    w = np.asarray(report.eigenvalues)
    # The smallest distance the stencil must not cross: resolved gaps, and for general
    # matrices also real-part separations between groups (the sort key), over the
    # eigenvalue condition numbers (an eigenvalue moves by s_i ||E||).
    sep = np.abs(w[..., :, None] - w[..., None, :])
    if not hermitian:
        if np.iscomplexobj(xn):  # real input: conjugate pairs keep their order
            sep = np.minimum(sep, np.abs(np.real(w)[..., :, None] - np.real(w)[..., None, :]))
        sep = sep / np.max(np.asarray(report.condition_numbers), axis=-1)[..., None, None]
    other_group = group[..., :, None] != group[..., None, :]
    gap = float(np.min(np.where(other_group, sep, np.inf), initial=np.inf))
    h = eps**0.25
    h_fd = 0.05 * gap / anorm if anorm > 0 else h
    skip_vectors = h_fd < eps**0.5
    h = min(h, h_fd) if not skip_vectors else h

    def power_sums(eigenvalues):
        def f(m):
            lam = eigenvalues(m)
            return jnp.stack([jnp.sum(lam**k, axis=-1) for k in (1, 2, 3)], axis=-1)

        return f

    if hermitian:

        def projectors(m):
            v = eigh(m, degenerate_tol=args.degenerate_tol).eigenvectors
            return jnp.matmul(v * weights[..., None, :].astype(v.dtype), jnp.conj(jnp.swapaxes(v, -1, -2)))

        checks = [
            ("power sums of the eigenvalues (k = 1, 2, 3)", power_sums(eigvalsh), False),
            ("weighted spectral projectors of the degenerate groups", projectors, True),
        ]
    else:

        def projectors(m):
            r = eig(m, left=True, degenerate_tol=args.degenerate_tol)
            v, y = r.eigenvectors, r.left_eigenvectors
            return jnp.matmul(v * weights[..., None, :].astype(v.dtype), jnp.conj(jnp.swapaxes(y, -1, -2)))

        checks = [
            ("power sums of the eigenvalues (k = 1, 2, 3)", power_sums(eigvals), False),
            ("weighted spectral projectors x_i y_i^H of the groups", projectors, True),
        ]

    print(
        f"derivative checks: JVP vs 4th-order central differences, {args.directions} random "
        f"{'Hermitian' if hermitian else 'general'} directions, step {eps**0.25:.1e} * ||A||_F"
        + (f" ({h:.1e} for eigenvectors)" if h < eps**0.25 and not skip_vectors else "")
    )
    status = 0
    for title, f, needs_gap in checks:
        if needs_gap and skip_vectors:
            print(
                f"  {title}: skipped - the closest eigenvalues of different groups ({gap:.1e} apart,"
                f" ||A||_F = {anorm:.1e}) are too close for finite differences to resolve"
            )
            continue
        r = check_grad(f, a, directions=args.directions, hermitian=hermitian, h=h if needs_gap else None)
        ok = bool(r.ok)
        status |= 0 if ok else 1
        print(f"  {title}: max relative error {float(np.max(np.asarray(r.rel_err))):.2e} -> {'ok' if ok else 'FAILED'}")
    return status
