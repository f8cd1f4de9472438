"""Layers that pick or repeat parts of a blob: Crop, Tile, Filter, BatchReindex."""
