"""Cutting a sequence into chunks for checkpointed passes (smoothing, Viterbi).

A first pass keeps only the carry at each chunk's start; a second pass, backwards
over chunks, recomputes one chunk at a time. Peak memory is ``O((T / C + C) * prod(N))``
instead of ``O(T * prod(N))`` for one extra forward pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def to_chunks(array, n_chunks: int, chunk: int):
    """``(T, ...)`` -> ``(n_chunks, chunk, ...)``, zero-padded at the end."""
    pad = n_chunks * chunk - array.shape[0]
    array = jnp.pad(array, [(0, pad)] + [(0, 0)] * (array.ndim - 1))
    return array.reshape((n_chunks, chunk) + array.shape[1:])


def chunk_boundaries(chunk_step, carry0, xs_chunks, n_chunks: int):
    """Carry at the start of every chunk (leading axis ``n_chunks``), from one pass that stores nothing else.

    ``chunk_step(carry, chunk_xs) -> (carry_at_chunk_end, _)`` runs a whole chunk.
    """
    if n_chunks == 1:
        return jax.tree_util.tree_map(lambda c: c[None], carry0)

    def outer(carry, xs):
        end, _ = chunk_step(carry, xs)
        return end, carry

    _, starts = lax.scan(outer, carry0, xs_chunks)
    return starts
