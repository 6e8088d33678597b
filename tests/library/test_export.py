"""Portable programs: every public function and its gradient exports with ``jax.export``
for cpu, cuda, tpu and all three at once, wherever the ``jnp``/``jax.scipy`` counterpart
it is built on does; exports serialize and round-trip; a CPU export reloads and runs in a
fresh process. Lowering for cuda and tpu happens here, on a CPU-only machine (issue 16).
"""

import subprocess
import sys
import textwrap

import helpers as h
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eigjax

PLATFORMS = [("cpu",), ("cuda",), ("tpu",), ("cpu", "cuda", "tpu")]


def _sym(n, batch=(), seed=0):
    return jnp.asarray(h.random_hermitian(h.rng(seed), n, batch=batch))


def _spd(n, seed=1):
    x = h.random_matrix(h.rng(seed), (n, n))
    return jnp.asarray(x @ x.T + n * np.eye(n))


def _general(n, seed=2):
    return jnp.asarray(h.random_matrix(h.rng(seed), (n, n)))


def _real_loss(out):
    """A smooth real scalar of any output tree (sign/phase-invariant for eigenvectors)."""
    leaves = [x for x in jax.tree_util.tree_leaves(out) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return sum(jnp.sum(jnp.abs(x) ** 4) for x in leaves)


# name -> (eigjax function of one matrix argument, the counterpart it is built on, input)
CASES = {
    "eigh_small": (eigjax.eigh, jnp.linalg.eigh, lambda: _sym(3, (8,))),
    "eigh_small_batch": (eigjax.eigh, jnp.linalg.eigh, lambda: _sym(3, (200,))),
    "eigh": (eigjax.eigh, jnp.linalg.eigh, lambda: _sym(20)),
    "eigvalsh": (eigjax.eigvalsh, jnp.linalg.eigvalsh, lambda: _sym(8, (4,))),
    "eigh_generalized": (
        lambda a: eigjax.eigh_generalized(a, _spd(8)),
        lambda a: jnp.linalg.eigh(jnp.linalg.cholesky(_spd(8)) @ a),
        lambda: _sym(8),
    ),
    "eigvalsh_generalized": (
        lambda a: eigjax.eigvalsh_generalized(a, _spd(8)),
        lambda a: jnp.linalg.eigvalsh(jnp.linalg.cholesky(_spd(8)) @ a),
        lambda: _sym(8),
    ),
    "eigh_partial": (
        lambda a: eigjax.eigh_partial(a, 2, which="smallest"),
        jnp.linalg.eigh,
        lambda: _sym(24),
    ),
    "eig": (eigjax.eig, jnp.linalg.eig, lambda: _general(6)),
    "eigvals": (eigjax.eigvals, jnp.linalg.eigvals, lambda: _general(6)),
    "sqrtm": (eigjax.sqrtm, jnp.linalg.eigh, lambda: _spd(8)),
    "inv_sqrtm": (eigjax.inv_sqrtm, jnp.linalg.eigh, lambda: _spd(8)),
    "logm": (eigjax.logm, jnp.linalg.eigh, lambda: _spd(8)),
    "expm": (eigjax.expm, jnp.linalg.eigh, lambda: _sym(8)),
    "powm": (lambda a: eigjax.powm(a, 1.5), jnp.linalg.eigh, lambda: _spd(8)),
    "matrix_function": (lambda a: eigjax.matrix_function(a, jnp.tanh), jnp.linalg.eigh, lambda: _sym(8)),
}


def _exports(f, x, platforms) -> bool:
    try:
        jax.export.export(jax.jit(f), platforms=platforms)(x)
    except Exception:  # noqa: BLE001 - any refusal means: the counterpart does not export
        return False
    return True


@pytest.mark.parametrize("platforms", PLATFORMS, ids="+".join)
@pytest.mark.parametrize("name", sorted(CASES))
def test_exports_where_counterpart_does(name, platforms):
    fn, counterpart, make = CASES[name]
    x = make()
    if not _exports(counterpart, x, platforms):
        # Not required where JAX itself cannot (e.g. eig on TPU); eigjax may still.
        pytest.skip(f"{counterpart.__name__} itself does not export for {platforms}")
    for f in (fn, jax.grad(lambda a: _real_loss(fn(a)))):
        exp = jax.export.export(jax.jit(f), platforms=platforms)(x)
        assert "custom_call @eigjax_" not in exp.mlir_module()  # only targets JAX guarantees
        back = jax.export.deserialize(exp.serialize())
        assert back.platforms == exp.platforms and back.out_tree == exp.out_tree
        if "cpu" in platforms:  # runnable here: the exported program computes the same
            assert_same_up_to_signs(back.call(x), jax.jit(f)(x))


def assert_same_up_to_signs(got, want):
    """Equal, except that eigenvectors may differ in sign: an export never embeds the
    native kernel, whose signs differ from LAPACK's (eigjax promises no sign)."""
    jax.tree_util.tree_map(
        lambda g, w: np.testing.assert_allclose(np.abs(g), np.abs(w), rtol=1e-9, atol=1e-11), got, want
    )
    np.testing.assert_allclose(_real_loss(got), _real_loss(want), rtol=1e-10)


def test_result_namedtuples_survive_serialization():
    x = _sym(3, (8,))
    back = jax.export.deserialize(jax.export.export(jax.jit(eigjax.eigh), platforms=["cpu"])(x).serialize())
    out = back.call(x)
    assert type(out) is eigjax.EighResult and out.eigenvalues.shape == (8, 3)


@pytest.mark.parametrize("batch", [8, 200])  # LAPACK and the pure-JAX solver under export
def test_cpu_export_reloads_in_a_fresh_process(tmp_path, batch):
    x = np.asarray(_sym(3, (batch,), seed=5))
    exp = jax.export.export(jax.jit(eigjax.eigh), platforms=["cpu"])(x)
    (tmp_path / "prog.bin").write_bytes(exp.serialize())
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import jax, numpy as np
        jax.config.update("jax_enable_x64", True)
        import eigjax  # registers eigjax.EighResult for deserialization; builds nothing
        from eigjax import _native
        prog = jax.export.deserialize(open({str(tmp_path / "prog.bin")!r}, "rb").read())
        x = np.load({str(tmp_path / "x.npy")!r})
        w, v = prog.call(x)
        w, v = np.asarray(w), np.asarray(v)
        assert np.allclose(w, np.linalg.eigvalsh(x), atol=1e-12), "eigenvalues"
        assert np.allclose(x @ v, v * w[:, None, :], atol=1e-12), "residual"
        assert "lib" not in _native._state, "the native kernel was loaded"
        print("ok")
        """
    )
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert p.returncode == 0 and p.stdout.strip() == "ok", p.stderr[-3000:]
