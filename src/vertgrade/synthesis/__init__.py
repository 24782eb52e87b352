"""Learned pseudo-healthy synthesis (HealthiVert-GAN), an optional extra: ``vertgrade[synthesis]``.

The stages, one module each:

- :mod:`.config`: the ``tiny`` and ``paper`` configurations (sizes, losses, schedule);
- :mod:`.crops`: the straightened spine, in millimetres, with its exact transform;
- :mod:`.data`: the samples (slices with the target cut out) and the samples folder;
- :mod:`.model`, :mod:`.losses`, :mod:`.train`: the networks, their losses and training;
- :mod:`.infer`: iterative, batched, cached synthesis;
- :mod:`.modelfile`: safetensors model files with their configuration and version;
- :mod:`.reference`: :class:`~vertgrade.synthesis.reference.SynthesisReference`, the learned
  healthy reference behind the core's reference interface;
- :mod:`.grader`: the SVM grader on the per-pass RHLV features;
- :mod:`.phantoms`: cohorts of phantom subjects for training and tests.

Importing this package does not import PyTorch; the modules that need it (``model``, ``losses``,
``train``, ``infer``) import it when they are imported.
"""

from __future__ import annotations

from vertgrade.synthesis.config import CONFIG_NAMES, LossWeights, SynthesisConfig, named_config
from vertgrade.synthesis.crops import StraightenedSpine, straighten_spine
from vertgrade.synthesis.data import build_samples, load_samples, subject_folds

__all__ = [
    "CONFIG_NAMES",
    "LossWeights",
    "StraightenedSpine",
    "SynthesisConfig",
    "build_samples",
    "load_samples",
    "named_config",
    "straighten_spine",
    "subject_folds",
]
