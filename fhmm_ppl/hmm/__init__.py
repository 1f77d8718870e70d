"""Inference for factorial HMMs: pure, jit-compatible JAX functions over arrays.

Contract (DESIGN §3): ``log_marginal``, ``posteriors`` and ``viterbi`` take
``log_init`` (K arrays ``(N_k,)``), ``log_trans`` (K arrays ``(N_k, N_k)``,
rows from, columns to) and ``log_lik`` ``(T, N_1, ..., N_K)``.
"""

from fhmm_ppl.hmm.exact import (
    Posteriors,
    log_marginal,
    path_log_prob,
    posteriors,
    posteriors_chunked,
    viterbi,
)
from fhmm_ppl.hmm.two_filter import joint_posterior, posterior_expectation
from fhmm_ppl.hmm.planning import InferencePlan, choose_chunk_size, plan_inference
from fhmm_ppl.hmm.sampling import sample_posterior, sample_prior
from fhmm_ppl.hmm.variational import MeanFieldResult, structured_mean_field

__all__ = [
    "InferencePlan",
    "MeanFieldResult",
    "Posteriors",
    "choose_chunk_size",
    "joint_posterior",
    "log_marginal",
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
