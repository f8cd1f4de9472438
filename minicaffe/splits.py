"""Insert Split layers where a blob feeds several layers, as Caffe's InsertSplits does."""
from . import minicaffe_pb2 as pb


def split_layer_name(blob, layer, idx):
    return f"{blob}_{layer}_{idx}_split"


def split_blob_name(blob, layer, idx, k):
    return f"{blob}_{layer}_{idx}_split_{k}"


def insert_splits(param):
    producer = {}     # blob name -> (layer index, top index)
    consumers = {}    # (layer index, top index) -> number of readers
    loss = {}         # (layer index, top index) -> has loss weight
    for li, lp in enumerate(param.layer):
        for b in lp.bottom:
            if b in producer:
                consumers[producer[b]] = consumers.get(producer[b], 0) + 1
        for ti, t in enumerate(lp.top):
            producer[t] = (li, ti)
            loss[(li, ti)] = ti < len(lp.loss_weight) and lp.loss_weight[ti] != 0
    if all(n <= 1 for n in consumers.values()):
        return param

    out = pb.NetParameter()
    out.CopyFrom(param)
    out.ClearField("layer")
    producer = {}
    reads = {}        # (li, ti) -> readers so far
    for li, lp in enumerate(param.layer):
        new = out.layer.add()
        new.CopyFrom(lp)
        for bi, b in enumerate(lp.bottom):
            key = producer.get(b)
            if key is not None and consumers.get(key, 0) > 1:
                k = reads.get(key, 0)
                reads[key] = k + 1
                pl = param.layer[key[0]]
                new.bottom[bi] = split_blob_name(b, pl.name, key[1], k)
        for ti, t in enumerate(lp.top):
            producer[t] = (li, ti)
            n = consumers.get((li, ti), 0)
            if n > 1:
                s = out.layer.add(name=split_layer_name(t, lp.name, ti), type="Split")
                s.bottom.append(t)
                for k in range(n + (1 if loss[(li, ti)] else 0)):
                    s.top.append(split_blob_name(t, lp.name, ti, k))
                if loss[(li, ti)]:
                    s.loss_weight.extend([0.0] * n + [lp.loss_weight[ti]])
                    new.loss_weight[ti] = 0.0
    return out
