"""The one check of every public inference function's inputs, run before anything is traced.

Inner kernels trust what passes here.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from jax import Array


def is_traced(*trees) -> bool:
    """Whether any array in ``trees`` is a tracer (inside ``jit``, ``grad``, ``vmap``, ...)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(trees))


def state_shape(log_init: Sequence[Array]) -> tuple[int, ...]:
    """``(N_1, ..., N_K)`` from K arrays ``(N_k,)``."""
    return tuple(int(jnp.shape(v)[0]) for v in log_init)


def validate(
    log_init: Sequence[Array],
    log_trans: Sequence[Array],
    log_lik_shape: tuple[int, ...],
    length=None,
    chunk_size: Optional[int] = None,
) -> None:
    """Raise ``ValueError`` naming the bad input, unless the chains and ``(T, N_1, ..., N_K)`` agree.

    Args:
        log_init: K arrays ``(N_k,)``; log_trans: K arrays ``(N_k, N_k)``.
        log_lik_shape: the shape of the frame log-likelihoods, ``(T, N_1, ..., N_K)``.
        length: optional int scalar, ``0 <= length <= T`` (not inspected when traced).
        chunk_size: optional positive number of frames.
    """
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive number of frames (or None), got {chunk_size!r}")
    if length is not None and not is_traced(length):  # traced lengths are the caller's care
        if jnp.ndim(length) != 0:
            raise ValueError(f"length must be one int per sequence, got shape {jnp.shape(length)}; "
                             "for a batch, jax.vmap over sequences and lengths together")
        if not 0 <= int(length) <= log_lik_shape[0]:
            raise ValueError(f"length must be between 0 and the {log_lik_shape[0]} frames given, got {int(length)}")
    for name, value in (("log_init", log_init), ("log_trans", log_trans)):
        if hasattr(value, "ndim"):
            raise ValueError(f"{name} must be a list or tuple with one array per chain, got one array of shape "
                             f"{tuple(value.shape)} (for a single chain: [{name}])")
    if len(log_init) != len(log_trans):
        raise ValueError(
            f"log_init has {len(log_init)} chains but log_trans has {len(log_trans)}; give one of each per chain"
        )
    if len(log_init) == 0:
        raise ValueError("at least one chain is needed: log_init and log_trans are empty")
    n_states = state_shape(log_init)
    for k, (vec, mat) in enumerate(zip(log_init, log_trans)):
        if jnp.ndim(vec) != 1:
            raise ValueError(f"log_init[{k}] must be 1-D (N_k,), got shape {jnp.shape(vec)}")
        if tuple(jnp.shape(mat)) != (n_states[k], n_states[k]):
            raise ValueError(
                f"log_trans[{k}] must be ({n_states[k]}, {n_states[k]}) to match log_init[{k}], got {jnp.shape(mat)}"
            )
    if len(log_lik_shape) != len(n_states) + 1 or tuple(log_lik_shape[1:]) != n_states:
        raise ValueError(f"log_lik must have shape (T, {', '.join(map(str, n_states))}), got {tuple(log_lik_shape)}")
    if log_lik_shape[0] < 1:
        raise ValueError("log_lik has no frames (T = 0)")
