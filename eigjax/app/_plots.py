"""The runner's plots of a finished run, from its ``metrics.jsonl`` rows.

- ``objective.png``: the objective per logged step (maximised or minimised), the
  reference as a dashed line, and below it the gap to the reference on a log axis (points
  beyond the reference marked apart).
- ``eigenvalues.png`` (when the experiment's ``metrics`` log ``"eigenvalues"``): each
  eigenvalue per logged step; a complex vector as real parts, imaginary parts and its path
  in the complex plane (a dot at the last step).

Every figure carries the run's title and a legend on each axis with lines. matplotlib is
imported only when a plot is made.
"""

from __future__ import annotations

import numpy as np


def _eigenvalue_rows(rows: list[dict]) -> np.ndarray:
    """The logged "eigenvalues" as a (rows, k) array, complex when they were logged as
    {"real": ..., "imag": ...} (eig-based experiments)."""

    def one(v):
        if isinstance(v, dict):
            return np.asarray(v["real"], dtype=float).ravel() + 1j * np.asarray(v["imag"], dtype=float).ravel()
        return np.asarray(v, dtype=float).ravel()

    return np.asarray([one(r["eigenvalues"]) for r in rows])


def figures(rows: list[dict], reference, *, title: str, maximize: bool = False):
    """Yield ``(file name, figure)``: objective.png (objective, reference line, gap on a log
    axis), and eigenvalues.png when the rows log "eigenvalues". The caller saves and closes
    each figure (``matplotlib.pyplot.close``)."""
    if not rows:
        return
    plt = pyplot()
    steps = np.asarray([r["step"] for r in rows])
    obj = np.asarray([np.nan if r["objective"] is None else r["objective"] for r in rows], dtype=float)
    yield "objective.png", _objective_figure(plt, steps, obj, reference, title, maximize)
    if "eigenvalues" in rows[0]:
        yield "eigenvalues.png", _eigenvalue_figure(plt, steps, _eigenvalue_rows(rows), title)


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _objective_figure(plt, steps, obj, reference, title, maximize):
    if reference is None:
        fig, ax = plt.subplots(figsize=(7, 4))
        axes = [ax]
    else:
        fig, axes = plt.subplots(2, 1, figsize=(7, 6.5), sharex=True)
    ax = axes[0]
    ax.plot(steps, obj, marker=".", label="objective" + (" (maximised)" if maximize else " (minimised)"))
    if reference is not None:
        ax.axhline(reference, color="k", ls="--", lw=1, label=f"reference {reference:.8g}")
    ax.set_ylabel("objective")
    ax.set_title("objective per logged step")
    ax.legend(loc="best")
    if reference is not None:
        gap = (reference - obj) if maximize else (obj - reference)
        ax = axes[1]
        pos, neg = gap > 0, gap < 0
        if pos.any():
            ax.semilogy(steps[pos], gap[pos], marker=".", label="gap to the reference")
        if neg.any():
            ax.semilogy(steps[neg], -gap[neg], marker="x", ls="none", color="C3", label="beyond the reference (|gap|)")
        if not (pos.any() or neg.any()):  # every logged objective equals the reference
            ax.semilogy(steps, np.ones_like(steps, dtype=float), alpha=0)
            ax.text(0.5, 0.5, "objective equals the reference", transform=ax.transAxes, ha="center")
        ax.set_yscale("log")
        ax.set_ylabel("gap (log scale)")
        ax.set_title("gap = " + ("reference - objective" if maximize else "objective - reference"))
        ax.legend(loc="best")
        ax.grid(True, which="major", alpha=0.3)
    axes[-1].set_xlabel("step")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _eigenvalue_figure(plt, steps, ev, title):
    k = ev.shape[1]
    labels = [f"λ{i + 1}" for i in range(k)]
    legend = dict(loc="best", fontsize="small", ncol=max(1, (k + 7) // 8)) if k <= 24 else None
    if np.iscomplexobj(ev):  # eig-based experiments: real and imaginary parts, and the complex plane
        fig, axes = plt.subplots(1, 3, figsize=(13, 4))
        for i in range(k):
            axes[0].plot(steps, ev[:, i].real, lw=1, label=labels[i])
            axes[1].plot(steps, ev[:, i].imag, lw=1, label=labels[i])
            (line,) = axes[2].plot(ev[:, i].real, ev[:, i].imag, lw=1, marker=".", ms=3, label=labels[i])
            axes[2].plot(ev[-1, i].real, ev[-1, i].imag, "o", color=line.get_color(), ms=6)
        axes[0].set(xlabel="step", ylabel="Re λ", title="real parts")
        axes[1].set(xlabel="step", ylabel="Im λ", title="imaginary parts")
        axes[2].set(xlabel="Re λ", ylabel="Im λ", title="complex plane (dot: last step)")
        axes[2].axvline(0, color="k", lw=0.5)
        axes[2].axhline(0, color="k", lw=0.5)
    else:
        fig, ax = plt.subplots(figsize=(7, 4))
        axes = [ax]
        for i in range(k):
            ax.plot(steps, ev[:, i], lw=1, label=labels[i])
        ax.set(xlabel="step", ylabel="eigenvalue", title=f"logged eigenvalues ({k})")
    if legend is not None:
        for ax in axes:
            ax.legend(**legend)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
