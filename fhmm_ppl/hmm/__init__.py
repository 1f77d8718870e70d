"""Inference for factorial HMMs: pure, jit-compatible JAX functions over arrays.

Contract (DESIGN §3): ``log_marginal``, ``posteriors`` and ``viterbi`` take
``log_init`` (K arrays ``(N_k,)``), ``log_trans`` (K arrays ``(N_k, N_k)``,
rows from, columns to) and ``log_lik`` ``(T, N_1, ..., N_K)``. Transitions
factor over the chains and are applied chain by chain along the axes of the
``(N_1, ..., N_K)`` message tensor, never as a joint matrix.

Bad data, one policy for every pass (forward, smoothing, two-filter, Viterbi,
sampling, mean field):

- NaN in ``log_lik`` at an observed frame: the answer is undefined. Every float
  output is NaN (log marginal, marginals, joint, transition counts,
  expectations, ELBO, gradients) and every path is ``-1`` at every frame.
- Impossible data (no joint path has positive probability, e.g. a frame whose
  log-likelihoods are all ``-inf``): the log marginal is ``-inf``; posteriors,
  expectations, transition counts and gradients are zero; paths are ``-1``.
  Mean field floors ``-inf`` log-likelihoods (see ``structured_mean_field``).
- NaN wins over impossible. Padded frames (``t >= length``) are never read, so
  they may hold anything, NaN included. ``+inf`` log-likelihoods are not supported.

Threads: every function is pure and gives the same bits eagerly and under
``jit``. The two-thread passes are separate functions that a caller chooses:
``joint_posterior`` and ``posterior_expectation`` (forward and backward passes
at once) and ``log_marginal_two_threads`` (two halves at once, concrete arrays
only).

Modules: ``filtering`` (scaled likelihoods, the filter step, both filters),
``smoothing`` (chunked forward-backward), ``fixed_lag`` (streaming: the posterior ``L`` frames
back, in constant memory), ``marginal`` (``log_marginal`` and its
gradient), ``two_filter``, ``viterbi``, ``sampling``, ``variational`` (mean
field) and ``planning`` (exact or mean field, from a cost estimate).
"""

from fhmm_ppl.hmm._factored import chain_marginals
from fhmm_ppl.hmm.fixed_lag import LagState, lag_advance, lag_flush, lag_state
from fhmm_ppl.hmm.marginal import log_marginal
from fhmm_ppl.hmm.planning import InferencePlan, choose_chunk_size, plan_inference
from fhmm_ppl.hmm.sampling import sample_posterior, sample_prior
from fhmm_ppl.hmm.smoothing import Posteriors, posteriors, posteriors_chunked
from fhmm_ppl.hmm.two_filter import joint_posterior, log_marginal_two_threads, posterior_expectation
from fhmm_ppl.hmm.variational import MeanFieldResult, structured_mean_field
from fhmm_ppl.hmm.viterbi import path_log_prob, viterbi

__all__ = [
    "InferencePlan",
    "LagState",
    "MeanFieldResult",
    "Posteriors",
    "chain_marginals",
    "choose_chunk_size",
    "joint_posterior",
    "lag_advance",
    "lag_flush",
    "lag_state",
    "log_marginal",
    "log_marginal_two_threads",
    "path_log_prob",
    "plan_inference",
    "posterior_expectation",
    "posteriors",
    "posteriors_chunked",
    "sample_posterior",
    "sample_prior",
    "structured_mean_field",
    "viterbi",
]
