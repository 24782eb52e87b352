"""Doctest collection: the torch-based modules are skipped where PyTorch is not installed (it is
an optional extra, ``vertgrade[synthesis]``)."""

from __future__ import annotations

import importlib.util

collect_ignore = (
    []
    if importlib.util.find_spec("torch") is not None
    else ["model.py", "losses.py", "train.py", "infer.py"]
)
