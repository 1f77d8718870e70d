"""Where does the FHMM separator lose quality: in inference on the mixture, or in the model itself?

For each demo task (as in ``bench_quality.py``) it trains the default separator
(two complex-Gaussian HMMs) and prints:

* SDRi of the separator, and of the same models and mask rule when each
  source's states are read off its own clean source
  (``Separator.state_oracle_gains``), next to the ideal ratio mask;
* how often the most likely joint path on the mixture (Viterbi) agrees, chain
  by chain, with each source's most likely path on its clean source;
* the mixture's log-likelihood along each of the two paths (emission terms and
  transition terms). Exact inference maximises the first; if the clean-source
  path scores *lower* on the mixture, the model prefers wrong states, so better
  inference cannot help and a better mixture likelihood is what is needed.

Run: ``python scripts/diagnose_separation.py [--states N] [--quick]``.
"""

from __future__ import annotations

import argparse

import numpy as np


def path_scores(log_lik: np.ndarray, log_trans: list, path: np.ndarray) -> tuple[float, float]:
    """Emission and transition log-probabilities of a two-chain path ``(T, 2)``."""
    frames = np.arange(path.shape[0])
    emission = float(log_lik[frames, path[:, 0], path[:, 1]].sum())
    transition = sum(float(np.asarray(lt)[path[:-1, k], path[1:, k]].sum()) for k, lt in enumerate(log_trans))
    return emission, transition


def diagnose(task, n_states: int) -> dict:
    import jax.numpy as jnp

    from fhmm_ppl import hmm
    from fhmm_ppl.audio.features import stft
    from fhmm_ppl.hmm.emissions import complex_gaussian_log_lik
    from fhmm_ppl.metrics import separation_report
    from fhmm_ppl.separation import fit_separator
    from fhmm_ppl.separation.baselines import apply_masks, oracle_masks

    sep = fit_separator(task.train, task.sample_rate, n_states=n_states, max_iter=30, emission="complex_gaussian",
                        n_models=1)
    cfg, names, mixture = sep.options.stft, sep.names, task.mixtures[0]
    refs = np.stack([task.references[0][n] for n in names])
    spec = stft(mixture, cfg)
    sources = [stft(r, cfg) for r in refs]
    sdri = lambda masks: float(separation_report(refs, apply_masks(mixture, masks, cfg), mixture)["sdr_improvement"][0])

    models = list(sep.models.values())
    log_init = [jnp.log(jnp.asarray(m.init, jnp.float32)) for m in models]
    log_trans = [jnp.log(jnp.asarray(m.trans, jnp.float32)) for m in models]
    psd = [jnp.asarray(m.emission["psd"], jnp.float32) for m in models]
    power = lambda s: jnp.asarray(np.abs(s) ** 2, jnp.float32)
    log_lik = complex_gaussian_log_lik(power(spec), psd)
    inferred = np.asarray(hmm.viterbi(log_init, log_trans, log_lik))
    clean = np.stack([np.asarray(hmm.viterbi([li], [lt], complex_gaussian_log_lik(power(s), [p])))[:, 0]
                      for li, lt, p, s in zip(log_init, log_trans, psd, sources)], axis=1)
    log_lik = np.asarray(log_lik)
    return {
        "sdri": sdri(sep.gains(spec)),
        "sdri_states": sdri(sep.state_oracle_gains(spec, sources)),
        "sdri_irm": sdri(oracle_masks(refs, mixture, cfg, "irm")),
        "agreement": (inferred == clean).mean(axis=0),
        "inferred": path_scores(log_lik, log_trans, inferred),
        "clean": path_scores(log_lik, log_trans, clean),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--states", type=int, default=32, help="states per source (default 32)")
    parser.add_argument("--quick", action="store_true", help="two tasks only")
    args = parser.parse_args()
    from fhmm_ppl.audio.tasks import demo_task
    from fhmm_ppl.runtime import enable_compilation_cache

    enable_compilation_cache()
    tasks = [("speech+white", demo_task("speech_noise", "white")), ("two talkers", demo_task("two_talkers"))]
    if not args.quick:
        tasks[1:1] = [("speech+babble", demo_task("speech_noise", "babble")), ("speech+pink", demo_task("speech_noise", "pink")),
                      ("speech+hum", demo_task("speech_noise", "hum")), ("speech+chirps", demo_task("speech_chirp"))]
    print(f"Two complex-Gaussian HMMs of {args.states} states; SDRi of the speech estimate (dB)")
    print("log p(mixture | path): emission + transition terms, nats, along the Viterbi path on the mixture and along")
    print("the sources' own Viterbi paths (found on each clean source)\n")
    print(f"{'task':<15} {'SDRi':>6} {'states':>7} {'IRM':>6} {'agree':>11} {'mixture path':>22} {'clean-source path':>22}")
    gaps = []
    for label, task in tasks:
        d = diagnose(task, args.states)
        gaps.append(d["sdri_states"] - d["sdri"])
        agree = "/".join(f"{a:.2f}" for a in d["agreement"])
        fmt = lambda p: f"{p[0]:12.0f} {p[1]:+9.0f}"
        print(f"{label:<15} {d['sdri']:6.2f} {d['sdri_states']:7.2f} {d['sdri_irm']:6.2f} {agree:>11} "
              f"{fmt(d['inferred']):>22} {fmt(d['clean']):>22}")
    print(f"\nmean SDRi lost to inference on the mixture: {np.mean(gaps):.2f} dB")


if __name__ == "__main__":
    main()
