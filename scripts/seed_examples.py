"""Run the seed examples and print their results (the README's main job until the runner lands)."""

import jax
import jax.numpy as jnp

import eigjax

a = jnp.array([[2.0, 1.0], [1.0, 2.0]])
print("1. grad of sum(eigenvalues) at [[2,1],[1,2]]:")
print(jax.grad(lambda a: jnp.sum(eigjax.eigh(a).eigenvalues))(a))

loss = lambda a: jnp.sum(eigjax.eigvalsh(a)) + 0.1 * jnp.sum(a**2) / 2
print("2. grad of sum(eigvalsh(A)) + 0.1*sum(A**2)/2 at the same A:")
print(jax.grad(loss)(a))

print("3. grad of sum(V**2) at the identity (jnp.linalg.eigh gives NaN here):")
print(jax.grad(lambda a: jnp.sum(eigjax.eigh(a).eigenvectors ** 2))(jnp.eye(3)))
