# Type stubs of fastconv.serialization: state dicts to and from .safetensors / .npz files.
import os
from collections.abc import Mapping
from typing import Protocol

import numpy as np
import numpy.typing as npt

SUFFIXES: tuple[str, str]

class _HasStateDict(Protocol):
    def state_dict(self) -> Mapping[str, np.ndarray]: ...

def save(
    model_or_state_dict: _HasStateDict | Mapping[str, npt.ArrayLike],
    path: str | os.PathLike[str],
) -> None: ...
def load(path: str | os.PathLike[str]) -> dict[str, np.ndarray]: ...
