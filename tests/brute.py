"""Brute-force references: enumerate every joint state path (tiny problems only)."""

from __future__ import annotations

import itertools

import numpy as np
from scipy.special import logsumexp


def joint_paths(n_states, n_frames):
    """Every joint path as an int array (T, K)."""
    joint_states = list(itertools.product(*[range(n) for n in n_states]))
    for combo in itertools.product(joint_states, repeat=n_frames):
        yield np.array(combo, dtype=int)


def path_scores(log_init, log_trans, log_lik):
    """All paths and their log joint probabilities (float64)."""
    log_init = [np.asarray(v, np.float64) for v in log_init]
    log_trans = [np.asarray(m, np.float64) for m in log_trans]
    log_lik = np.asarray(log_lik, np.float64)
    n_frames = log_lik.shape[0]
    n_states = log_lik.shape[1:]
    paths, scores = [], []
    for path in joint_paths(n_states, n_frames):
        score = sum(log_lik[(t,) + tuple(path[t])] for t in range(n_frames))
        for k in range(len(n_states)):
            score += log_init[k][path[0, k]]
            score += sum(log_trans[k][path[t - 1, k], path[t, k]] for t in range(1, n_frames))
        paths.append(path)
        scores.append(score)
    return np.array(paths), np.array(scores)


def brute_force(log_init, log_trans, log_lik):
    """log marginal, per-chain marginals (T, N_k), transition counts, best score."""
    paths, scores = path_scores(log_init, log_trans, log_lik)
    log_z = logsumexp(scores)
    weights = np.exp(scores - log_z)
    n_frames = log_lik.shape[0]
    n_states = log_lik.shape[1:]
    marginals, counts = [], []
    for k, n in enumerate(n_states):
        marg = np.zeros((n_frames, n))
        cnt = np.zeros((n, n))
        for path, w in zip(paths, weights):
            marg[np.arange(n_frames), path[:, k]] += w
            for t in range(1, n_frames):
                cnt[path[t - 1, k], path[t, k]] += w
        marginals.append(marg)
        counts.append(cnt)
    return log_z, marginals, counts, scores.max()
