"""Dtype facts the engine needs beyond NumPy's `kind`: bfloat16 (from ml_dtypes) is a float."""

from __future__ import annotations

from typing import Any

import numpy as np


def is_floating(dtype: Any) -> bool:
    """Real or complex floating point, bfloat16 included (NumPy gives ml_dtypes' bfloat16 the
    kind 'V', so `kind in "fc"` alone would treat it as a non-float: no gradients, int sums)."""
    dtype = np.dtype(dtype)
    return dtype.kind in "fc" or dtype.name == "bfloat16"
