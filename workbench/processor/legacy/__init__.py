"""The per-reading processor (one Python object per reading), kept as the reference that the
columnar kernels are proven equal to: parity tests run both on the same stream."""
