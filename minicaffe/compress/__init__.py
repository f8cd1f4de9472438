"""Every compression method, one module each: mask (the one mask mechanism; magnitude, filter and
channel masks), sharing (k-means weight sharing), schedule (gradual pruning, AGP), netedit (edits a
net and its weights together), thin (removes pruned filters), sensitivity (per-layer pruning
curves), mcz (the .mcz format) with huffman (its coder)."""
