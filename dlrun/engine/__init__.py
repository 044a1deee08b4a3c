"""dlrun's engine: tensors, primitives, eager autograd and the static graph compiler."""
