"""Choosing exact or structured mean-field inference before anything is allocated.

The exact smoother costs ``T * prod(N) * sum(N)`` multiply-adds and holds the
``(T, prod(N))`` log-likelihoods plus checkpointed messages; the mean-field
approximation costs ``T * sum(N^2)`` per sweep plus the expectations. The
plan is computed from shapes alone, so a user sees why a method was chosen
(and can override it) instead of meeting a MemoryError half-way through, as
users of NILMTK's Kronecker-product FHMM do (its issues #67, #963).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

#: Multiply-adds per second assumed for the exact forward-backward on one CPU core
#: (the figure behind it is in docs/benchmarks-inference.md).
ASSUMED_FLOPS = 1.0e10


#: Default bound on the bytes one chunk of stored messages may take.
DEFAULT_MESSAGE_BYTES = 256 * 2**20


def choose_chunk_size(n_frames: int, n_joint_states: int, max_bytes: int = DEFAULT_MESSAGE_BYTES) -> int:
    """Frames per smoothing chunk so stored messages fit ``max_bytes`` (float32).

    One chunk keeps about three ``(C, prod(N))`` tensors (log-likelihoods,
    likelihoods, messages) alive; when the whole sequence fits, ``C = T``.
    Otherwise ``C ~ sqrt(T)`` minimises boundary plus chunk storage.
    """
    per_frame = 3 * 4 * n_joint_states
    if n_frames * per_frame <= max_bytes:
        return n_frames
    chunk = max(1, int(math.ceil(math.sqrt(n_frames))))
    return max(1, min(chunk, max_bytes // per_frame))


class InferencePlan(NamedTuple):
    """Which inference to run, and why.

    Attributes:
        method: ``"exact"`` or ``"mean_field"``.
        reason: one sentence a user can read.
        exact_bytes: estimated peak bytes of exact smoothing.
        exact_seconds: estimated seconds of exact smoothing.
    """

    method: str
    reason: str
    exact_bytes: int
    exact_seconds: float


def plan_inference(
    n_states: Sequence[int],
    n_frames: int,
    *,
    method: str = "auto",
    max_bytes: int = 2 * 2**30,
    max_seconds: float = 600.0,
    chunked_log_lik: bool = False,
) -> InferencePlan:
    """Estimate the cost of exact inference and choose a method.

    Args:
        n_states: ``(N_1, ..., N_K)``.
        n_frames: T.
        method: ``"auto"``, ``"exact"`` or ``"mean_field"``; anything but auto is obeyed.
        max_bytes: memory budget for exact inference.
        max_seconds: time budget for exact inference.
        chunked_log_lik: whether log-likelihoods are produced chunk by chunk
            (``posteriors_chunked``) rather than as one dense array.

    Returns:
        ``InferencePlan``.
    """
    if method not in ("auto", "exact", "mean_field"):
        raise ValueError(f"inference method must be 'auto', 'exact' or 'mean_field', got {method!r}")
    n_states = tuple(int(n) for n in n_states)
    if not n_states or min(n_states) < 1 or n_frames < 1:
        raise ValueError(f"need at least one chain, one state per chain and one frame; got n_states={n_states}, "
                         f"n_frames={n_frames}")
    n_joint = math.prod(n_states)
    chunk = choose_chunk_size(n_frames, n_joint)  # as exact smoothing will choose it
    n_chunks = -(-n_frames // chunk)
    messages = (n_chunks + 3 * chunk) * n_joint * 4  # chunk-boundary messages + one chunk's working set
    dense = 0 if chunked_log_lik else 2 * n_frames * n_joint * 4
    exact_bytes = messages + dense
    exact_seconds = 3.0 * n_frames * n_joint * sum(n_states) / ASSUMED_FLOPS
    summary = (
        f"exact inference over {n_joint} joint states x {n_frames} frames needs about "
        f"{exact_bytes / 2**20:.0f} MiB and {exact_seconds:.1f} s"
    )
    if method != "auto":
        return InferencePlan(method, f"{method} requested; {summary}", exact_bytes, exact_seconds)
    if len(n_states) == 1:  # one chain: mean field would be the same computation
        return InferencePlan("exact", f"{summary}: one chain, for which mean field is exact inference", exact_bytes,
                             exact_seconds)
    if exact_bytes > max_bytes:
        return InferencePlan("mean_field", f"{summary}: over the {max_bytes / 2**20:.0f} MiB budget", exact_bytes, exact_seconds)
    if exact_seconds > max_seconds:
        return InferencePlan("mean_field", f"{summary}: over the {max_seconds:.0f} s budget", exact_bytes, exact_seconds)
    return InferencePlan("exact", f"{summary}: within budget", exact_bytes, exact_seconds)
