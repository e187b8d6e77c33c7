"""Output shapes for pallas_call that also work inside a caller's `shard_map(check_vma=True)`.

There, every pallas_call output must say which manual mesh axes it varies over; an attention
output varies over whatever its inputs vary over (batch and/or head axes).
"""

from __future__ import annotations

import jax
from jax.sharding import ManualAxisType


def out_struct(shape, dtype, *like) -> jax.ShapeDtypeStruct:
    varying = frozenset()
    for x in like:
        mat = getattr(jax.typeof(x), "mat", None)
        if mat is not None:
            varying |= mat.varying
    return jax.ShapeDtypeStruct(shape, dtype, manual_axis_type=ManualAxisType(varying=varying))
