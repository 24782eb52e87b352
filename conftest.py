"""Test-session set-up for the whole repository (kept at its root, so never in the wheel).

- The tests and the doctests under ``src/vertgrade`` must exercise this checkout: a copy of
  vertgrade installed from elsewhere (``pip install .`` makes one) would make pytest find each
  module twice; the session stops with the command that fixes it instead.
- Doctest collection skips the modules that import PyTorch at the top where it is not installed
  (an optional extra, ``vertgrade[synthesis]``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parent
_TORCH_MODULES = ("model.py", "losses.py", "train.py", "infer.py")

collect_ignore = (
    []
    if importlib.util.find_spec("torch") is not None
    else [f"src/vertgrade/synthesis/{name}" for name in _TORCH_MODULES]
)


def pytest_configure(config: pytest.Config) -> None:
    spec = importlib.util.find_spec("vertgrade")
    origin = Path(spec.origin).resolve() if spec is not None and spec.origin else None
    if origin is None or _ROOT / "src" / "vertgrade" not in origin.parents:
        where = "is not installed" if origin is None else f"is imported from {origin.parent}"
        raise pytest.UsageError(
            f"vertgrade {where}, not from this checkout ({_ROOT / 'src'}): install it "
            "editable with  pip install -e '.[test]'  and run pytest again"
        )
