"""dlrun: a deep-learning experiment runner with its own engine (eager and static graphs).

>>> import dlrun
>>> from dlrun import functional as F
>>> w = dlrun.tensor([[1.0, 2.0]], requires_grad=True)
>>> F.relu(w * 3.0).sum().backward()
"""

from dlrun import functional
from dlrun.backend import cuda_available
from dlrun.engine import prims as _prims  # noqa: F401  (registers every primitive)
from dlrun.engine.autograd import enable_grad, is_grad_enabled, no_grad
from dlrun.engine.creation import (
    arange,
    empty,
    eye,
    from_numpy,
    full,
    full_like,
    get_default_device,
    linspace,
    ones,
    ones_like,
    rand,
    randint,
    randn,
    set_default_device,
    tensor,
    zeros,
    zeros_like,
)
from dlrun.engine.rng import manual_seed
from dlrun.engine.static.compile import compile
from dlrun.engine.tensor import Tensor
from dlrun.functional import (
    abs,
    amax,
    amin,
    argmax,
    argmin,
    cat,
    chunk,
    clamp,
    concat,
    exp,
    flatten,
    gather,
    index_select,
    log,
    logsumexp,
    matmul,
    max,
    maximum,
    mean,
    min,
    minimum,
    permute,
    pow,
    relu,
    reshape,
    sigmoid,
    softmax,
    split,
    sqrt,
    squeeze,
    stack,
    std,
    sum,
    tanh,
    transpose,
    unsqueeze,
    var,
    where,
)

float32 = "float32"
float64 = "float64"
int64 = "int64"
int32 = "int32"
bool_ = "bool"

__version__ = "0.1.0"

__all__ = [
    "Tensor", "tensor", "compile", "from_numpy", "zeros", "ones", "full", "empty", "eye", "arange",
    "linspace", "zeros_like", "ones_like", "full_like", "rand", "randn", "randint",
    "manual_seed", "set_default_device", "get_default_device",
    "no_grad", "enable_grad", "is_grad_enabled", "cuda_available", "functional",
    "abs", "amax", "amin", "argmax", "argmin", "cat", "chunk", "clamp", "concat", "exp",
    "flatten", "gather", "index_select", "log", "logsumexp", "matmul", "max", "maximum", "mean",
    "min", "minimum", "permute", "pow", "relu", "reshape", "sigmoid", "softmax", "split", "sqrt",
    "squeeze", "stack", "std", "sum", "tanh", "transpose", "unsqueeze", "var", "where",
    "float32", "float64", "int64", "int32", "bool_",
]
