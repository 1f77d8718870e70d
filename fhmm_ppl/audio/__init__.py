"""Audio input/output and time-frequency features."""

from fhmm_ppl.runtime import configure_numba_cache

configure_numba_cache()  # before librosa is first imported, so its compiled kernels are cached on disk

from fhmm_ppl.audio.features import Normalizer, STFTConfig, istft, log_mel, mfcc, stft
from fhmm_ppl.audio.io import read_audio, resample, write_audio

__all__ = ["Normalizer", "STFTConfig", "istft", "log_mel", "mfcc", "read_audio", "resample", "stft", "write_audio"]
