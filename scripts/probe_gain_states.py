"""Do gain-adapted states earn their keep on real speech? A probe of the factorial scaled HMM.

Issue 15's first candidate model: each frame gets a non-negative gain per source, so that a state is
a spectral shape at any loudness (Ozerov, Fevotte & Charbit, WASPAA 2009). Two versions, each
against the same states without gains, on the real-speech quick set (SiSEC female 1 and male 2
against the six noises of ``fhmm_ppl.audio.real`` at 0 dB):

* ``--model cg``: complex-Gaussian states, ``x_ft ~ CN(0, sum_k g_kt v_{k, s_kt, f})``. A gain's
  M-step is closed form with the sources' STFTs latent (the Wiener posterior per joint state, as in
  ``separation.adaptation``) under an inverse-gamma prior with mode 1 and shape ``alpha``.
* ``--model logmel``: the default's log-mel states, where a gain is an offset ``a_kt`` on the state
  means (log-magnitudes), ``a ~ N(0, tau^2)``; its M-step is closed form with the sources'
  log-magnitudes latent (per joint state, the posterior that source k dominates a band and the
  moments of its log-magnitude truncated below the mixture's where it does not; Nadas' MIXMAX EM).

Both are exact generalised EM on ``scale * log p(y | g) + log p(g)`` (the separating likelihood
scale), which never decreases (checked here on every mixture). "Trained with gains": each source's
states are re-estimated on its clean training audio with a gain per frame (the same prior; 30 EM
iterations from the trained separator's states). Masks: posterior-weighted Wiener gains (cg) or
dominance spread to bins (logmel), one model set, no state dictionaries, so compare the columns
with one another, not with ``bench_quality.py``. Measured figures: docs/benchmarks.md.

    .venv/bin/python scripts/probe_gain_states.py --model cg
    .venv/bin/python scripts/probe_gain_states.py --model logmel
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr

from fhmm_ppl import hmm
from fhmm_ppl.audio.features import istft, stft
from fhmm_ppl.audio.real import real_tasks
from fhmm_ppl.hmm.emissions import LOG_2PI
from fhmm_ppl.metrics import bss_eval
from fhmm_ppl.separation import fit_separator

REAL_AUDIO = str(Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-audio")
TALKERS = ("dev1_female4_src_1", "dev1_male4_src_2")
TRAIN_ITER = 30
MIN_VARIANCE = 1e-3


# --- complex Gaussian: gains scale the state power spectra -------------------------------------

@jax.jit
def cg_e_step(log_init, log_trans, v1, v2, power, gains, alpha, scale):
    """Objective, the gains' M-step ``(2, T)`` and source 1's Wiener mask ``(T, F)`` at ``gains``."""
    own = (gains[0][:, None, None, None] * v1[None, :, None, :], gains[1][:, None, None, None] * v2[None, None, :, :])
    total = own[0] + own[1]  # (T, N1, N2, F)
    log_lik = -(jnp.log(jnp.pi * total) + power[:, None, None, :] / total).sum(-1)
    post = hmm.posteriors(log_init, log_trans, log_lik * scale, joint=True)
    gamma, log_marginal = post.joint, post.log_marginal
    new = []
    for k, v in enumerate((v1[None, :, None, :], v2[None, None, :, :])):
        share = own[k] / total
        expected = share**2 * power[:, None, None, :] + own[k] * (1 - share)  # E|x_k|^2 per joint state
        stat = (gamma[..., None] * expected / v).sum((1, 2, 3))
        new.append((scale * stat + alpha + 1.0) / (scale * power.shape[1] + alpha + 1.0))
    log_prior = sum((-(alpha + 1) * jnp.log(g) - (alpha + 1) / g).sum() for g in gains)
    return log_marginal + log_prior, jnp.stack(new), (gamma[..., None] * own[0] / total).sum((1, 2))


@jax.jit
def cg_train_step(log_init, log_trans, psd, power, gains, alpha):
    """One EM iteration of a source's states with a gain per training frame."""
    scaled = gains[:, None, None] * psd[None]
    post = hmm.posteriors([log_init], [log_trans], -(jnp.log(jnp.pi * scaled) + power[:, None, :] / scaled).sum(-1),
                          trans_counts=True)
    gamma = post.marginals[0]
    gains = ((gamma * (power @ (1.0 / psd).T)).sum(1) + alpha + 1.0) / (power.shape[1] + alpha + 1.0)
    psd = gamma.T @ (power / gains[:, None]) / (gamma.sum(0)[:, None] + 1e-6) + 1e-10
    return _normalised_log(gamma[0]), _normalised_log(post.trans_counts[0]), psd, gains


# --- log-mel: gains are offsets on the state means ---------------------------------------------

def _terms(frames, means, variances, offsets):
    z = (frames[:, None, :] - means[None] - offsets[:, None, None]) / jnp.sqrt(variances)[None]
    return -0.5 * (LOG_2PI + jnp.log(variances)[None] + z**2), log_ndtr(z), z


@jax.jit
def logmel_e_step(log_init, log_trans, means, variances, frames, offsets, tau, scale):
    """Objective, the offsets' M-step ``(2, T)`` and source 1's band dominance ``(T, D)``."""
    (pdf1, cdf1, z1), (pdf2, cdf2, z2) = (_terms(frames, means[k], variances[k], offsets[k]) for k in range(2))
    d1, d2 = (pdf1 - cdf1)[:, :, None, :], (pdf2 - cdf2)[:, None, :, :]
    log_lik = cdf1.sum(-1)[:, :, None] + pdf2.sum(-1)[:, None, :] + jax.nn.softplus(d1 - d2).sum(-1)
    post = hmm.posteriors(log_init, log_trans, log_lik * scale, joint=True)
    gamma, log_marginal = post.joint, post.log_marginal
    first = jax.nn.sigmoid(d1 - d2)  # (T, N1, N2, D): source 1 dominates
    new = []
    for k, (z, dominant, axis) in enumerate(((z1, first, 2), (z2, 1 - first, 1))):
        z = jnp.expand_dims(z, axis)
        mills = jnp.exp(-0.5 * z**2 - 0.5 * math.log(2 * math.pi) - log_ndtr(z))  # phi / Phi
        variance = jnp.expand_dims(variances[k], (0, axis))
        # E[x - mu - a]: y - mu - a where source k dominates, else its truncated mean's offset
        residual = jnp.sqrt(variance) * (dominant * z - (1 - dominant) * mills)
        num = (gamma[..., None] * residual / variance).sum((1, 2, 3))
        den = (gamma[..., None] / variance).sum((1, 2, 3))
        new.append(scale * (num + offsets[k] * den) / (scale * den + 1.0 / tau**2))
    log_prior = -(offsets**2).sum() / (2 * tau**2)
    return log_marginal + log_prior, jnp.stack(new), (gamma[..., None] * first).sum((1, 2))


@jax.jit
def logmel_train_step(log_init, log_trans, means, variances, frames, offsets, tau):
    """One EM iteration of a source's states with an offset per training frame."""
    centred = frames[:, None, :] - offsets[:, None, None] - means[None]
    post = hmm.posteriors([log_init], [log_trans], (-0.5 * (LOG_2PI + jnp.log(variances)[None] + centred**2
                                                            / variances[None])).sum(-1), trans_counts=True)
    gamma = post.marginals[0]
    precision = 1.0 / variances
    offsets = ((gamma[:, :, None] * (frames[:, None, :] - means[None]) * precision[None]).sum((1, 2))
               / ((gamma @ precision).sum(1) + 1.0 / tau**2))
    shifted = frames - offsets[:, None]
    weight = gamma.sum(0)[:, None] + 1e-6
    means = gamma.T @ shifted / weight
    variances = jnp.maximum(gamma.T @ shifted**2 / weight - means**2, MIN_VARIANCE)
    return _normalised_log(gamma[0]), _normalised_log(post.trans_counts[0]), means, variances, offsets


def _normalised_log(counts):
    counts = counts + 1e-6
    return jnp.log(counts / counts.sum(-1, keepdims=True))


# --- the probe ---------------------------------------------------------------------------------

def separate_with_gains(e_step, chains, observed, n_frames, strength, n_iter, scale):
    """Source 1's mask after ``n_iter`` gain iterations from unit gains; raises if the objective fell."""
    gains = jnp.ones((2, n_frames)) if e_step is cg_e_step else jnp.zeros((2, n_frames))
    objective = []
    for iteration in range(n_iter + 1):
        value, new, mask = e_step(*chains, observed, gains, strength, scale)
        objective.append(float(value))
        if iteration < n_iter:
            gains = new
    drop = -min(np.diff(objective), default=0.0)
    if drop > 1e-5 * abs(objective[-1]):
        raise AssertionError(f"the objective fell by {drop:.3g}: the gains' EM is wrong")
    return np.asarray(mask)


def probe(task, args) -> list[float]:
    """Speech SDRi of: no gains, gains at separation (each strength), then the same with states
    trained with gains."""
    names = list(task.references[0])
    mixture, references = task.mixtures[0], np.stack([task.references[0][n] for n in names])
    if args.model == "cg":
        separator = fit_separator(task.train, task.sample_rate, emission="complex_gaussian", n_states=args.states,
                                  n_models=1, n_fft=1024, hop_length=256)
    else:
        separator = fit_separator(task.train, task.sample_rate, n_states=args.states, n_models=1, refine_iter=0)
    config = separator.options.stft
    spectrum = stft(mixture, config)
    models = [separator.members[0][n] for n in names]
    log_init = tuple(jnp.log(jnp.asarray(m.init)) for m in models)
    log_trans = tuple(jnp.log(jnp.asarray(m.trans)) for m in models)
    if args.model == "cg":
        e_step, observed = cg_e_step, jnp.asarray(np.abs(spectrum) ** 2)
        emission = tuple((jnp.asarray(m.emission["psd"]),) for m in models)
    else:
        e_step, observed = logmel_e_step, jnp.asarray(separator.emission.frames(spectrum))
        emission = tuple((jnp.asarray(m.emission["means"]), jnp.asarray(m.emission["variances"])) for m in models)
    trained = []
    for k, name in enumerate(names):
        clean = stft(task.train[name], config)
        if args.model == "cg":
            data, gains, step = jnp.asarray(np.abs(clean) ** 2), jnp.ones(clean.shape[0]), cg_train_step
        else:
            data, gains, step = jnp.asarray(separator.emission.frames(clean)), jnp.zeros(clean.shape[0]), logmel_train_step
        params = (log_init[k], log_trans[k]) + emission[k]
        for _ in range(TRAIN_ITER):
            *params, gains = step(*params, data, gains, args.train_strength)
        trained.append(params)
    floor = bss_eval(references, np.stack([mixture] * 2)).sdr[0]
    scores = []
    for chains in ((log_init, log_trans) + _joined(emission), _chains(trained)):
        for strength in [0.0] + args.strengths:
            n_iter = args.iter if strength else 0
            mask = separate_with_gains(e_step, chains, observed, spectrum.shape[0], strength or 1.0, n_iter,
                                       separator.options.evidence_scale)
            if args.model == "logmel":
                mask = separator.emission.spread(mask)
            speech = istft(spectrum * mask, config, len(mixture))
            scores.append(float(bss_eval(references, np.stack([speech, mixture - speech])).sdr[0] - floor))
    return scores


def _joined(emission):
    """Per-source emission tuples -> the e-step's arguments (cg: v1, v2; logmel: means, variances)."""
    if len(emission[0]) == 1:
        return (emission[0][0], emission[1][0])
    return (tuple(e[0] for e in emission), tuple(e[1] for e in emission))


def _chains(trained):
    return (tuple(t[0] for t in trained), tuple(t[1] for t in trained)) + _joined([tuple(t[2:]) for t in trained])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("cg", "logmel"), default="cg")
    parser.add_argument("--real", default=REAL_AUDIO, help=f"folder of real recordings (default {REAL_AUDIO})")
    parser.add_argument("--states", type=int, default=16)
    parser.add_argument("--strengths", type=float, nargs="*", help="gain prior strengths at separation "
                        "(cg: the inverse-gamma shape alpha; logmel: the offsets' standard deviation tau)")
    parser.add_argument("--train-strength", type=float, help="the same for training with gains")
    parser.add_argument("--iter", type=int, default=5, help="gain EM iterations at separation")
    args = parser.parse_args()
    args.strengths = args.strengths or ([3.0, 30.0] if args.model == "cg" else [0.3, 1.0])
    args.train_strength = args.train_strength or (3.0 if args.model == "cg" else 1.0)
    columns = [f"{label}, {'no gains' if s == 0 else f'gains {s:g}'}" for label in ("as trained", "trained with gains")
               for s in [0.0] + args.strengths]
    rows = {}
    for task in real_tasks(args.real, talkers=TALKERS, snrs=(0.0,), pairs=()):
        rows[task.name] = probe(task, args)
        print(f"{task.name:40s}" + "".join(f"{v:8.2f}" for v in rows[task.name]), flush=True)
    print(f"\nspeech SDRi (dB), {args.model}, {args.states} states, one model set; training gain prior "
          f"{args.train_strength:g}\n\n| task | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns))
    for name, row in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    print("| mean | " + " | ".join(f"**{v:.2f}**" for v in np.mean(list(rows.values()), axis=0)) + " |")


if __name__ == "__main__":
    main()
