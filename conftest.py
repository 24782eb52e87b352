"""Doctest collection over ``src/vertgrade``: the modules that import PyTorch at the top are
skipped where it is not installed (it is an optional extra, ``vertgrade[synthesis]``).

Kept at the repository root, not in the package, so that it never ships in the wheel.
"""

from __future__ import annotations

import importlib.util

_TORCH_MODULES = ("model.py", "losses.py", "train.py", "infer.py")

collect_ignore = (
    []
    if importlib.util.find_spec("torch") is not None
    else [f"src/vertgrade/synthesis/{name}" for name in _TORCH_MODULES]
)
