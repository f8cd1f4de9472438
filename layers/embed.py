"""Embed: a learned lookup table (one-hot InnerProduct) for word indices."""
