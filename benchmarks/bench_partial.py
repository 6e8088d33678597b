"""Benchmark: the 8 smallest non-zero Laplacian eigenpairs of a 100,000-node graph, plus gradients.

Run (the numbers in benchmarks/results_partial.md):

    .venv/bin/python benchmarks/bench_partial.py                      # 250 x 400 grid, n = 100,000
    .venv/bin/python benchmarks/bench_partial.py --graph rgg          # random geometric graph
    .venv/bin/python benchmarks/bench_partial.py --nx 50 --ny 80      # quick
    .venv/bin/python benchmarks/bench_partial.py --nx 140 --ny 143 --weights random --input bcoo
                                                     # issue 18: 20,020-node weighted grid as BCOO
    .venv/bin/python benchmarks/bench_partial.py --pencil --m 140 --precond polynomial
                                                     # generalized: P1 membrane K u = lambda M u

With ``--input bcoo`` the Laplacian is given as a ``jax.experimental.sparse.BCOO`` matrix
(``BCOO.from_scipy_sparse`` of the same CSR matrix scipy gets), the documented input, and
the gradients are with respect to its ``data``; ``--method`` and ``--precond`` are passed to
``eigh_partial``. ``--weights random`` draws the edge weights uniformly in [1, 2].

The operator is matrix-free, ``matvec(weights, x)``, built from the edge list and the edge
weights (a padded neighbour table, so the product is gathers only), so ``jax.grad``
returns the gradient with respect to every edge weight. Measured, with
``eigjax.eigh_partial(matvec, 9, params=weights, n=n)`` (the zero eigenvalue and the 8
smallest non-zero ones; default tolerance unless ``--tol``):

* forward: compile time and run time (jit, after compile);
* value and gradient of the sum of the 8 smallest non-zero eigenvalues (no linear solve);
* value and gradient of ``trace(P C)``, ``P`` the projector onto the computed 9-dimensional
  subspace and ``C`` a fixed diagonal (gauge invariant: it depends on the subspace only);
* both gradients from one forward (``jax.jacrev`` of the pair of losses);
* peak resident memory (VmHWM) while compiling and while running each program, JAX's caches
  dropped, freed heap returned (``malloc_trim``) and the counter reset before each (so its
  own peak plus what stays alive: the graph, a user's LU, the compiled program), and the
  largest (scipy runs in child processes, each with its own);
* ``scipy.sparse.linalg.eigsh`` on the same matrix: shift-invert (``sigma = -1e-3``, sparse
  LU) and plain Lanczos (``which="SA"``, killed after ``--sa-timeout`` seconds), each in a
  fresh process with its own peak memory;
* the gradients on a small grid (12 x 20) against the full dense ``eigjax.eigh``.

Wall and CPU (process) times are printed with the load average: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

K = 9  # the zero eigenvalue plus 8 non-zero ones


def build_graph(args):
    """Edge list ``(n, src, dst, exact)`` of the graph; ``exact`` the 9 smallest eigenvalues if known."""
    if args.graph == "grid":
        nx, ny = args.nx, args.ny
        n = nx * ny
        idx = np.arange(n).reshape(nx, ny)
        src = np.concatenate([idx[:-1, :].ravel(), idx[:, :-1].ravel()])
        dst = np.concatenate([idx[1:, :].ravel(), idx[:, 1:].ravel()])
        ii, jj = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
        lam = (2 - 2 * np.cos(np.pi * ii / nx)) + (2 - 2 * np.cos(np.pi * jj / ny))
        return n, src, dst, np.sort(lam.ravel())[:K]
    # Random geometric graph in the unit square, mean degree 10, largest component.
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(args.seed)
    m = args.n
    pts = rng.random((m, 2))
    # Number the nodes strip by strip (like a grid's rows) so that neighbours have nearby
    # numbers: the product's gathers then hit the cache (random numbering: ~2x slower).
    strips = int(np.sqrt(m) / 4)
    pts = pts[np.lexsort((pts[:, 0], np.floor(pts[:, 1] * strips)))]
    pairs = cKDTree(pts).query_pairs(np.sqrt(10.0 / (np.pi * m)), output_type="ndarray")
    adj = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(m, m))
    _, label = connected_components(adj, directed=False)
    keep = label == np.argmax(np.bincount(label))
    new = np.full(m, -1)
    new[keep] = np.arange(keep.sum())
    pairs = pairs[keep[pairs[:, 0]] & keep[pairs[:, 1]]]
    return int(keep.sum()), new[pairs[:, 0]], new[pairs[:, 1]], None


def neighbour_table(n, src, dst):
    """Padded neighbour table: ``nbr[i, s]`` and the edge ``eid[i, s]`` (``E`` = padding)."""
    e = len(src)
    ends = np.concatenate([src, dst])
    others = np.concatenate([dst, src])
    eids = np.concatenate([np.arange(e), np.arange(e)])
    order = np.argsort(ends, kind="stable")
    ends, others, eids = ends[order], others[order], eids[order]
    deg = np.bincount(ends, minlength=n)
    slot = np.arange(len(ends)) - np.concatenate([[0], np.cumsum(deg)[:-1]])[ends]
    width = int(deg.max())
    nbr = np.tile(np.arange(n)[:, None], (1, width))
    eid = np.full((n, width), e)
    nbr[ends, slot] = others
    eid[ends, slot] = eids
    return nbr.astype(np.int32), eid.astype(np.int32)


def degree_buckets(n, src, dst, buckets=6):
    """Nodes grouped by degree, each group with its own neighbour table padded to the group's
    largest degree (so an irregular graph pays about nnz gathers, not n * max degree).

    Returns ``(groups, inverse)``: per group ``(nodes, nbr, eid)``; ``inverse`` undoes the
    concatenation order (a gather, no scatter).
    """
    nbr, eid = neighbour_table(n, src, dst)
    deg = (eid < len(src)).sum(axis=1)
    order = np.argsort(deg, kind="stable")
    cuts = sorted({0, n, *(int(q * n) for q in (0.5, 0.75, 0.9, 0.97, 0.995)[: buckets - 1])})
    groups = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        nodes = order[a:b]
        width = int(deg[nodes].max())
        groups.append((nodes.astype(np.int32), nbr[nodes, :width], eid[nodes, :width]))
    inverse = np.empty(n, np.int64)
    inverse[order] = np.arange(n)
    return groups, inverse.astype(np.int32)


def laplacian_csr(n, src, dst, w):
    import scipy.sparse as ssp

    return ssp.coo_matrix(
        (np.concatenate([w, w, -w, -w]), (np.concatenate([src, dst, src, dst]), np.concatenate([src, dst, dst, src]))),
        shape=(n, n),
    ).tocsr()


def edge_weights(args, e):
    """The edge weights: ones, or (``--weights random``) uniform in [1, 2]."""
    if getattr(args, "weights", "ones") == "random":
        return np.random.default_rng(args.seed + 1).uniform(1.0, 2.0, e)
    return np.ones(e)


def node_weights(n):
    """The fixed diagonal ``C`` of the eigenvector loss (smooth, not symmetric)."""
    t = np.linspace(0.0, 1.0, n)
    return 0.5 + t**2 + 0.3 * np.sin(7 * t)


def load():
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def release_memory(caches=True):
    """Drop JAX's caches (compiled programs of earlier steps; not with ``caches=False``),
    return freed heap to the system (glibc's ``malloc_trim``: an XLA compilation leaves
    ~340 MB of freed memory in the process on the random graph) and reset the peak-RSS
    counter (Linux ``clear_refs``), so that ``peak_rss_mb`` measures what comes next plus
    what is still alive (the graph, a user's LU, the compiled program)."""
    import ctypes
    import gc

    import jax

    if caches:
        jax.clear_caches()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb():
    """Peak resident memory of this process (VmHWM: per address space, so a child started by
    fork + exec reports its own, where getrusage's ru_maxrss would carry the parent's over)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- scipy, in a child process (own peak memory; SA may be killed) ---


def scipy_worker(args):
    import scipy.sparse.linalg as sla

    n, src, dst, _ = build_graph(args)
    lap = laplacian_csr(n, src, dst, edge_weights(args, len(src)))
    count = [0]

    def mv(x):
        count[0] += 1
        return lap @ x

    t, c = time.perf_counter(), time.process_time()
    if args.scipy_worker == "si":
        w, v = sla.eigsh(lap.tocsc(), k=K, sigma=-1e-3, which="LM", tol=args.scipy_tol)
    else:
        op = sla.LinearOperator((n, n), matvec=mv, dtype=float)
        w, v = sla.eigsh(op, k=K, which="SA", tol=args.scipy_tol, ncv=args.sa_ncv)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    order = np.argsort(w)
    w, v = w[order], v[:, order]
    res = np.linalg.norm(lap @ v - v * w[None, :], axis=0)
    print(
        json.dumps(
            {
                "wall": wall,
                "cpu": cpu,
                "eigenvalues": w.tolist(),
                "max_residual": float(res.max()),
                "matvecs": count[0],
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


def run_scipy(args, mode, timeout):
    cmd = [
        sys.executable,
        __file__,
        "--scipy-worker",
        mode,
        "--graph",
        args.graph,
        "--nx",
        str(args.nx),
        "--ny",
        str(args.ny),
        "--n",
        str(args.n),
        "--seed",
        str(args.seed),
        "--scipy-tol",
        str(args.scipy_tol),
        "--weights",
        args.weights,
    ]
    if args.sa_ncv:
        cmd += ["--sa-ncv", str(args.sa_ncv)]
    t = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True).stdout
        return json.loads(out.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return {"timeout": timeout, "wall": time.perf_counter() - t}


# --- eigjax ---


def timed(f, *a):
    t, c = time.perf_counter(), time.process_time()
    out = f(*a)
    import jax

    jax.block_until_ready(out)
    return out, time.perf_counter() - t, time.process_time() - c


ROW_PRODUCTS = [0]


def make_bcoo_problem(args, n, src, dst, precond=None):
    """The Laplacian as a BCOO matrix (from scipy's CSR, concrete indices); differentiable in its data."""
    import jax.numpy as jnp
    from jax.experimental import sparse as jsparse

    import eigjax

    sp = jsparse.BCOO.from_scipy_sparse(laplacian_csr(n, src, dst, edge_weights(args, len(src))))
    indices = sp.indices  # concrete: eigh_partial converts it to the padded-row layout
    cdiag = jnp.asarray(node_weights(n))

    def solve(data):
        a = jsparse.BCOO((data, indices), shape=(n, n))
        return eigjax.eigh_partial(
            a, K, tol=args.tol, block_size=args.block_size, layout=args.layout, method=args.method, precond=precond
        )

    loss_val = lambda res: jnp.sum(res.eigenvalues[1:])
    loss_vec = lambda res: jnp.sum(cdiag[:, None] * res.eigenvectors**2)
    return solve, loss_val, loss_vec, sp.data


def make_problem(
    n, src, dst, tol, block_size, count=False, layout="columns", buckets=False, method="auto", precond=None
):
    import jax
    import jax.numpy as jnp

    import eigjax

    nbr, eid = neighbour_table(n, src, dst)
    irregular = nbr.shape[1] > 1.5 * (2 * len(src) / n)  # max degree well above the mean
    # Degree buckets save the padding of an irregular graph but XLA lays their gathers out
    # badly on column blocks (4x slower there); one padded table is faster on columns.
    groups, inverse = degree_buckets(n, src, dst) if irregular and buckets else ([(None, nbr, eid)], None)
    groups = [(None if g is None else jnp.asarray(g), jnp.asarray(b), jnp.asarray(e)) for g, b, e in groups]
    cdiag = jnp.asarray(node_weights(n))

    def matvec(w, x):  # (L(w) x)_i = sum_j w_ij (x_i - x_j): gathers only
        if count:  # under vmap the callback sees the whole block: count its rows
            jax.debug.callback(lambda x0: ROW_PRODUCTS.__setitem__(0, ROW_PRODUCTS[0] + np.size(x0)), x[0])
        w_pad = jnp.concatenate([w, jnp.zeros((1,), w.dtype)])
        parts = []
        for nodes, nbr_g, eid_g in groups:
            we = w_pad[eid_g]
            y = jnp.sum(we, axis=1) * (x if nodes is None else x[nodes])
            for s in range(nbr_g.shape[1]):
                y = y - we[:, s] * x[nbr_g[:, s]]
            parts.append(y)
        return parts[0] if inverse is None else jnp.concatenate(parts)[inverse]

    def solve(w):
        return eigjax.eigh_partial(
            matvec, K, params=w, n=n, tol=tol, block_size=block_size, layout=layout, method=method, precond=precond
        )

    def loss_val(res):
        return jnp.sum(res.eigenvalues[1:])

    def loss_vec(res):
        v = res.eigenvectors
        return jnp.sum(cdiag[:, None] * v * v)  # trace(P C), P = V V^T

    return solve, loss_val, loss_vec, matvec


def splu_preconditioner(n, src, dst, w):
    """A user preconditioner built outside JAX, as eigh_partial's ``precond`` documents it:
    the sparse LU (scipy's ``splu``, the factorisation scipy's shift-invert uses) of
    ``L(w) + 1e-3 I`` for the weights ``w`` being differentiated at, applied through
    ``jax.pure_callback``. Returns ``(precond, seconds to factorise)``."""
    import jax
    import scipy.sparse as sp
    import scipy.sparse.linalg as sla

    t = time.perf_counter()
    lu = sla.splu((laplacian_csr(n, src, dst, w) + 1e-3 * sp.identity(n)).tocsc())
    seconds = time.perf_counter() - t

    def host(x):  # x: one vector (n,) or, under vmap, vectors stacked in front (..., n)
        x = np.asarray(x)
        cols = np.ascontiguousarray(x.reshape(-1, n).T)
        return lu.solve(cols).T.reshape(x.shape).astype(x.dtype)

    def precond(_, x):
        return jax.pure_callback(host, jax.ShapeDtypeStruct(x.shape, x.dtype), x, vmap_method="expand_dims")

    return precond, seconds


def run_eigjax(args, n, src, dst, exact):
    import jax
    import jax.numpy as jnp

    precond = args.precond
    out = {}
    if precond == "splu":
        precond, out["splu_seconds"] = splu_preconditioner(n, src, dst, edge_weights(args, len(src)))
        print(f"  preconditioner: scipy splu of L(w0) + 1e-3 I in {out['splu_seconds']:.2f} s (added to the forward)")
    if args.input == "bcoo":
        solve, loss_val, loss_vec, w0 = make_bcoo_problem(args, n, src, dst, precond)
    else:
        solve, loss_val, loss_vec, _ = make_problem(
            n,
            src,
            dst,
            args.tol,
            args.block_size,
            layout=args.layout,
            buckets=args.buckets,
            method=args.method,
            precond=precond,
        )
        w0 = jnp.asarray(edge_weights(args, len(src)))

    def compile_and_run(name, f, runs=1):
        out["peak_rss_mb"] = max(out.get("peak_rss_mb", 0.0), peak_rss_mb())
        release_memory()  # so that each program's peak is its own (plus what is still alive)
        t = time.perf_counter()
        comp = jax.jit(f).lower(w0).compile()
        out[name + "_compile"] = time.perf_counter() - t
        out[name + "_compile_peak_rss_mb"] = peak_rss_mb()
        out["peak_rss_mb"] = max(out["peak_rss_mb"], peak_rss_mb())
        release_memory(caches=False)
        times = []
        for _ in range(runs):
            res, wall, cpu = timed(comp, w0)
            times.append((wall, cpu))
        out[name + "_wall"] = [x[0] for x in times]
        out[name + "_cpu"] = [x[1] for x in times]
        out[name + "_peak_rss_mb"] = peak_rss_mb()
        print(
            f"  {name}: compile {out[name + '_compile']:.1f} s, run {', '.join(f'{a:.2f} s (cpu {b:.2f})' for a, b in times)}"
            f"; peak RSS compiling {out[name + '_compile_peak_rss_mb']:.0f} MB, running "
            f"{out[name + '_peak_rss_mb']:.0f} MB   [{load()}]",
            flush=True,
        )
        return res

    res = compile_and_run("forward", solve, runs=args.runs)
    lam = np.asarray(res.eigenvalues)
    out["iterations"], out["converged"] = int(res.iterations), bool(res.converged)
    out["max_residual"] = float(jnp.max(res.residual_norms))
    out["eigenvalues"] = lam.tolist()
    if exact is not None:
        out["max_abs_error_vs_exact"] = float(np.max(np.abs(lam - exact)))
    print(
        f"  filter iterations {out['iterations']}, converged {out['converged']}, "
        f"max residual {out['max_residual']:.2e}"
        + (f", max |lambda - exact| {out['max_abs_error_vs_exact']:.1e}" if exact is not None else "")
    )

    if args.forward_only:
        out["peak_rss_mb"] = max(out["peak_rss_mb"], peak_rss_mb())
        return out

    def vg(loss):
        return lambda w: jax.value_and_grad(lambda w: loss(solve(w)))(w)

    (val, g_val) = compile_and_run("grad_eigenvalues", vg(loss_val))
    (vec, g_vec) = compile_and_run("grad_eigenvector_loss", vg(loss_vec))
    both = compile_and_run(
        "both_grads_one_forward", jax.jacrev(lambda w: (lambda r: jnp.stack([loss_val(r), loss_vec(r)]))(solve(w)))
    )
    out["loss_eigenvalues"], out["loss_eigenvector"] = float(val), float(vec)
    out["grad_norms"] = [float(jnp.linalg.norm(g_val)), float(jnp.linalg.norm(g_vec))]
    out["both_vs_separate"] = float(max(jnp.max(jnp.abs(both[0] - g_val)), jnp.max(jnp.abs(both[1] - g_vec))))
    out["grads_finite"] = bool(jnp.all(jnp.isfinite(g_val)) and jnp.all(jnp.isfinite(g_vec)))
    out["peak_rss_mb"] = max(out["peak_rss_mb"], peak_rss_mb())  # the largest of the programs' peaks
    print(
        f"  |grad| {out['grad_norms'][0]:.4e} (eigenvalues), {out['grad_norms'][1]:.4e} (trace(P C)); "
        f"finite {out['grads_finite']}; "
        f"one-forward vs separate max diff {out['both_vs_separate']:.1e}; peak RSS {out['peak_rss_mb']:.0f} MB"
    )
    if args.count:  # the same computations once more, counting products of A with one vector
        solve, loss_val, loss_vec, _ = make_problem(
            n, src, dst, args.tol, args.block_size, count=True, layout=args.layout, buckets=args.buckets
        )
        for name, f in [
            ("forward", solve),
            ("grad_eigenvalues", lambda w: jax.grad(lambda w: loss_val(solve(w)))(w)),
            ("grad_eigenvector_loss", lambda w: jax.grad(lambda w: loss_vec(solve(w)))(w)),
        ]:
            ROW_PRODUCTS[0] = 0
            jax.block_until_ready(jax.jit(f)(w0))
            jax.effects_barrier()
            out[name + "_vector_products"] = ROW_PRODUCTS[0]
        print(
            "  products of A with one vector: "
            + ", ".join(
                f"{k} {out[k + '_vector_products']}" for k in ("forward", "grad_eigenvalues", "grad_eigenvector_loss")
            )
        )
    return out


def gradient_check(tol):
    """Both gradients on a 12 x 20 grid against the full dense eigjax.eigh (same losses)."""
    import jax
    import jax.numpy as jnp

    import eigjax

    class A:
        graph, nx, ny = "grid", 12, 20

    n, src, dst, _ = build_graph(A)
    solve, loss_val, loss_vec, _ = make_problem(n, src, dst, tol, None)
    cdiag = jnp.asarray(node_weights(n))

    def dense(w):
        lap = jnp.zeros((n, n)).at[src, src].add(w).at[dst, dst].add(w).at[src, dst].add(-w).at[dst, src].add(-w)
        lam, v = eigjax.eigh(lap)
        return lam[:K], v[:, :K]

    dense_val = lambda w: jnp.sum(dense(w)[0][1:])
    dense_vec = lambda w: jnp.sum(cdiag[:, None] * dense(w)[1] ** 2)
    rng = np.random.default_rng(0)
    w0 = jnp.asarray(1.0 + 0.5 * rng.random(len(src)))  # non-uniform weights
    errs = []
    for ours, ref in [(lambda w: loss_val(solve(w)), dense_val), (lambda w: loss_vec(solve(w)), dense_vec)]:
        g = jax.jit(jax.grad(ours))(w0)
        g_ref = jax.jit(jax.grad(ref))(w0)
        errs.append(float(jnp.linalg.norm(g - g_ref) / jnp.linalg.norm(g_ref)))
    print(
        f"  gradient check, 12 x 20 grid, random weights: relative error vs dense eigjax.eigh "
        f"{errs[0]:.1e} (eigenvalue sum), {errs[1]:.1e} (trace(P C))"
    )
    return errs


def bench_pencil(args):
    """``--pencil``: the 9 smallest modes of the P1 membrane ``K u = lambda M(rho) u`` (experiments/membrane.py)
    on an ``m x m`` mesh, random density in [0.5, 2], both BCOO, against scipy's shift-invert ``eigsh(K, M=M, sigma=0)``."""
    import jax
    import jax.numpy as jnp
    import scipy.sparse.linalg as sla
    from jax.experimental import sparse as jsparse

    import eigjax
    from experiments import membrane

    m = args.m
    k_csr, r, c, e, v, n_el = membrane.mesh(m)
    n = (m - 1) ** 2
    rho = np.random.default_rng(args.seed).uniform(0.5, 2.0, n_el)
    m_csr = membrane.mass_csr(m, rho)
    ks = jsparse.BCOO.from_scipy_sparse(k_csr)
    idx = np.stack([r, c], axis=1).astype(np.int32)
    print(f"membrane pencil: m = {m}, n = {n}, {n_el} element densities  [{load()}]", flush=True)

    def solve(rho):
        mb = jsparse.BCOO((rho[e] * jnp.asarray(v), idx), shape=(n, n))
        return eigjax.eigh_partial(ks, K, b=mb, precond=args.precond, tol=args.tol)

    rho_j = jnp.asarray(rho)
    comp = jax.jit(solve).lower(rho_j).compile()
    times = [timed(comp, rho_j)[1] for _ in range(args.runs)]
    res = comp(rho_j)
    print(
        f"  eigjax forward (lobpcg, precond {args.precond}): {', '.join(f'{t:.2f}' for t in times)} s; "
        f"iterations {int(res.iterations)}, converged {bool(res.converged)}  [{load()}]",
        flush=True,
    )
    cdiag = jnp.asarray(node_weights(n))
    vg = (
        jax.jit(jax.value_and_grad(lambda x: jnp.sum(cdiag[:, None] * solve(x).eigenvectors ** 2)))
        .lower(rho_j)
        .compile()
    )
    gtimes = [timed(vg, rho_j)[1] for _ in range(2)]
    ev = jax.jit(jax.value_and_grad(lambda x: jnp.sum(solve(x).eigenvalues))).lower(rho_j).compile()
    etimes = [timed(ev, rho_j)[1] for _ in range(2)]
    print(
        f"  value + grad w.r.t. rho: eigenvalue sum {', '.join(f'{t:.2f}' for t in etimes)} s; "
        f"trace(V^T C V) {', '.join(f'{t:.2f}' for t in gtimes)} s  [{load()}]",
        flush=True,
    )
    t = time.perf_counter()
    w, _ = sla.eigsh(k_csr.tocsc(), k=K, M=m_csr.tocsc(), sigma=0.0, which="LM", tol=args.scipy_tol)
    st = time.perf_counter() - t
    d = np.max(np.abs(np.sort(w) - np.asarray(res.eigenvalues)))
    print(
        f"  scipy eigsh(K, M=M, sigma=0), tol {args.scipy_tol:g}: {st:.2f} s; "
        f"max |lambda_scipy - lambda_eigjax| {d:.1e}  [{load()}]"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--pencil", action="store_true", help="the membrane pencil K u = lambda M u instead (see bench_pencil)"
    )
    p.add_argument("--m", type=int, default=140, help="--pencil: cells per side")
    p.add_argument("--graph", choices=["grid", "rgg"], default="grid")
    p.add_argument("--nx", type=int, default=250)
    p.add_argument("--ny", type=int, default=400)
    p.add_argument(
        "--n",
        type=int,
        default=100_000,
        help="nodes of the random geometric graph (before taking its largest component)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=None, help="eigh_partial tol (default: its default, 10 eps^0.75)")
    p.add_argument("--block-size", type=int, default=None)
    p.add_argument("--runs", type=int, default=2, help="forward runs after compile")
    p.add_argument("--layout", choices=["columns", "rows"], default="columns", help="eigh_partial's layout option")
    p.add_argument(
        "--buckets",
        action="store_true",
        help="irregular graphs: one neighbour table per degree range (default: one padded table)",
    )
    p.add_argument(
        "--weights", choices=["ones", "random"], default="ones", help="edge weights (random: uniform in [1, 2])"
    )
    p.add_argument(
        "--input",
        choices=["operator", "bcoo"],
        default="operator",
        help="the Laplacian as a matrix-free operator or a BCOO matrix",
    )
    p.add_argument("--method", default="auto", help="eigh_partial's method")
    p.add_argument(
        "--precond",
        default=None,
        help="eigh_partial's precond ('jacobi', 'polynomial'), or 'splu': a user preconditioner, scipy's sparse LU"
        " of L + 1e-3 I through jax.pure_callback",
    )
    p.add_argument("--scipy-tol", type=float, default=1e-10)
    p.add_argument("--sa-timeout", type=float, default=300.0)
    p.add_argument("--sa-ncv", type=int, default=None, help="ncv of the 'SA' run (default scipy's, 2k+1)")
    p.add_argument("--skip-scipy", action="store_true")
    p.add_argument("--skip-check", action="store_true")
    p.add_argument("--forward-only", action="store_true", help="skip the gradients")
    p.add_argument(
        "--count", action="store_true", help="also count products of A with one vector (an extra, untimed run)"
    )
    p.add_argument("--json", default=None, help="write all numbers to this file")
    p.add_argument("--scipy-worker", choices=["si", "sa"], default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.scipy_worker:
        return scipy_worker(args)

    import jax

    jax.config.update("jax_enable_x64", True)
    if args.pencil:
        return bench_pencil(args)
    n, src, dst, exact = build_graph(args)
    if args.weights != "ones":
        exact = None  # known for unit weights only
    print(
        f"{args.graph}: n = {n}, edges = {len(src)}, {os.cpu_count()} CPUs, jax {jax.__version__}  [{load()}]",
        flush=True,
    )
    report = {"graph": args.graph, "n": n, "edges": int(len(src)), "load_start": os.getloadavg()}
    print(f"eigjax.eigh_partial ({args.input}, method {args.method}, precond {args.precond}):")
    report["eigjax"] = run_eigjax(args, n, src, dst, exact)
    if not args.skip_scipy:
        for mode, timeout in [("si", 1800.0), ("sa", args.sa_timeout)]:
            r = run_scipy(args, mode, timeout)
            report["scipy_" + mode] = r
            name = {
                "si": "shift-invert (sigma=-1e-3, sparse LU)",
                "sa": f"Lanczos which='SA' (ncv {args.sa_ncv or 2 * K + 1})",
            }[mode]
            if "timeout" in r:
                print(f"scipy eigsh {name}: killed after {r['timeout']:.0f} s (not finished)  [{load()}]")
            else:
                d = np.max(np.abs(np.asarray(r["eigenvalues"]) - np.asarray(report["eigjax"]["eigenvalues"])))
                print(
                    f"scipy eigsh {name}, tol {args.scipy_tol:g}: {r['wall']:.2f} s (cpu {r['cpu']:.2f}), "
                    f"max residual {r['max_residual']:.1e}, matvecs {r['matvecs']}, peak RSS {r['peak_rss_mb']:.0f} MB; "
                    f"max |lambda_scipy - lambda_eigjax| {d:.1e}  [{load()}]",
                    flush=True,
                )
    if not args.skip_check:
        report["gradient_check_rel_err"] = gradient_check(args.tol)
    report["load_end"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
