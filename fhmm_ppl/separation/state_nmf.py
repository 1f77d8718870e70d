"""States that are small NMF dictionaries (after Mysore, Smaragdis & Raj 2010, the non-negative FHMM).

A state's mean spectrum cannot follow what moves within it: a sweep that
crosses a few bins while the state holds, a louder or quieter instance of the
same sound, a vowel whose harmonics sit a little higher. Here every state of a
trained source HMM also gets a small dictionary of ``R`` non-negative spectra,
learnt by KL-NMF on the STFT magnitudes of the training frames the HMM assigns
to it. On a mixture, the FHMM picks each source's most probable state per
frame (from the exact posterior), and the frame's magnitude spectrum is
explained by the chosen states' dictionaries with non-negative activations
(KL-NMF with the dictionaries fixed). Each source's share of the model's
power, ``|W_k h_k|^2 / sum_j |W_j h_j|^2``, is its mask. (What this buys, by
dictionary size: docs/benchmarks.md.)
"""

from __future__ import annotations

from functools import partial
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from fhmm_ppl.runtime import run_beside
from fhmm_ppl.separation.warps import warp_columns

#: Multiplicative-update iterations for a state's dictionary (training) and a frame's activations.
TRAIN_ITERATIONS = 100
SEPARATE_ITERATIONS = 22
#: A frame's activation updates are over-relaxed, ``h <- h * (W^T (v / W h) / W^T 1)^SEPARATE_EXPONENT``
#: (Lee & Seung's update is exponent 1; exponents in (0, 2) keep the fixed point stable, Badeau,
#: Bertin & Vincent 2010): 22 such updates separate real speech as 40 plain ones did. Beyond 1 no
#: update is sure to lower the KL divergence; on real frames every one at 1.8 did, many at 2 did
#: not (docs/benchmarks.md).
SEPARATE_EXPONENT = 1.8
#: Where the speech's columns are pitch-warped (``separation.warps``), activation updates per warp
#: that choose a frame's warp (for each warped source in turn); the chosen fit then takes the rest of
#: ``n_iter``. Choosing from
#: 6 updates separated real speech as well as full fits of every warp did (docs/benchmarks.md).
SELECT_ITERATIONS = 6
#: Frames times frequency bins per chunk when separating: small enough that the gathered
#: dictionaries, K blocks of ``(chunk, M R, F)``, stay in a core's cache through all the updates
#: (``chunk_frames``: 16 frames at n_fft 1024, 8 at 2048; at 2048, 16 frames took 58 ms where 8 took
#: 51, at 1024 4 to 16 frames took the same).
CHUNK_BINS = 8192
_TINY = 1e-9


def chunk_frames(n_bins: int) -> int:
    """Frames per chunk of ``dictionary_masks`` at ``n_bins`` frequency bins: ``CHUNK_BINS`` bins' worth."""
    return max(1, -(-CHUNK_BINS // n_bins))


def kl_nmf(magnitude: np.ndarray, n_components: int, rng: np.random.Generator,
           n_iter: int = TRAIN_ITERATIONS) -> np.ndarray:
    """Dictionary ``(F, R)`` of KL-NMF ``V ~= W H`` on magnitudes ``V (F, n)`` (Lee & Seung's
    multiplicative updates), each column scaled to sum to one."""
    V = np.asarray(magnitude, np.float64) + _TINY
    scale = float(V.mean())
    W = (np.abs(rng.standard_normal((V.shape[0], n_components))) + 0.1) * scale
    H = np.abs(rng.standard_normal((n_components, V.shape[1]))) + 0.1
    for _ in range(n_iter):
        H *= (W.T @ (V / (W @ H))) / (W.sum(axis=0)[:, None] + _TINY)
        W *= ((V / (W @ H)) @ H.T) / (H.sum(axis=1)[None, :] + _TINY)
    return (W / (W.sum(axis=0, keepdims=True) + _TINY)).astype(np.float32)


def state_dictionaries(marginals: np.ndarray, power: np.ndarray, fallback: np.ndarray, n_components: int,
                       seed: int) -> np.ndarray:
    """Each state's dictionary ``(N, F, R)`` from the training frames the HMM assigns to it.

    Args:
        marginals: ``(T, N)`` posterior state probabilities of the training frames under the
            trained one-chain HMM; each frame goes to its most probable state.
        power: ``(T, F)`` STFT power of the same frames.
        fallback: ``(N, F)`` spectra (power) for states no frame is assigned to: their R columns
            are all that spectrum's magnitude.
        n_components: R.
        seed: seeds the NMF initialisation.
    """
    rng = np.random.default_rng(seed)
    assigned = np.argmax(marginals, axis=1)
    magnitude = np.sqrt(np.asarray(power, np.float64))
    n_states, n_bins = marginals.shape[1], power.shape[1]
    out = np.empty((n_states, n_bins, n_components), np.float32)
    for state in range(n_states):
        frames = magnitude[assigned == state]
        if frames.shape[0] == 0:
            column = np.sqrt(np.asarray(fallback[state], np.float64)) + _TINY
            out[state] = (column / column.sum())[:, None]
        else:
            out[state] = kl_nmf(frames.T, n_components, rng)
    return out


@partial(jax.jit, static_argnames=("warps", "warped"))
def warped_rows(dictionaries, warps: tuple, warped: tuple) -> tuple:
    """The dictionaries of the sources numbered in ``warped`` under every factor of ``warps``
    (``warps.warp_columns``), columns as rows: ``(A, N_k, R, F)`` each. Made once per separator
    (``ModelSet.warped``): warping 32 states' 8-spectrum dictionaries takes about 1.3 ms, as long as a
    stream's block of four frames takes to fit."""
    return tuple(jnp.swapaxes(warp_columns(dictionaries[k], warps), 2, 3) for k in warped)


def dictionary_masks(dictionaries, states, magnitude, n_iter: int = SEPARATE_ITERATIONS,
                     exponent: float = SEPARATE_EXPONENT, warps: tuple = (), warped: tuple = (),
                     rows: Optional[tuple] = None, factors: Optional[tuple] = None) -> np.ndarray:
    """Masks ``(K, T, F)`` from each source's state dictionaries and its state(s) per frame.

    Frames are independent, so a long mixture's second half runs on the helper thread while
    this one runs the first (the chunks of one computation run one after another on one core).

    Args:
        dictionaries: K arrays ``(N_k, F, R)`` (columns summing to one).
        states: ``(T, K)`` int, each source's state at each frame, or ``(T, K, M)``: each source's
            M states at each frame, whose dictionaries all explain it.
        magnitude: ``(T, F)`` mixture STFT magnitudes.
        n_iter: KL-NMF activation updates per frame; exponent: their over-relaxation (1: Lee & Seung's).
        warps: pitch-warp factors (``warps.warp_factors``); where given, the columns of the sources
            numbered in ``warped`` are warped by each (``warps.warp_columns``). One warped source
            after another, the others' warps held (those not yet chosen at the factor nearest 1),
            every frame keeps the warp whose fit leaves the smallest KL divergence after
            ``SELECT_ITERATIONS`` more updates; the chosen fit takes the rest of the ``n_iter``.
        rows: ``warped_rows(dictionaries, warps, warped)`` where made already (``None``: made here).
        factors: K arrays ``(N_k, F, R)`` or ``None``s (``None``: none): where given, source k's share is
            made from its chosen columns times their factors, bin by bin (``separation.reconstruction``:
            reconstruction learnt on training mixtures), the fit itself from the columns as they are.

    Returns:
        masks summing to one over sources at every bin: ``|W_k h_k|^2 / sum_j |W_j h_j|^2`` (``W_k``: the
        columns of source k's chosen dictionaries, times their ``factors`` where given).
        A silent frame gives equal shares.
    """
    n_frames = magnitude.shape[0]
    states, warping = _arguments(dictionaries, states, n_iter, exponent, warps, warped, rows)
    warping["factors"] = factor_rows(factors, len(dictionaries))
    if n_frames < 4 * chunk_frames(magnitude.shape[1]):
        return np.array(_masks(dictionaries, states, magnitude, **warping))
    # two halves of one length (the second padded with silent frames): one compilation for both
    half = -(-n_frames // 2)
    states = np.concatenate([states, np.zeros((2 * half - n_frames,) + states.shape[1:], states.dtype)])
    magnitude = np.concatenate([np.asarray(magnitude), np.zeros((2 * half - n_frames, magnitude.shape[1]), np.float32)])
    first, second = run_beside(lambda: np.asarray(_masks(dictionaries, states[:half], magnitude[:half], **warping)),
                               lambda: np.asarray(_masks(dictionaries, states[half:], magnitude[half:], **warping)))
    return np.concatenate([first, second], axis=1)[:, :n_frames]


def _arguments(dictionaries, states, n_iter: int, exponent: float, warps: tuple, warped: tuple, rows) -> tuple:
    """``states`` as ``(T, K, M)`` and the keywords of ``_masks`` and ``_terms`` for the rest (warps only
    where some source is warped; ``bent``: ``rows``, made here where not given)."""
    states = np.asarray(states)
    states = states[:, :, None] if states.ndim == 2 else states
    warps = tuple(float(a) for a in warps) if warped else ()
    warped = tuple(int(k) for k in warped) if warps else ()
    if warped and rows is None:
        rows = warped_rows(tuple(dictionaries), warps, warped)
    return states, dict(n_iter=n_iter, exponent=exponent, warps=warps, warped=warped, bent=rows if warped else ())


def shares(parts):
    """Masks from each source's fitted magnitudes ``parts (K, ..., F)``: ``|p_k|^2 / sum_j |p_j|^2``."""
    power = parts**2 + _TINY**2
    return power / power.sum(axis=0, keepdims=True)


def factored(block, rows, chosen):
    """A source's chosen columns ``block (C, M R, F)`` times their factors, ``rows (N, R, F)`` at its
    states ``chosen (C, M)``."""
    return block * rows[chosen].reshape(block.shape)


def factor_rows(factors: Optional[tuple], n_sources: int) -> tuple:
    """``factors`` (K arrays ``(N_k, F, R)`` or ``None``s) as rows, ``(N_k, R, F)``; K ``None``s for none."""
    if factors is None:
        return (None,) * n_sources
    return tuple(None if f is None else jnp.swapaxes(jnp.asarray(f, jnp.float32), 1, 2) for f in factors)


@partial(jax.jit, static_argnames=("n_iter", "exponent", "warps", "warped"))
def _masks(dictionaries, states, magnitude, n_iter: int, exponent: float, warps: tuple = (), warped: tuple = (),
           bent: tuple = (), factors: tuple = ()):
    """``dictionary_masks`` in one computation, chunk after chunk of frames (``bent``: ``warped_rows``;
    ``factors``: ``factor_rows``).

    Each source's chosen columns stay a block of their own, ``(C, M R, F)`` (columns as rows, so a
    gather is one contiguous copy and no concatenation follows it); the model is the sum of the blocks'
    products. Against columns side by side in one ``(C, F, K M R)`` array this took the default's
    masks with pitch warps from 55-65 to 48-57 ms a half (docs/benchmarks.md).
    """
    n_bins = magnitude.shape[1]
    rows = [jnp.swapaxes(d, 1, 2) for d in dictionaries]  # (N, R, F)
    factors = factors or (None,) * len(rows)

    def one(args):
        chunk_states, V = args
        W, H = _chunk_fit(rows, dict(zip(warped, bent)), chunk_states, V, n_iter, exponent, warps, warped)
        W = [w if f is None else factored(w, f, chunk_states[:, k]) for k, (w, f) in enumerate(zip(W, factors))]
        return shares(jnp.stack([jnp.einsum("cnf,cn->cf", w, h) for w, h in zip(W, H)]))

    masks = jax.lax.map(one, _chunked(states, magnitude))  # (n_chunks, K, C, F)
    return jnp.moveaxis(masks, 1, 0).reshape(len(rows), -1, n_bins)[:, :states.shape[0]]


def column_terms(dictionaries, states, magnitude, n_iter: int = SEPARATE_ITERATIONS,
                 exponent: float = SEPARATE_EXPONENT, warps: tuple = (), warped: tuple = (),
                 rows: Optional[tuple] = None) -> tuple:
    """Each chosen column's part of the fit ``dictionary_masks`` makes, K arrays ``(T, M R, F)``: the
    column (under the frame's chosen warp) times its activation. Source k's fitted magnitudes are the
    sum over the middle axis; ``separation.reconstruction`` learns factors on them. Arguments as
    ``dictionary_masks``'."""
    states, keywords = _arguments(dictionaries, states, n_iter, exponent, warps, warped, rows)
    return _terms(dictionaries, states, magnitude, **keywords)


@partial(jax.jit, static_argnames=("n_iter", "exponent", "warps", "warped"))
def _terms(dictionaries, states, magnitude, n_iter: int, exponent: float, warps: tuple, warped: tuple, bent: tuple):
    rows = [jnp.swapaxes(d, 1, 2) for d in dictionaries]

    def one(args):
        chunk_states, V = args
        W, H = _chunk_fit(rows, dict(zip(warped, bent)), chunk_states, V, n_iter, exponent, warps, warped)
        return tuple(w * h[:, :, None] for w, h in zip(W, H))

    terms = jax.lax.map(one, _chunked(states, magnitude))  # K of (n_chunks, C, M R, F)
    return tuple(t.reshape((-1,) + t.shape[2:])[:states.shape[0]] for t in terms)


def _chunked(states, magnitude):
    """``states (T, K, M)`` and ``magnitude (T, F)`` (plus ``_TINY``) in chunks of ``chunk_frames``
    frames, the last padded with silent frames: ``(n_chunks, C, K, M)``, ``(n_chunks, C, F)``."""
    n_frames, n_bins = magnitude.shape
    chunk = min(chunk_frames(n_bins), n_frames)  # a few frames (a stream's block) are not padded to a whole chunk
    pad = (-n_frames) % chunk
    states = jnp.pad(states, ((0, pad), (0, 0), (0, 0))).reshape((-1, chunk) + states.shape[1:])
    return states, jnp.pad(magnitude, ((0, pad), (0, 0))).reshape(-1, chunk, n_bins) + _TINY


def _chunk_fit(rows, bent: dict, chunk_states, V, n_iter: int, exponent: float, warps: tuple, warped: tuple):
    """One chunk's fit: each source's chosen columns (under its chosen warp) as blocks ``(C, M R, F)``,
    and their activations ``(C, M R)``, for magnitudes ``V (C, F)`` and states ``chunk_states (C, K, M)``.

    ``rows``: K arrays ``(N, R, F)``; ``bent``: each warped source's rows under every warp, ``(A, N, R, F)``.
    """
    n_bins = V.shape[1]
    n_sources, n_chosen = chunk_states.shape[1:]
    nearest_one = int(np.argmin(np.abs(np.log(warps)))) if warps else 0

    def block(k: int, chosen, warp: Optional[int] = None):
        """Source k's dictionaries at its chunk states ``chosen (C, M)``, ``(C, M R, F)``; all warped
        by the ``warp``-th factor where given."""
        picked = rows[k][chosen] if warp is None else bent[k][warp][chosen]  # (C, M, R, F)
        return picked.reshape(chosen.shape[0], -1, n_bins)

    def model(W, H):
        """The magnitudes ``(C, F)`` the blocks ``W`` (each ``(C, n, F)``) give at activations ``H`` (each ``(C, n)``)."""
        return sum(jnp.einsum("cnf,cn->cf", w, h) for w, h in zip(W, H)) + _TINY

    def fitted(W, V, H, n_updates: int):
        """``n_updates`` activation updates from ``H`` for blocks ``W`` and magnitudes ``V (C, F)``."""
        norms = [w.sum(axis=2) + _TINY for w in W]

        def update(_, H):
            ratio = V / model(W, H)
            steps = [jnp.einsum("cnf,cf->cn", w, ratio) / norm for w, norm in zip(W, norms)]
            return tuple(h * (step if exponent == 1.0 else step**exponent) for h, step in zip(H, steps))

        return jax.lax.fori_loop(0, n_updates, update, tuple(H))

    n_comp = n_chosen * rows[0].shape[1]  # columns per source
    H = (jnp.broadcast_to(V.sum(axis=1, keepdims=True) / (n_sources * n_comp), (V.shape[0], n_comp)),) * n_sources
    # sources not yet warped sit at the warp nearest 1
    W = [block(k, chunk_states[:, k], nearest_one if k in warped else None) for k in range(n_sources)]
    if not warps:
        return W, fitted(W, V, H, n_iter)
    # each warped source in turn (the others' warps held): every warp's fit from a few updates, one
    # warp after another, each frame keeping its best
    for k in warped:
        start = H
        for index in range(len(warps)):
            trial = W[:k] + [block(k, chunk_states[:, k], index)] + W[k + 1:]
            fit = fitted(trial, V, start, SELECT_ITERATIONS)
            estimate = model(trial, fit)
            divergence = jnp.sum(V * jnp.log(V / estimate) - V + estimate, axis=1)  # (C,)
            if index == 0:
                least, H, best = divergence, fit, trial[k]
            else:
                better = divergence < least
                least = jnp.where(better, divergence, least)
                H = tuple(jnp.where(better[:, None], new, old) for new, old in zip(fit, H))
                best = jnp.where(better[:, None, None], trial[k], best)
        W = W[:k] + [best] + W[k + 1:]
    return W, fitted(W, V, H, max(0, n_iter - len(warped) * SELECT_ITERATIONS))
