"""The recording's level: a mixture recorded louder or quieter than the training audio.

The trained models know each source at the loudness of its training audio. A recording made at
another gain (another microphone, a normalised file, a talker who speaks up) shifts the sources'
spectra, and the states then explain the mixture at the wrong loudness: on real speech a mixture
6 dB from its training level loses about 0.9 dB of speech SDR improvement, one 20 dB away 3.4 dB
(docs/benchmarks.md, "The recording's level"). So before separating, every source's state spectra
are scaled by the recording's level,

    level = 10 log10( mean_tf |y_tf|^2 / sum_k sum_s pi_k(s) mean_f v_{k,s,f} ),

the mixture's mean power against the sum of the sources' mean powers under their models (``pi_k``
the stationary distribution of chain k, ``v`` its state spectra), averaged in dB over an ensemble's
model sets. It reads the gain exactly (a mixture scaled by ``g`` reads ``20 log10 g`` more), and at
the training level it reads how much louder or quieter the recording's sources are than their
training audio, which the models then follow too.

The FHMM's own marginal likelihood over a common gain of the spectra was tried first and is not
used: a noise with power in bins the models leave empty pulls it (a band the trained noise lacked
read +36 dB), recorded dishes unlike their training stretch read up to 8.4 dB at the training
level, and separating at its level scored 9.16 dB against 9.49 for this one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Optional, Union

import numpy as np

from fhmm_ppl.separation.storage import SourceModel

#: The furthest a recording's level is taken from the training audio's, dB either way: a 16-bit
#: recording's range (a mixture further below is digital silence, whose spectra would underflow).
LEVEL_LIMIT_DB = 96.0


def recording_level(members, power: np.ndarray) -> Optional[float]:
    """The level in dB of a mixture's STFT power ``power (T, F)`` against the training audio of the
    model sets ``members`` (a list of ``{name: SourceModel}``, each with ``emission["psd"] (N, F)``),
    within ``LEVEL_LIMIT_DB`` either way; ``None`` for a silent mixture, which has no level."""
    mixture = float(np.mean(np.asarray(power, np.float64)))
    if not mixture > 0:
        return None
    levels = [10.0 * np.log10(mixture / sum(model_power(s) for s in member.values())) for member in members]
    return float(np.clip(np.mean(levels), -LEVEL_LIMIT_DB, LEVEL_LIMIT_DB))


def model_power(source: SourceModel) -> float:
    """A source's mean power under its model, ``sum_s pi(s) mean_f v_s`` (``pi``: its chain's
    stationary distribution, ``v``: its state spectra ``emission["psd"] (N, F)``), in float64."""
    return float(stationary(source.trans) @ np.asarray(source.emission["psd"], np.float64).mean(axis=1))


def stationary(trans: np.ndarray) -> np.ndarray:
    """A chain's stationary state distribution ``(N,)``, ``pi A = pi`` for ``trans (N, N)`` (rows
    from), in float64: ``pi (A - I) = 0`` with ``sum pi = 1``, solved in the least-squares sense."""
    trans = np.asarray(trans, np.float64)
    n = trans.shape[0]
    system = np.vstack([(trans - np.eye(n)).T, np.ones((1, n))])
    pi = np.clip(np.linalg.lstsq(system, np.r_[np.zeros(n), 1.0], rcond=None)[0], 0.0, None)
    return pi / pi.sum()


def source_levels(members, masks: np.ndarray, power: np.ndarray, names: Sequence[str],
                  skip: Sequence[str] = ()) -> dict[str, float]:
    """Each source's own level in dB, ``{name: dB}`` for the ``names`` not in ``skip``: the power its
    mask ``masks[k] (T, F)`` gives it of the mixture's STFT power ``power (T, F)``, ``mean_tf m^2 |y|^2``,
    against its model's mean power ``sum_s pi(s) mean_f v_s`` (averaged in dB over the model sets
    ``members``), within ``LEVEL_LIMIT_DB``; a source its mask gives no power is left out.

    A scaled talker's states follow its loudness (a state of another loudness explains it as well),
    so the level is read off a separation, not off the posterior: on the demo's speech against sweeps,
    whose sources were mixed 10 dB apart from their training, it read the speech +8.4 to +9.1 dB from
    the common level (truth +8.9); on recordings whose sources keep their training levels it reads the
    speech 0.1-1.7 dB low, the masks leaving some of it to the noise (docs/benchmarks.md, "A level per
    source")."""
    power = np.asarray(power, np.float64)
    levels = {}
    for k, name in enumerate(names):
        own = float(np.mean(np.asarray(masks[k], np.float64) ** 2 * power))
        if name in skip or not own > 0:
            continue
        model = np.mean([10.0 * np.log10(model_power(m[name])) for m in members])
        levels[name] = float(np.clip(10.0 * np.log10(own) - model, -LEVEL_LIMIT_DB, LEVEL_LIMIT_DB))
    return levels


def scaled_members(members, emission, level_db: Union[float, Mapping[str, float]]) -> list:
    """Every source of every model set with its state spectra times ``10^(level_db / 10)`` (a mapping:
    each source it names by its own level, the others as they are), in ``emission``'s parameters
    (``Emission.with_spectra``: log-mel means move by the gain's log)."""
    levels = level_db if isinstance(level_db, Mapping) else {name: level_db for name in members[0]}

    def scaled(name, s):
        if name not in levels:
            return s
        gain = 10.0 ** (levels[name] / 10.0)
        return SourceModel(s.init, s.trans, emission.with_spectra(s.emission, np.asarray(s.emission["psd"]) * gain))

    return [{name: scaled(name, s) for name, s in member.items()} for member in members]
