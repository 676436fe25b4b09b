# Type stubs of fastconv.normalization: batch normalisation (PyTorch's semantics, channels last).
import numpy as np
import numpy.typing as npt

from fastconv.functional import _Array, _Grads, _Needs

def batch_norm(
    x: npt.ArrayLike,
    running_mean: npt.NDArray[np.floating] | None,
    running_var: npt.NDArray[np.floating] | None,
    weight: npt.ArrayLike | None = None,
    bias: npt.ArrayLike | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> _Array: ...
def batch_norm_forward(
    fn: str,
    x: npt.ArrayLike,
    running_mean: npt.NDArray[np.floating] | None,
    running_var: npt.NDArray[np.floating] | None,
    weight: npt.ArrayLike | None,
    bias: npt.ArrayLike | None,
    training: bool,
    momentum: float,
    eps: float,
) -> tuple[_Array, npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...
def batch_norm_backward(
    grad_output: npt.ArrayLike,
    x: npt.ArrayLike,
    mean: npt.ArrayLike | None,
    var: npt.ArrayLike | None,
    weight: npt.ArrayLike | None = None,
    training: bool = False,
    eps: float = 1e-5,
    needs: _Needs = ("input", "weight", "bias"),
) -> _Grads: ...
