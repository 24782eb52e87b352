"""The intermediate values that the alignment modules pass to one another (not for users to
import)."""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
from numpy.typing import NDArray

__all__: list[str] = []

#: Per usable vertebra (label): the coronal and sagittal angles (degrees) of its superior endplate,
#: then of its inferior endplate, ``(superior_coronal, superior_sagittal, inferior_coronal,
#: inferior_sagittal)``.
_Angles: TypeAlias = dict[int, tuple[float, float, float, float]]

#: Per vertebra (label): its superior and inferior endplate normals as given (``None`` where not
#: fitted) and its body centre in world RAS+ mm.
_ByLabel: TypeAlias = dict[int, tuple[Any, Any, NDArray[np.float64]]]
