"""Test configuration: float64 everywhere, and loud failures on silent broadcasting."""

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
