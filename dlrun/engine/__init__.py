"""dlrun's engine: tensors, primitives, eager autograd and the static graph compiler."""

from dlrun.engine import eager as _eager  # noqa: F401  (installs the default mode, mode.EAGER)
