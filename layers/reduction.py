"""Reduction: SUM, ASUM, SUMSQ, MEAN over the tail axes from `axis`."""
