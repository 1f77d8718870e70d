"""Evaluation metrics: separation (BSS-Eval v3 SDR/SIR/SAR, SI-SDR, SNR, RMS, and
improvements) and classification (accuracy, balanced accuracy, precision/recall/F1,
confusion matrix).

Classification metrics are scikit-learn's, gathered into one report with every
class listed (also classes never predicted, scored 0 rather than warned about).

Why our own BSS-Eval: ``mir_eval.separation`` (the reference) is deprecated
since 0.8 and announced for removal, ``fast_bss_eval`` 0.1.4 fails under NumPy
2, and ``museval`` cannot be imported without an ffmpeg binary. BSS-Eval v3
(Vincent, Gribonval & Fevotte 2006) is short, so it is implemented here in
NumPy/SciPy and held to ``mir_eval.separation.bss_eval_sources`` (with
``compute_permutation=False``, 512-tap distortion filters) to 0.01 dB in the
tests. It is also faster: the Gram matrix of the delayed references is built
once per call (not once per estimate) from a single real FFT, and all
estimates are projected with one factorisation.

Every metric validates its input first (shapes, silence, NaN), as mir_eval does.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg
from scipy.signal import fftconvolve
from sklearn import metrics as skm

#: Length of the BSS-Eval v3 distortion filters (mir_eval's default).
FILTER_LENGTH = 512


class BSSEval(NamedTuple):
    """Per-source BSS-Eval v3 metrics in dB, in the order the sources were given.

    Attributes:
        sdr, sir, sar: ``(n_sources,)``.
    """

    sdr: np.ndarray
    sir: np.ndarray
    sar: np.ndarray


def _validate_pair(references: np.ndarray, estimates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    references = np.atleast_2d(np.asarray(references, dtype=np.float64))
    estimates = np.atleast_2d(np.asarray(estimates, dtype=np.float64))
    if references.ndim != 2 or estimates.ndim != 2:
        raise ValueError(f"references and estimates must be (n_sources, n_samples); got {references.shape} and {estimates.shape}")
    if references.shape != estimates.shape:
        raise ValueError(f"references {references.shape} and estimates {estimates.shape} must have the same shape")
    if references.shape[1] == 0:
        raise ValueError("references and estimates are empty (0 samples)")
    for name, arr in (("references", references), ("estimates", estimates)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contain NaN or infinite values")
        silent = np.flatnonzero(~np.any(arr, axis=1))
        if silent.size:
            raise ValueError(f"{name} {silent.tolist()} are all zeros; BSS-Eval is undefined for silent signals")
    return references, estimates


def _ratio_db(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(np.sum(numerator**2, axis=-1) / np.sum(denominator**2, axis=-1))


def _delayed_gram(references: np.ndarray, estimates: np.ndarray, flen: int):
    """Inner products of delayed references with each other and with the estimates.

    Returns:
        ``gram (n*flen, n*flen)`` with entry ``((i, a), (j, b)) = <s_i[. - a], s_j[. - b]>``
        and ``cross (n*flen, m)`` with entry ``((i, a), e) = <s_i[. - a], estimate_e>``.
    """
    n_src, n_samples = references.shape
    n_fft = int(2 ** np.ceil(np.log2(n_samples + flen - 1)))
    ref_f = np.fft.rfft(references, n=n_fft, axis=1)
    est_f = np.fft.rfft(estimates, n=n_fft, axis=1)
    # corr[i, j, tau] = sum_n s_i[n + tau] s_j[n] (circular, linear thanks to padding)
    corr = np.fft.irfft(ref_f[:, None, :] * np.conj(ref_f[None, :, :]), n=n_fft, axis=-1)
    lags = np.arange(flen)
    delay = lags[None, :] - lags[:, None]  # b - a
    gram = corr[:, :, delay % n_fft]  # (i, j, a, b) = corr[i, j, b - a]
    gram = gram.transpose(0, 2, 1, 3).reshape(n_src * flen, n_src * flen)
    cross = np.fft.irfft(ref_f[:, None, :] * np.conj(est_f[None, :, :]), n=n_fft, axis=-1)  # (i, e, tau)
    cross = cross[:, :, (-lags) % n_fft]  # (i, e, a) = <s_i[. - a], e>
    cross = cross.transpose(0, 2, 1).reshape(n_src * flen, -1)
    return gram, cross


def _solve(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    try:
        return scipy.linalg.solve(gram, rhs, assume_a="sym")
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
        return np.linalg.lstsq(gram, rhs, rcond=None)[0]


def _filter_references(references: np.ndarray, coeffs: np.ndarray, flen: int) -> np.ndarray:
    """``sum_i coeffs_i * s_i`` for each estimate; coeffs ``(n*flen, m)`` -> ``(m, n_samples + flen - 1)``."""
    n_src, n_samples = references.shape
    filters = coeffs.reshape(n_src, flen, -1).transpose(2, 0, 1)  # (m, i, flen)
    out = fftconvolve(references[None, :, :], filters, axes=-1)  # (m, i, n + flen - 1)
    return out.sum(axis=1)[:, : n_samples + flen - 1]


def bss_eval(references: np.ndarray, estimates: np.ndarray, filter_length: int = FILTER_LENGTH) -> BSSEval:
    """BSS-Eval v3 SDR, SIR and SAR of each estimate against its own reference.

    Args:
        references: ``(n_sources, n_samples)`` true sources.
        estimates: ``(n_sources, n_samples)``; row j is the estimate of source j
            (no permutation search: we know which estimate is which source).
        filter_length: distortion filter taps (512 as in mir_eval).

    Returns:
        ``BSSEval`` of ``(n_sources,)`` arrays in dB.
    """
    references, estimates = _validate_pair(references, estimates)
    n_src, n_samples = references.shape
    flen = filter_length
    if n_samples < flen:
        raise ValueError(f"BSS-Eval v3 needs at least {flen} samples (its distortion filter length), got {n_samples}")
    gram, cross = _delayed_gram(references, estimates, flen)
    # Projection of every estimate on all delayed references (interference + target).
    proj_all = _filter_references(references, _solve(gram, cross), flen)
    padded_refs = np.pad(references, ((0, 0), (0, flen - 1)))
    padded_est = np.pad(estimates, ((0, 0), (0, flen - 1)))
    proj_own = np.empty_like(proj_all)
    for j in range(n_src):
        block = slice(j * flen, (j + 1) * flen)
        coeffs = _solve(gram[block, block], cross[block, j : j + 1])
        proj_own[j] = _filter_references(references[j : j + 1], coeffs, flen)[0]
    target = padded_refs
    e_spat = proj_own - target
    e_interf = proj_all - target - e_spat
    e_artif = padded_est - target - e_spat - e_interf
    # v3 allows a time-invariant filter on the target: the "target" is s + e_spat.
    sdr = _ratio_db(target + e_spat, e_interf + e_artif)
    sir = _ratio_db(target + e_spat, e_interf)
    sar = _ratio_db(target + e_spat + e_interf, e_artif)
    return BSSEval(sdr, sir, sar)


def _validate_single(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference = np.asarray(reference, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    if reference.shape != estimate.shape:
        raise ValueError(f"reference {reference.shape} and estimate {estimate.shape} must have the same shape")
    if reference.size == 0:
        raise ValueError("reference and estimate are empty")
    if not (np.all(np.isfinite(reference)) and np.all(np.isfinite(estimate))):
        raise ValueError("reference or estimate contains NaN or infinite values")
    if not np.any(reference, axis=-1).all():
        raise ValueError("reference is all zeros; the metric is undefined for a silent reference")
    return reference, estimate


def si_sdr(reference: np.ndarray, estimate: np.ndarray, zero_mean: bool = True) -> np.ndarray:
    """Scale-invariant SDR (Le Roux, Wisdom, Erdogan & Hershey 2019), in dB.

    ``alpha = <e, s> / <s, s>``; ``SI-SDR = 10 log10(|alpha s|^2 / |alpha s - e|^2)``.

    Args:
        reference, estimate: ``(..., n_samples)``.
        zero_mean: subtract each signal's mean first (as the paper assumes).

    Returns:
        ``(...)`` dB; ``-inf`` for an estimate with no energy (it holds nothing of the target).

    Raises:
        ValueError: a reference with no energy (after removing its mean, with ``zero_mean``).
    """
    reference, estimate = _validate_single(reference, estimate)
    # Without energy = all zeros, or (centred) all equal; tested on the raw samples, as centring a
    # constant leaves rounding residue rather than exact zeros.
    blank = (lambda x: np.all(x == x[..., :1], axis=-1)) if zero_mean else (lambda x: ~np.any(x, axis=-1))
    if np.any(blank(reference)):
        raise ValueError("reference is constant" + (" (zero after removing its mean)" if zero_mean else "")
                         + "; SI-SDR is undefined for it")
    silent = blank(estimate)
    if zero_mean:
        reference = reference - reference.mean(axis=-1, keepdims=True)
        estimate = estimate - estimate.mean(axis=-1, keepdims=True)
    alpha = np.sum(estimate * reference, axis=-1, keepdims=True) / np.sum(reference**2, axis=-1, keepdims=True)
    target = alpha * reference
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(silent, -np.inf, _ratio_db(target, target - estimate))


def snr(reference: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """Signal-to-noise ratio ``10 log10(|s|^2 / |s - e|^2)`` in dB; ``(..., n)`` -> ``(...)``."""
    reference, estimate = _validate_single(reference, estimate)
    return _ratio_db(reference, reference - estimate)


def rms(signal: np.ndarray) -> np.ndarray:
    """Root mean square over the last axis; ``(..., n)`` -> ``(...)``."""
    signal = np.asarray(signal, dtype=np.float64)
    return np.sqrt(np.mean(signal**2, axis=-1))


def rms_db(signal: np.ndarray) -> np.ndarray:
    """RMS level in dB relative to full scale (1.0); ``-inf`` for silence."""
    with np.errstate(divide="ignore"):
        return 20.0 * np.log10(rms(signal))


def separation_report(references: np.ndarray, estimates: np.ndarray, mixture: np.ndarray) -> dict[str, np.ndarray]:
    """Every separation metric per source and its improvement over the unprocessed mixture.

    The mixture, used as the estimate of every source, is the floor: an
    improvement is ``metric(estimate) - metric(mixture)`` for the same reference.

    Args:
        references, estimates: ``(n_sources, n_samples)``; mixture: ``(n_samples,)``.

    Returns:
        dict of ``(n_sources,)`` arrays: ``sdr, sir, sar, si_sdr, snr, rms`` and
        ``sdr_improvement, sir_improvement, sar_improvement, si_sdr_improvement, snr_improvement``.
    """
    references, estimates = _validate_pair(references, estimates)
    mixture = np.asarray(mixture, dtype=np.float64)
    if mixture.shape != references.shape[1:]:
        raise ValueError(f"mixture must be ({references.shape[1]},), got {mixture.shape}")
    as_mixture = np.broadcast_to(mixture, references.shape)
    ours, floor = bss_eval(references, estimates), bss_eval(references, as_mixture)
    report = {"sdr": ours.sdr, "sir": ours.sir, "sar": ours.sar,
              "si_sdr": si_sdr(references, estimates), "snr": snr(references, estimates), "rms": rms(estimates)}
    report["sdr_improvement"] = ours.sdr - floor.sdr
    report["sir_improvement"] = ours.sir - floor.sir
    report["sar_improvement"] = ours.sar - floor.sar
    report["si_sdr_improvement"] = report["si_sdr"] - si_sdr(references, as_mixture)
    report["snr_improvement"] = report["snr"] - snr(references, as_mixture)
    return report


def classification_report(y_true, y_pred, labels) -> dict:
    """Accuracy, balanced accuracy, per-class and macro precision/recall/F1, and the confusion matrix.

    Args:
        y_true, y_pred: ``(R,)`` true and predicted labels of R recordings.
        labels: every class, in the order rows and columns of the confusion matrix use.

    Returns:
        dict with floats ``accuracy, balanced_accuracy, precision_macro, recall_macro,
        f1_macro``; ``per_class``: ``{label: {precision, recall, f1, support}}``;
        ``confusion``: ``(C, C)`` int counts, rows true, columns predicted; ``labels``.
    """
    labels = list(labels)
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1 or y_true.size == 0:
        raise ValueError(f"y_true and y_pred must be equal-length non-empty 1-D, got {y_true.shape} and {y_pred.shape}")
    unknown = (set(y_true.tolist()) | set(y_pred.tolist())) - set(labels)
    if unknown:
        raise ValueError(f"labels {sorted(map(str, unknown))} are not among the classes {labels}")
    precision, recall, f1, support = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    macro = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, average="macro", zero_division=0)
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        "precision_macro": float(macro[0]),
        "recall_macro": float(macro[1]),
        "f1_macro": float(macro[2]),
        "per_class": {label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for label, p, r, f, s in zip(labels, precision, recall, f1, support)},
        "confusion": skm.confusion_matrix(y_true, y_pred, labels=labels),
        "labels": labels,
    }
