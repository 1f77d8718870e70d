"""Streaming separation: chunks of a mixture in, each source's final samples out, in constant memory.

Three parts, each testable alone:

- ``framing.Framer``: an incremental centred STFT. It buffers samples and returns each frame as
  soon as every sample it covers has arrived, the frames ``audio.features.stft`` makes of the whole
  signal (zero centre padding at both ends; ``finish`` makes the last frames).
- a smoother (``SMOOTHERS``, chosen once from the separator's plan): ``ExactLag``, the exact
  posterior of frame ``t - L`` once frame ``t`` is in (``hmm.fixed_lag``; ``L`` frames = the lag),
  or ``MeanFieldLag``, structured mean field on a window of ``L + 1`` frames; the frames still
  inside the lag when the stream ends get the posterior given every frame.
- ``phase.StreamSynthesis``: the estimates of ``phase.waveforms``, sample by sample as they become
  final: ``framing.OverlapAdd`` (the inverse STFT of ``audio.features.istft``) of the masked
  frames, and for the ``inference.phase_sources`` (a hum) their rounds of phase retrieval, a few
  frames later.

``stream`` wires them for a ``Separator``: per input chunk the new frames go through the
emission's log-likelihoods and the smoother in blocks of up to ``BLOCK`` frames (padded to a power of
two, so each kernel compiles at most five times), the frames leaving the lag get the separator's masks (averaged over its
model sets) and are overlap-added. Everything held is the lag's window, one frame of samples
and the current chunk: memory does not grow with the stream's length. With a lag covering the
whole stream the output is the offline ``Separator.separate``'s.

``fitted_stream`` fits a stream to its first seconds (level, refined noise): held back and then
streamed from the start (``fitted_on_head``), or live, as trained until they are in and fitted after
(``handed_over``).

Masks are per frame (a frame's mask reads only its posterior, its own mixture frame and the
causal running average of the noise's power, ``separation.averaging``, carried along), so every
built-in emission streams; an emission whose model frames depend on the whole recording says so
with ``frame_local = False`` and is refused.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from itertools import chain

import jax.numpy as jnp
import numpy as np

from fhmm_ppl.hmm.fixed_lag import lag_advance, lag_flush, lag_state
from fhmm_ppl.runtime import numpy_blas_on_one_thread
from fhmm_ppl.separation.averaging import source_indices
from fhmm_ppl.separation.framing import Framer
from fhmm_ppl.separation.inputs import stream_chunk
from fhmm_ppl.separation.masks import Mixture
from fhmm_ppl.separation.phase import StreamSynthesis
from fhmm_ppl.separation.posterior import Factored, Joint, scaled_log_lik

#: Frames per block through log-likelihoods, smoother and masks (one compilation per kernel).
BLOCK = 16
#: The lag (s) at which streaming stands in for whole-file separation of long recordings: on the
#: six demo tasks it scores within 0.01 dB SDRi of offline smoothing on every task
#: (``scripts/bench_streaming.py --lag-table``); a frame's posterior hardly depends on audio a
#: second away.
OFFLINE_LAG = 1.0
#: Recordings longer than this (s) are separated through the stream by ``fhmm-ppl separate``, so
#: that memory stays bounded whatever their length.
LONG_RECORDING = 300.0


def lag_frames(lag: float, sample_rate: int, hop_length: int) -> int:
    """The lag in frames, ``ceil(lag * sample_rate / hop_length)``; one-line error for a bad lag."""
    if isinstance(lag, bool) or not isinstance(lag, (int, float, np.integer, np.floating)):
        raise ValueError(f"lag must be a number of seconds >= 0, got {lag!r}")
    if not math.isfinite(lag) or lag < 0:
        raise ValueError(f"lag must be a finite number of seconds >= 0 (0: causal), got {lag}")
    return math.ceil(float(lag) * sample_rate / hop_length - 1e-9)


class ExactLag:
    """Exact fixed-lag smoothing (``hmm.fixed_lag``) for every model set of a separator.

    ``push(frames, n)`` takes a block of model frames ``(block_size(n), D)`` (the first ``n`` real) and
    returns, per model set, the posterior rows of the frames that left the lag; ``flush(n_left)``
    those of the last ``n_left`` frames, given every frame. Rows are tuples of arrays with one row
    per frame, here ``(joint (m, prod N),)``; ``posterior(rows, models)`` is what masks read.
    """

    def __init__(self, separator, n_lag: int) -> None:
        self.separator, self.lag = separator, n_lag
        self.windows = [lag_state(models.n_states, n_lag) for models in separator.sets]
        self.n_fed = 0

    def push(self, frames, n: int) -> list[tuple]:
        first = max(0, self.lag - self.n_fed)  # rows before it would be frames before frame 0
        valid = jnp.arange(frames.shape[0]) < n
        out = []
        for k, models in enumerate(self.separator.sets):
            log_lik = scaled_log_lik(models, self.separator.emission, frames, self.separator.options.evidence_scale)
            self.windows[k], rows = lag_advance(models.log_init, models.log_trans, self.windows[k], log_lik, valid)
            out.append((np.asarray(rows)[first:n],))
        self.n_fed += n
        return out

    def flush(self, n_left: int) -> list[tuple]:
        return [(np.asarray(lag_flush(models.log_trans, window))[-n_left:],)
                for models, window in zip(self.separator.sets, self.windows)]

    @staticmethod
    def posterior(rows: tuple, models):
        return Joint(jnp.asarray(_padded(rows[0])), models.n_states)


class MeanFieldLag:
    """Structured mean field on a window of ``W = L + 1`` frames, for emissions that have it.

    When the window is full, mean field (``emission.mean_field_marginals``) runs on it with each
    chain entering at its marginal of the frame before the window, pushed through its transitions,
    and the window's first frame leaves with its marginals. The frames left at the end get one run
    on what remains; a lag covering the stream is offline mean field. Rows: K arrays ``(m, N_k)``.
    """

    def __init__(self, separator, n_lag: int) -> None:
        self.separator, self.size = separator, n_lag + 1
        self.window = None  # model frames (w < W, D) not yet out
        self.entering = [None for _ in separator.sets]  # per set: K marginals (N_k,) of the last frame out

    def push(self, frames, n: int) -> list[tuple]:
        frames = np.asarray(frames)[:n]
        self.window = frames if self.window is None else np.concatenate([self.window, frames])
        out = [[] for _ in self.separator.sets]
        while self.window.shape[0] >= self.size:
            for k, rows in enumerate(self._run(self.window[:self.size], self.size, 1)):
                out[k].append(rows)
            self.window = self.window[1:]
        return [_joined(parts, tuple(np.zeros((0, n), np.float32) for n in models.n_states))
                for parts, models in zip(out, self.separator.sets)]

    def flush(self, n_left: int) -> list[tuple]:
        window = np.pad(self.window, ((0, self.size - n_left), (0, 0)), mode="edge")
        return self._run(window, n_left, n_left)

    def _run(self, window: np.ndarray, length: int, n_out: int) -> list[tuple]:
        """Mean field on ``window (W, D)`` (frames from ``length`` on are padding); the first ``n_out``
        frames' marginals per set, and each set's entering marginals moved to the last of them."""
        emission, scale = self.separator.emission, self.separator.options.evidence_scale
        out = []
        for k, models in enumerate(self.separator.sets):
            log_init = models.log_init if self.entering[k] is None else tuple(
                jnp.log(q @ jnp.exp(lt)) for q, lt in zip(self.entering[k], models.log_trans))
            marginals = emission.mean_field_marginals(log_init, models.log_trans, models.params, jnp.asarray(window),
                                                      scale, length)
            rows = tuple(np.asarray(m)[:n_out] for m in marginals)
            self.entering[k] = tuple(jnp.asarray(r[-1]) for r in rows)
            out.append(rows)
        return out

    @staticmethod
    def posterior(rows: tuple, models):
        return Factored(tuple(jnp.asarray(_padded(r)) for r in rows))


SMOOTHERS = {"exact": ExactLag, "mean_field": MeanFieldLag}


def stream(separator, chunks: Iterable, n_lag: int, method: str, convert) -> Iterator[dict[str, np.ndarray]]:
    """``Separator.stream``'s generator: ``{name: (m,)}`` per chunk of ``chunks``, then one with the rest.

    Args:
        separator: a ``Separator`` whose emission is frame-local.
        chunks: iterable of sample arrays; ``convert(chunk, number)`` checks each and makes it float32 ``(n,)``.
        n_lag: the smoother's lag in frames (``lag_frames``); method: ``"exact"`` or ``"mean_field"`` (``SMOOTHERS``).
    """
    config = separator.options.stft
    names = separator.names
    framer = Framer(config)
    synthesis = StreamSynthesis(config, len(names), source_indices(separator.options.inference.phase_sources or (), names))
    smoother = SMOOTHERS[method](separator, n_lag)
    average = separator.power_average()  # causal: carried from block to block
    pending = np.zeros((0, config.n_bins), np.complex64)  # frames fed to the smoother, not yet masked

    @numpy_blas_on_one_thread()
    def feed(spec: np.ndarray, flush: bool = False) -> np.ndarray:
        """Feed new frames ``(n, F)`` (with ``flush``, the stream's last); mask and overlap-add the
        frames whose posteriors are now known; return the samples now final ``(K, m)``."""
        nonlocal pending
        pending = np.concatenate([pending, spec])
        parts = [[] for _ in separator.sets]
        for lo in range(0, spec.shape[0], BLOCK):
            block = spec[lo:lo + BLOCK]
            frames = jnp.asarray(_padded(separator.emission.frames(block)))
            for k, rows in enumerate(smoother.push(frames, block.shape[0])):
                parts[k].append(rows)
        n_ready = sum(rows[0].shape[0] for rows in parts[0])
        n_left = pending.shape[0] - n_ready
        if flush and n_left:
            for k, rows in enumerate(smoother.flush(n_left)):
                parts[k].append(rows)
            n_ready += n_left
        posts = [_joined(p, ()) for p in parts]
        out = [np.zeros((len(names), 0), np.float32)]
        for lo in range(0, n_ready, BLOCK):
            block = pending[lo:min(lo + BLOCK, n_ready)]
            part = [smoother.posterior(tuple(r[lo:lo + BLOCK] for r in rows), models)
                    for rows, models in zip(posts, separator.sets)]
            out.append(synthesis.add(masks(separator, block, part, average), block, framer.n_samples))
        pending = pending[n_ready:]
        return np.concatenate(out, axis=1)

    for number, chunk in enumerate(chunks):
        yield dict(zip(names, feed(framer.push(convert(chunk, number)))))
    tail = np.concatenate([feed(framer.finish(), flush=True), synthesis.finish(framer.n_samples)], axis=1)
    yield dict(zip(names, tail))


def fitted_stream(separator, chunks: Iterable, lag: float, seconds: float,
                  live: bool = False) -> Iterator[dict[str, np.ndarray]]:
    """``separator.stream(chunks, lag)`` by ``separator`` fitted to the stream's first ``seconds``
    (``fitted_on_head``; a ``resolution.LineResolved`` chooses its STFT on them): nothing is yielded
    until they are in, then the stream from its start; ``live``: the stream as trained until then,
    and the fitted one after them (``handed_over``). One-line errors for a bad lag or head at once."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float, np.integer, np.floating)) or not seconds >= 0:
        raise ValueError(f"fit_seconds must be 0 or more seconds, got {seconds!r}")
    separator.stream((), lag)  # a bad lag, or an emission that cannot stream: the one-line error now

    def run():
        blocks = (stream_chunk(c, i) for i, c in enumerate(chunks))
        if live:
            yield from handed_over(separator, blocks, lag, seconds)
            return
        fitted, blocks = fitted_on_head(separator, blocks, seconds)
        yield from fitted.stream(blocks, lag=lag)

    return run()


def handed_over(separator, blocks: Iterator[np.ndarray], lag: float, seconds: float) -> Iterator[dict[str, np.ndarray]]:
    """A live stream fitted to its first ``seconds``: pieces from the first block on by ``separator`` as
    it is, and once those seconds are in (or the stream ends), by ``separator`` fitted to them
    (``fitted_to``), which runs through them again, as one chunk, to reach the same point. The
    last frame's worth of samples (``n_fft``) out of the first stream is held back and crossfaded into
    the fitted stream's, so that the estimates do not jump where the masks change. One piece per
    block, as ``stream`` yields, then the rest; the catching up comes out with the first block after
    the head."""
    if not (seconds > 0 and separator.fits_recording):
        yield from separator.stream(blocks, lag)
        return
    wanted, held, complete = int(round(seconds * separator.sample_rate)), [], []

    def head():
        count = 0
        for piece in blocks:
            held.append(piece)
            count += piece.shape[0]
            if count >= wanted:
                complete.append(True)
            yield piece
            if complete:
                return

    names, fade = separator.names, separator.options.stft.n_fft
    kept, emitted = np.zeros((len(names), 0), np.float32), 0  # held back for the crossfade; yielded
    first_stream = separator.stream(head(), lag)
    for number, piece in enumerate(first_stream):
        if number == len(held):  # the stream ended within the head: the first stream's last samples
            break  # assume it ends here, and the fitted stream has them
        kept = np.concatenate([kept, _stacked(piece, names)], axis=1)
        cut = max(0, kept.shape[1] - fade)
        yield dict(zip(names, kept[:, :cut]))
        emitted, kept = emitted + cut, kept[:, cut:]
        if complete:
            break
    first_stream.close()
    again = np.concatenate([np.zeros(0, np.float32), *held])  # the head as one chunk (maybe empty)
    fitted = fitted_to(separator, again[:wanted])
    seen, out = 0, []
    for number, piece in enumerate(fitted.stream(chain([again], blocks), lag)):
        samples = _stacked(piece, names)
        out.append(_crossfaded(samples, seen, emitted, kept))
        seen += samples.shape[1]
        if number:  # a block after the head (or the stream's end); piece 0 is the head run through again
            yield dict(zip(names, np.concatenate(out, axis=1)))
            out = []


def _crossfaded(samples: np.ndarray, at: int, start: int, kept: np.ndarray) -> np.ndarray:
    """What of ``samples (K, m)``, a stream's from sample ``at``, lies from sample ``start`` on, with the
    part in ``start .. start + n`` crossfaded linearly from ``kept (K, n)``, another stream's there."""
    end = at + samples.shape[1]
    samples = samples[:, max(0, start - at):].copy()
    first, last = max(at, start), min(end, start + kept.shape[1])
    if last > first:
        w = (np.arange(first - start, last - start, dtype=np.float32) + 0.5) / kept.shape[1]
        samples[:, :last - first] = (1 - w) * kept[:, first - start:last - start] + w * samples[:, :last - first]
    return samples


def _stacked(piece: dict, names) -> np.ndarray:
    """A stream's piece ``{name: (m,)}`` as ``(K, m)`` in ``names``' order."""
    return np.stack([piece[name] for name in names])


def fitted_on_head(separator, blocks: Iterator[np.ndarray], seconds: float) -> tuple:
    """``(separator, blocks)``: ``separator`` fitted (level, refined spectra; ``Separator.refine``) to the
    first ``seconds`` of the audio ``blocks`` (1-D float32 at its rate) where it fits to a recording
    (``Separator.fits_recording``), ``seconds`` is positive and they hold at least a frame, else as it is;
    and the same blocks from the start again (those read are held until then)."""
    if not (seconds > 0 and separator.fits_recording):
        return separator, blocks
    wanted, held, count = int(round(seconds * separator.sample_rate)), [], 0
    for piece in blocks:
        held.append(piece)
        count += piece.shape[0]
        if count >= wanted:
            break
    head = np.concatenate(held)[:wanted] if held else np.zeros(0, np.float32)
    return fitted_to(separator, head), chain(held, blocks)


def fitted_to(separator, head: np.ndarray):
    """``separator`` fitted to the audio ``head (n,)`` (``Separator.refine``) where it holds at least a
    frame, else as it is."""
    return separator.refine(head) if head.shape[0] >= separator.options.stft.n_fft else separator


def masks(separator, spec: np.ndarray, posteriors: list, average) -> np.ndarray:
    """The separator's masks ``(K, n, F)`` of ``n <= BLOCK`` frames ``spec (n, F)`` from each model set's
    posterior over the frames padded to ``block_size(n)``, averaged over the sets, the stream's
    running power ``average`` (``separation.averaging``) moved on by these frames."""
    n = spec.shape[0]
    mixture = Mixture(jnp.asarray(_padded(separator.emission.frames(spec))),
                      jnp.asarray(_padded(np.abs(spec).astype(np.float32))) if separator.mask.magnitude else None)
    per_set = [separator.mask.make(post, models, mixture, separator.emission)
               for post, models in zip(posteriors, separator.sets)]
    return separator._finish(per_set, n, spec, average)


def _joined(parts: list[tuple], empty: tuple) -> tuple:
    """Row tuples stacked frame-wise (``empty`` when none has a row)."""
    parts = [rows for rows in parts if rows[0].shape[0]]
    return tuple(np.concatenate(column) for column in zip(*parts)) if parts else empty


def block_size(n: int) -> int:
    """The rows a block of ``1 <= n <= BLOCK`` frames is padded to: the next power of two. Small chunks
    (a few frames each, as live audio arrives) then cost what their frames cost, not a whole ``BLOCK``,
    for at most five compilations of each kernel (1, 2, 4, 8, 16 rows)."""
    return min(BLOCK, 1 << max(0, n - 1).bit_length())


def _padded(rows: np.ndarray) -> np.ndarray:
    """``rows (n, ...)``, ``1 <= n <= BLOCK``, with the last row repeated up to ``block_size(n)`` rows (real
    values: the padded rows' results are dropped, and must not be NaN where a kernel mixes frames)."""
    return np.pad(rows, [(0, block_size(rows.shape[0]) - rows.shape[0])] + [(0, 0)] * (rows.ndim - 1), mode="edge")
