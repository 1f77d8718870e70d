"""fhmm-ppl: audio source separation with factorial HMMs as probabilistic programs.

Importing the top-level package is cheap on purpose (no JAX, MLflow or librosa),
so the command-line interface starts fast; import the sub-packages you need,
e.g. ``fhmm_ppl.hmm`` for inference or ``fhmm_ppl.train`` for EM and SVI.
"""

__version__ = "0.1.0"
