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


def dense_smoother(log_init, log_trans, log_lik):
    """Forward-backward in float64 log space over the dense joint chain (small joint spaces, any T).

    Returns log marginal, per-chain marginals ``(T, N_k)`` and transition counts ``(N_k, N_k)``.
    """
    log_lik = np.asarray(log_lik, np.float64)
    n_frames, n_states = log_lik.shape[0], log_lik.shape[1:]
    grids = np.meshgrid(*[np.arange(n) for n in n_states], indexing="ij")
    states = np.stack([g.ravel() for g in grids], axis=1)  # (P, K)
    log_a = sum(np.asarray(m, np.float64)[np.ix_(states[:, k], states[:, k])] for k, m in enumerate(log_trans))
    lik = log_lik.reshape(n_frames, -1)
    fwd = np.empty_like(lik)
    bwd = np.zeros_like(lik)
    fwd[0] = sum(np.asarray(v, np.float64)[states[:, k]] for k, v in enumerate(log_init)) + lik[0]
    for t in range(1, n_frames):
        fwd[t] = logsumexp(fwd[t - 1][:, None] + log_a, axis=0) + lik[t]
    for t in range(n_frames - 2, -1, -1):
        bwd[t] = logsumexp(log_a + (lik[t + 1] + bwd[t + 1])[None, :], axis=1)
    log_z = logsumexp(fwd[-1])
    gamma = np.exp(fwd + bwd - log_z)
    marginals = [np.stack([gamma[:, states[:, k] == i].sum(1) for i in range(n)], axis=1) for k, n in enumerate(n_states)]
    counts = [np.zeros((n, n)) for n in n_states]
    for t in range(1, n_frames):
        xi = np.exp(fwd[t - 1][:, None] + log_a + (lik[t] + bwd[t])[None, :] - log_z)
        for k, n in enumerate(n_states):
            np.add.at(counts[k], (states[:, k][:, None].repeat(len(states), 1), states[:, k][None, :].repeat(len(states), 0)), xi)
    return log_z, marginals, counts
