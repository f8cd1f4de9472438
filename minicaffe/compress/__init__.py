"""Every compression method, one module each: mask (magnitude pruning, the one mask mechanism),
sharing (k-means weight sharing)."""
