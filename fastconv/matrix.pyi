# Type stubs of fastconv.matrix: a convolution as a sparse matrix.
from collections.abc import Sequence

import numpy.typing as npt
import scipy.sparse

from fastconv.functional import _Pair, _Padding

def conv_matrix(
    input_shape: Sequence[int],
    weight: npt.ArrayLike,
    stride: _Pair = 1,
    padding: _Padding = 0,
    dilation: _Pair = 1,
    groups: int = 1,
) -> scipy.sparse.csr_array: ...
