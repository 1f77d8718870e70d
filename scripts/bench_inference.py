"""Benchmark exact FHMM inference and EM against dynamax and hmmlearn, in one run.

Prints ratios measured in this process (never absolute claims):

1. the factored forward pass (``fhmm_ppl.hmm.log_marginal``, one scan, and
   ``log_marginal_two_threads``, the sequence's halves on two threads) against
   dynamax's ``hmm_filter`` and hmmlearn's scaled forward pass on the same
   problem written as a dense joint-state HMM (K = 2, N in {16, 32, 64},
   T = 2000);
2. where one frame's time goes at N = 32 (an empty scan step, the two factored
   products alone, the whole step) and how the forward pass scales with T
   (time per frame should be flat);
3. the separator's exact path (K = 2, N = 64, T = 1000): the two-filter
   ``joint_posterior`` and ``posterior_expectation`` against the chunked
   smoother ``posteriors``;
4. exact smoothing of K = 3, N = 32, T = 10^4 with chunked log-likelihoods:
   time and peak memory, against the 1.3 GB a stored-messages smoother needs;
5. one EM iteration against hmmlearn (one chain, N = 32, 40-dim diagonal
   Gaussians, T = 10^5).

Run: ``python scripts/bench_inference.py [--quick] [--write-docs]``; ``--write-docs``
also puts this run's output, with the date, CPU and JAX version, into
``docs/benchmarks.md`` (between its ``bench_inference`` markers).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import resource
import statistics
import sys
import time

import benchdoc
import numpy as np


def timings(fn, repeats: int, warm_up: bool = True) -> list[float]:
    """Wall times of ``repeats`` runs of ``fn()``, after one warm-up run (compilation) if ``warm_up``."""
    import jax

    if warm_up:
        jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return times


def timeit(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after one warm-up run."""
    return statistics.median(timings(fn, repeats))


def random_fhmm(rng, n_states, n_frames):
    import jax.numpy as jnp

    log_init = [jnp.log(jnp.asarray(rng.dirichlet(np.ones(n)), jnp.float32)) for n in n_states]
    log_trans = [jnp.log(jnp.asarray(rng.dirichlet(np.ones(n), size=n), jnp.float32)) for n in n_states]
    log_lik = jnp.asarray(rng.normal(size=(n_frames,) + tuple(n_states)) * 3, jnp.float32)
    return log_init, log_trans, log_lik


def hmmlearn_forward_seconds(init, trans, log_lik):
    """hmmlearn's C++ scaled forward pass on a dense chain with given frame log-likelihoods."""
    from hmmlearn import _hmmc

    frame_lik = np.exp(log_lik - log_lik.max(axis=1, keepdims=True))
    start = time.perf_counter()
    _hmmc.forward_scaling(init, trans, frame_lik)
    return time.perf_counter() - start


def bench_forward(quick: bool) -> None:
    import jax
    import jax.numpy as jnp
    from dynamax.hidden_markov_model.inference import hmm_filter

    from fhmm_ppl.hmm import log_marginal, log_marginal_two_threads

    rng = np.random.default_rng(0)
    n_frames = 2000
    print(f"\n## Forward pass, K = 2 chains, T = {n_frames} (same process; best and median of repeats)")
    print("On this 2-core VM one process's timings of the same call vary by up to 1.5x from run to run, so")
    print("each side's best time (timeit's advice: the others are interference) and its median are shown.")
    print("'two threads': hmm.log_marginal_two_threads, the sequence's halves on two threads (forwards from")
    print("the start, backwards from the end, met in the middle); 'one thread': hmm.log_marginal, the single")
    print("forward scan (the same computation eagerly and under jit, grad and SVI).")
    print(f"{'N':>4} {'joint':>6} {'two threads ms':>15} {'dynamax ms':>15} {'x dynamax':>13} "
          f"{'one thread ms':>15} {'x dynamax':>13} {'hmmlearn ms':>12} {'x hmmlearn':>11}  log-marginal check")
    print(f"{'':>11} {'best / median':>15} {'best / median':>15} {'best / median':>13} {'best / median':>15} "
          f"{'best / median':>13}")
    dense_filter = jax.jit(hmm_filter)
    for n in (16, 32) if quick else (16, 32, 64):
        log_init, log_trans, log_lik = random_fhmm(rng, (n, n), n_frames)
        init = jnp.kron(jnp.exp(log_init[0]), jnp.exp(log_init[1]))
        trans = jnp.kron(jnp.exp(log_trans[0]), jnp.exp(log_trans[1]))
        flat = log_lik.reshape(n_frames, -1)
        # Interleaved (10 of ours, then one of dynamax's, three times), so that both sides meet the
        # same drifts of this VM's speed.
        ours_fn = lambda: log_marginal_two_threads(log_init, log_trans, log_lik)
        single_fn = lambda: log_marginal(log_init, log_trans, log_lik)
        dyn_fn = lambda: dense_filter(init, trans, flat).marginal_loglik
        ours, single, dyn = timings(ours_fn, 0), timings(single_fn, 0), timings(dyn_fn, 0)  # compile all
        for _ in range(1 if n >= 64 else 3):
            ours += timings(ours_fn, 10, warm_up=False)
            single += timings(single_fn, 10, warm_up=False)
            dyn += timings(dyn_fn, 1, warm_up=False)
        check = max(abs(float(ours_fn()) - float(dyn_fn())), abs(float(single_fn()) - float(dyn_fn())))
        best, med = min(ours), statistics.median(ours)
        one_best, one_med = min(single), statistics.median(single)
        dyn_best, dyn_med = min(dyn), statistics.median(dyn)
        if n <= 32:
            ref = min(
                hmmlearn_forward_seconds(np.asarray(init, np.float64), np.asarray(trans, np.float64), np.asarray(flat, np.float64))
                for _ in range(2)
            )
            ref_cols = f"{ref * 1e3:12.1f} {ref / best:10.0f}x"
        else:
            ref_cols = f"{'(skipped)':>12} {'':>11}"
        print(f"{n:4d} {n * n:6d} {best * 1e3:7.2f} / {med * 1e3:5.2f} {dyn_best * 1e3:7.0f} / {dyn_med * 1e3:5.0f} "
              f"{dyn_best / best:5.0f}x / {dyn_med / med:4.0f}x {one_best * 1e3:7.2f} / {one_med * 1e3:5.2f} "
              f"{dyn_best / one_best:5.0f}x / {dyn_med / one_med:4.0f}x {ref_cols}  |diff| = {check:.2e}")


def bench_step_floor() -> None:
    """What one frame of the K = 2, N = 32 forward pass costs, piece by piece, in XLA's scan on this CPU."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    from fhmm_ppl.hmm import log_marginal, log_marginal_two_threads

    rng = np.random.default_rng(4)
    n_frames, n = 2000, 32
    log_init, log_trans, log_lik = random_fhmm(rng, (n, n), n_frames)
    first_t, second = jnp.exp(log_trans[0]).T, jnp.exp(log_trans[1])
    message = jnp.full((n, n), 1.0 / n**2, jnp.float32)
    lik = jnp.exp(log_lik - log_lik.max())
    bodies = {
        "an empty step (carry + frame)": lambda a, l: (a + l, None),
        "the two 32 x 32 products alone": lambda a, l: (first_t @ a @ second, None),
        "products, likelihood, sum, division": lambda a, l: (lambda u: (u / u.sum(), u.sum()))(first_t @ a @ second * l),
    }
    print(f"\n## Where a frame's time goes (K = 2, N = {n}, T = {n_frames}; XLA scan on this CPU)")
    for label, body in bodies.items():
        run = jax.jit(lambda m, x, body=body: lax.scan(body, m, x))
        seconds = timeit(lambda: run(message, lik), repeats=20)
        print(f"{label:<38} {seconds / n_frames * 1e6:6.2f} us/frame")
    seconds = timeit(lambda: log_marginal(log_init, log_trans, log_lik), repeats=20)
    print(f"{'log_marginal, one scan (all of it)':<38} {seconds / n_frames * 1e6:6.2f} us/frame")
    seconds = timeit(lambda: log_marginal_two_threads(log_init, log_trans, log_lik), repeats=20)
    print(f"{'log_marginal_two_threads':<38} {seconds / n_frames * 1e6:6.2f} us/frame")


def bench_scaling(quick: bool) -> None:
    from fhmm_ppl.hmm import log_marginal, log_marginal_two_threads

    rng = np.random.default_rng(1)
    print("\n## Cost against T (K = 2, N = 32): time per frame should stay flat")
    print(f"{'T':>7} {'one thread ms':>14} {'us/frame':>9} {'two threads ms':>15} {'us/frame':>9}")
    for n_frames in (1000, 4000, 16000) if quick else (1000, 4000, 16000, 64000):
        log_init, log_trans, log_lik = random_fhmm(rng, (32, 32), n_frames)
        one = timeit(lambda: log_marginal(log_init, log_trans, log_lik), repeats=5)
        two = timeit(lambda: log_marginal_two_threads(log_init, log_trans, log_lik), repeats=5)
        print(f"{n_frames:7d} {one * 1e3:14.2f} {one / n_frames * 1e6:9.2f} {two * 1e3:15.2f} {two / n_frames * 1e6:9.2f}")


def bench_two_filter(quick: bool) -> None:
    """The separator's exact path: joint posteriors of K = 2, N = 64, T = 1000 (interleaved repeats)."""
    import jax.numpy as jnp

    from fhmm_ppl.hmm import joint_posterior, posterior_expectation, posteriors

    rng = np.random.default_rng(5)
    n, n_frames = 64, 1000
    log_init, log_trans, log_lik = random_fhmm(rng, (n, n), n_frames)
    values = jnp.asarray(rng.random((n * n, 257)), jnp.float32)
    runs = {
        "posteriors(joint=True), one thread": lambda: posteriors(log_init, log_trans, log_lik, joint=True).joint,
        "joint_posterior(flat=True), two threads": lambda: joint_posterior(log_init, log_trans, log_lik, flat=True)[0],
        "posterior_expectation, D = 257": lambda: posterior_expectation(log_init, log_trans, log_lik, values)[0],
    }
    times = {label: timings(fn, 0) for label, fn in runs.items()}  # compile all
    for _ in range(2 if quick else 4):
        for label, fn in runs.items():
            times[label] += timings(fn, 3, warm_up=False)
    base = min(times["posteriors(joint=True), one thread"])
    print(f"\n## Exact joint posterior, K = 2, N = {n} ({n * n} joint states), T = {n_frames} (interleaved)")
    print(f"{'':<42} {'best ms':>9} {'median ms':>10} {'x smoother':>11}")
    for label, values_ in times.items():
        print(f"{label:<42} {min(values_) * 1e3:9.1f} {statistics.median(values_) * 1e3:10.1f} "
              f"{base / min(values_):10.2f}x")


def bench_big_smoothing(quick: bool) -> None:
    import jax.numpy as jnp

    from fhmm_ppl.hmm import posteriors_chunked
    from fhmm_ppl.models import make_family

    n_states, n_frames, n_bins = (32, 32, 32), (2000 if quick else 10_000), 64
    rng = np.random.default_rng(2)
    family = make_family("complex_gaussian")
    params = family.from_sites(
        {f"psd_{k}": jnp.asarray(rng.uniform(0.1, 2.0, (n, n_bins)), jnp.float32) for k, n in enumerate(n_states)}, 3
    )
    power = jnp.asarray(rng.exponential(size=(n_frames, n_bins)) * 3, jnp.float32)
    log_init = [jnp.full(n, -np.log(n), jnp.float32) for n in n_states]
    log_trans = [jnp.log(jnp.asarray(rng.dirichlet(np.ones(n) + 10 * np.eye(n)[0], size=n), jnp.float32)) for n in n_states]
    stored = n_frames * 32**3 * 4
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    post = posteriors_chunked(log_init, log_trans, family.log_lik, power, params)
    post.log_marginal.block_until_ready()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"\n## Exact smoothing, K = 3, N = 32 ({32**3} joint states), T = {n_frames}, chunked log-likelihoods")
    print(f"stored forward messages would need {stored / 2**30:.2f} GiB; "
          f"process peak RSS grew by {(peak - before) / 2**20:.0f} MiB (to {peak / 2**20:.0f} MiB); "
          f"{seconds:.1f} s including compilation; log marginal finite: {bool(np.isfinite(float(post.log_marginal)))}")


def bench_em(quick: bool) -> None:
    import warnings

    from hmmlearn.hmm import GaussianHMM

    from fhmm_ppl.models import FHMMSpec, make_family
    from fhmm_ppl.train import fit_em, initial_params

    n_frames = 20_000 if quick else 100_000
    rng = np.random.default_rng(3)
    data = rng.normal(size=(n_frames, 40)).astype(np.float32) + np.repeat(rng.normal(size=(n_frames // 50, 40)) * 2, 50, axis=0)
    spec = FHMMSpec((32,), make_family("gaussian", covariance_type="diag"))
    init = initial_params(spec, [data[:5000]], seed=0)
    stamps = []
    fit_em([data], spec, init=init, max_iter=6, tol=-1.0, callback=lambda i, v: stamps.append(time.perf_counter()))
    ours = statistics.median(np.diff(stamps)[1:])

    ref = GaussianHMM(32, covariance_type="diag", n_iter=3, tol=-1.0, init_params="", implementation="scaling")
    ref.startprob_ = np.asarray(init.init[0], np.float64)
    ref.transmat_ = np.asarray(init.trans[0], np.float64)
    ref.means_ = np.asarray(init.emission.means[0], np.float64)
    ref.covars_ = np.asarray(init.emission.covars[0], np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        ref.fit(data)
        theirs = (time.perf_counter() - start) / 3
    print(f"\n## EM, one chain, N = 32, D = 40 diagonal Gaussians, T = {n_frames}")
    print(f"fhmm-ppl {ours:.3f} s/iteration, hmmlearn {theirs:.3f} s/iteration: {theirs / ours:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller problems (a smoke run)")
    parser.add_argument("--write-docs", action="store_true", help="also write this run's output into docs/benchmarks.md")
    args = parser.parse_args()
    import jax

    captured = io.StringIO()
    with contextlib.redirect_stdout(Tee(sys.stdout, captured)):
        print(f"jax {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind})")
        bench_big_smoothing(args.quick)  # first, so the peak-memory reading is its own
        bench_forward(args.quick)
        bench_step_floor()
        bench_scaling(args.quick)
        bench_two_filter(args.quick)
        bench_em(args.quick)
    if args.write_docs:
        command = "python scripts/bench_inference.py --write-docs" + (" --quick" if args.quick else "")
        path = benchdoc.write("bench_inference", f"{benchdoc.stamp(command)}\n\n```text\n{captured.getvalue().strip()}\n```")
        print(f"\nwrote {path}")


class Tee(io.TextIOBase):
    """A text stream that writes to several others."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self):
        for stream in self.streams:
            stream.flush()


if __name__ == "__main__":
    main()
