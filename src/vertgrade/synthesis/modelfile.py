"""Model files: the generator's weights as safetensors, with their configuration and provenance.

A model file is a ``.safetensors`` file whose metadata (strings) holds:

- ``format`` = ``"vertgrade-synthesis"`` and ``format_version`` (:data:`MODEL_FORMAT_VERSION`);
- ``config``: the :class:`~vertgrade.synthesis.config.SynthesisConfig` as JSON;
- ``vertgrade``: the package version that wrote it;
- ``trained_subjects``: JSON list of the subjects whose vertebrae trained it (so that the grader
  can refuse features of vertebrae the generator has seen);
- ``parameters``: the generator's parameter count; ``training``: a JSON summary.

Loading never falls back to random weights: a missing, unreadable or truncated file, a file of
another kind or format version, a configuration this version cannot read, or weights that do not
fit the configuration's network each raise :class:`vertgrade.errors.ModelFileError` naming the
file and the problem. Files written by another vertgrade minor version (``X.Y``) are refused
too, with the versions in the message.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vertgrade._version import __version__
from vertgrade.errors import ModelFileError
from vertgrade.io.files import atomic_path
from vertgrade.io.nifti import file_sha256
from vertgrade.synthesis.config import SynthesisConfig, config_from_dict

if TYPE_CHECKING:
    import torch

    from vertgrade.synthesis.model import Generator

__all__ = [
    "MODEL_FORMAT",
    "MODEL_FORMAT_VERSION",
    "ModelFile",
    "load_generator",
    "minor_version",
    "read_model_file",
    "save_generator",
]

MODEL_FORMAT = "vertgrade-synthesis"
MODEL_FORMAT_VERSION = 1


def _version() -> str:

    return __version__


def minor_version(version: str) -> str | None:
    """``"X.Y"`` of a version string (None if it has none).

    >>> minor_version("0.1.0.dev12+gf177fb6")
    '0.1'
    """
    m = re.match(r"^(\d+)\.(\d+)", version)
    return f"{m.group(1)}.{m.group(2)}" if m else None


@dataclass(frozen=True)
class ModelFile:
    """A model file's content: configuration, weights (CPU tensors) and metadata."""

    path: Path
    config: SynthesisConfig
    state: dict[str, torch.Tensor] = field(repr=False)
    vertgrade_version: str
    trained_subjects: tuple[str, ...]
    sha256: str
    training: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """Short name recorded in results: ``synthesis-<config>-<first 12 hex of sha256>``."""
        return f"synthesis-{self.config.name}-{self.sha256[:12]}"


def save_generator(
    path: str | Path,
    generator: Generator,
    cfg: SynthesisConfig,
    *,
    trained_subjects: list[str] | tuple[str, ...],
    training: dict[str, Any] | None = None,
) -> Path:
    """Write the generator's weights with their configuration, atomically.

    Returns
    -------
    Path
        The file written.
    """
    from safetensors.torch import save_file

    from vertgrade.synthesis.model import count_parameters

    state = {k: v.detach().to("cpu").contiguous() for k, v in generator.state_dict().items()}
    meta = {
        "format": MODEL_FORMAT,
        "format_version": str(MODEL_FORMAT_VERSION),
        "config": json.dumps(cfg.to_dict()),
        "vertgrade": _version(),
        "trained_subjects": json.dumps(sorted(trained_subjects)),
        "parameters": str(count_parameters(generator)),
        "training": json.dumps(training or {}),
    }
    target = Path(path)
    with atomic_path(target) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return target


def read_model_file(path: str | Path) -> ModelFile:
    """Read and check a model file (weights not yet put into a network)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    p = Path(path)
    if not p.exists():
        raise ModelFileError(p, "model file not found (train one with: vertgrade train-synthesis)")
    if p.is_dir():
        raise ModelFileError(p, "is a folder; give the model file (generator.safetensors)")
    try:
        with safe_open(str(p), framework="pt") as fh:
            meta = fh.metadata() or {}
        state = load_file(str(p))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ModelFileError(p, f"not a readable safetensors model file ({err})") from err
    if meta.get("format") != MODEL_FORMAT:
        raise ModelFileError(p, "not a vertgrade synthesis model (no vertgrade metadata)")
    if meta.get("format_version") != str(MODEL_FORMAT_VERSION):
        raise ModelFileError(
            p,
            f"model format version {meta.get('format_version')} is not "
            f"{MODEL_FORMAT_VERSION}: retrain it with this vertgrade",
        )
    made_by = meta.get("vertgrade", "unknown")
    if minor_version(made_by) != minor_version(_version()):
        raise ModelFileError(
            p, f"made by vertgrade {made_by}, which differs from this {_version()}: retrain it"
        )
    try:
        cfg = config_from_dict(json.loads(meta["config"]))
        subjects = tuple(json.loads(meta.get("trained_subjects", "[]")))
        training = json.loads(meta.get("training", "{}"))
    except (KeyError, ValueError, TypeError) as err:
        raise ModelFileError(p, f"its configuration cannot be read ({err})") from err
    return ModelFile(p, cfg, state, made_by, subjects, file_sha256(p), training)


def load_generator(
    path: str | Path | ModelFile, *, device: str = "cpu"
) -> tuple[Generator, ModelFile]:
    """The generator of a model file, in evaluation mode on ``device``.

    Raises
    ------
    ModelFileError
        As described in the module docstring, also when a weight is missing, extra or of the
        wrong shape for the file's configuration.
    """
    from vertgrade.synthesis.model import Generator, resolve_device

    mf = path if isinstance(path, ModelFile) else read_model_file(path)
    gen = Generator(mf.config)
    expected = gen.state_dict()
    missing = sorted(set(expected) - set(mf.state))
    extra = sorted(set(mf.state) - set(expected))
    wrong = sorted(
        k
        for k in set(expected) & set(mf.state)
        if tuple(expected[k].shape) != tuple(mf.state[k].shape)
    )
    if missing or extra or wrong:
        parts = []
        for what, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}")
        raise ModelFileError(
            mf.path,
            f"weights do not match its configuration '{mf.config.name}' ({'; '.join(parts)})",
        )
    gen.load_state_dict(mf.state, strict=True)
    gen = gen.to(resolve_device(device))
    gen.eval()
    return gen, mf
