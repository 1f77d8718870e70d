"""Training one HMM as the settings say: EM or SVI, best of ``n_init`` starts, objective history.

Separation (one HMM per source) and classification (one per label) both train through ``fit``,
so the trainer choice, the restarts and the history mean the same thing in both.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from fhmm_ppl.models.fhmm import FHMMParams, FHMMSpec
from fhmm_ppl.settings import TrainingSettings
from fhmm_ppl.train.em import fit_em, initial_params
from fhmm_ppl.train.svi import fit_svi


class FitResult(NamedTuple):
    """The best of ``n_init`` training runs.

    Attributes:
        params: its ``FHMMParams``.
        history: ``(n_iter,)`` objective per EM iteration (the log posterior) or per SVI step
            (minus the loss), so higher is better for both trainers.
        seed: the seed of the winning run (its k-means start and, for SVI, its PRNG key).
    """

    params: FHMMParams
    history: np.ndarray
    seed: int


def fit(sequences: Sequence[np.ndarray], spec: FHMMSpec, training: TrainingSettings = TrainingSettings(), *,
        seed: int = 0, progress: bool = False) -> FitResult:
    """Train a one-chain HMM on ``sequences`` as ``training`` says.

    Each of ``training.n_init`` runs starts from seeded k-means (``initial_params``) with seeds
    ``seed, seed + 1, ...`` and trains by EM (``training.max_iter`` iterations) or SVI with a MAP
    guide (``training.svi_steps`` steps); the run with the highest final objective is kept.

    Args:
        sequences: feature sequences ``(T_b, D)`` (lengths may differ).
        spec: model spec with ``n_states == (N,)``.
        training: the training settings (``method``, ``max_iter``, ``svi_steps``, ``n_init``).
        seed: the first run's seed.
        progress: show a progress bar per run.

    Returns:
        ``FitResult``.
    """
    best = None
    for run_seed in range(seed, seed + training.n_init):
        init = initial_params(spec, sequences, seed=run_seed)
        if training.method == "em":
            result = fit_em(sequences, spec, init=init, max_iter=training.max_iter, seed=run_seed, progress=progress)
            history = np.asarray(result.objective)
        else:
            result = fit_svi(sequences, spec, init=init, n_steps=training.svi_steps, seed=run_seed, progress=progress)
            history = -np.asarray(result.losses)
        if best is None or history[-1] > best.history[-1]:
            best = FitResult(result.params, history, run_seed)
    return best
