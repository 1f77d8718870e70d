"""Tensor helpers for factored transitions over a joint state tensor.

A joint message over K chains is a tensor of shape ``(N_1, ..., N_K)``. A
factored transition applies each chain's matrix along that chain's own axis,
so one step costs ``O(prod(N) * sum(N))`` instead of ``O(prod(N)**2)``.
These helpers are internal: they trust their inputs.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
from jax import Array


def propagate_axis(message: Array, trans: Array, axis: int) -> Array:
    """Apply ``trans`` along one axis: ``out[.., j, ..] = sum_i message[.., i, ..] * trans[i, j]``.

    Args:
        message: joint message ``(..., N_1, ..., N_K)``; ``axis`` indexes into it.
        trans: ``(N_axis, N_axis)`` transition matrix (rows: from, columns: to).
        axis: which axis of ``message`` to contract.

    Returns:
        array of the same shape as ``message``.
    """
    ndim = message.ndim
    axis = axis % ndim
    if axis == ndim - 1:
        # Plain matrix product: no transposes for XLA to insert.
        return message @ trans
    if axis == 0:
        return jnp.tensordot(trans, message, axes=([0], [0]))
    out = jnp.tensordot(message, trans, axes=([axis], [0]))
    return jnp.moveaxis(out, -1, axis)


def propagate_forward(
    message: Array, trans: Sequence[Array], first_axis: int = 0, first_trans_t: Array | None = None
) -> Array:
    """Advance a joint message one step: every chain moves through its own matrix.

    Args:
        message: ``(..., N_1, ..., N_K)``, state axes starting at ``first_axis``.
        trans: K matrices ``(N_k, N_k)``.
        first_trans_t: optionally ``trans[0].T`` computed once outside a scan;
            with ``first_axis == 0`` chain 0 is then one plain matrix product
            ``A_0^T @ message`` with no transpose inside the loop body.
    """
    for k, mat in enumerate(trans):
        if k == 0 and first_axis == 0 and first_trans_t is not None and message.ndim > 1:
            shape = message.shape
            message = (first_trans_t @ message.reshape(shape[0], -1)).reshape(shape)
        else:
            message = propagate_axis(message, mat, first_axis + k)
    return message


def propagate_backward(message: Array, trans: Sequence[Array], first_axis: int = 0) -> Array:
    """Pull a joint message one step back: ``out[s] = sum_s' prod_k A_k[s_k, s'_k] message[s']``."""
    for k, mat in enumerate(trans):
        message = propagate_axis(message, mat.T, first_axis + k)
    return message


def joint_initial(init: Sequence[Array]) -> Array:
    """Outer product of per-chain initial probabilities ``(N_k,)`` -> ``(N_1, ..., N_K)``."""
    joint = init[0]
    for vec in init[1:]:
        joint = joint[..., None] * vec
    return joint


def joint_log_initial(log_init: Sequence[Array]) -> Array:
    """Outer sum of per-chain log initial probabilities -> ``(N_1, ..., N_K)``."""
    joint = log_init[0]
    for vec in log_init[1:]:
        joint = joint[..., None] + vec
    return joint


def chain_marginals(joint: Array, n_chains: int, first_axis: int = 0) -> list[Array]:
    """Per-chain marginals of a joint tensor ``(..., N_1, ..., N_K)`` -> K arrays ``(..., N_k)``."""
    axes = tuple(range(first_axis, first_axis + n_chains))
    out = []
    for k in range(n_chains):
        others = tuple(a for a in axes if a != first_axis + k)
        out.append(joint.sum(axis=others) if others else joint)
    return out


def pairwise_chain_counts(alpha_prev: Array, weight_next: Array, trans: Sequence[Array]) -> list[Array]:
    """Expected one-step transition counts of every chain, marginalised over the others.

    ``xi_k[i, j] = A_k[i, j] * sum_{others} alphã_k[.., i, ..] * weight_next[.., j, ..]``
    where ``alphã_k`` is ``alpha_prev`` with every chain except ``k`` advanced one
    step. Shared partial propagations keep this at about ``K log K`` axis products.

    Args:
        alpha_prev: ``(N_1, ..., N_K)`` filtered message at ``t - 1``.
        weight_next: ``(N_1, ..., N_K)``: ``lik_t * beta_t / c_t`` at ``t``.
        trans: K matrices ``(N_k, N_k)``.

    Returns:
        K arrays ``(N_k, N_k)``.
    """
    n_chains = len(trans)
    counts: list[Array | None] = [None] * n_chains

    def recurse(message: Array, chains: list[int]) -> None:
        # ``message`` has every chain outside ``chains`` already advanced.
        if len(chains) == 1:
            k = chains[0]
            lhs = jnp.moveaxis(message, k, 0).reshape(message.shape[k], -1)
            rhs = jnp.moveaxis(weight_next, k, 0).reshape(weight_next.shape[k], -1)
            counts[k] = trans[k] * (lhs @ rhs.T)
            return
        half = len(chains) // 2
        left, right = chains[:half], chains[half:]
        advanced_right = message
        for j in right:
            advanced_right = propagate_axis(advanced_right, trans[j], j)
        recurse(advanced_right, left)
        advanced_left = message
        for j in left:
            advanced_left = propagate_axis(advanced_left, trans[j], j)
        recurse(advanced_left, right)

    recurse(alpha_prev, list(range(n_chains)))
    return counts  # type: ignore[return-value]
