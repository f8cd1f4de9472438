"""minicaffe thin: remove a filter-pruned model's all-zero filters, writing a smaller plain net."""
from minicaffe.compress.netedit import NetEdit, out_axis, weighted_param
from minicaffe.compress.thin import thin

HELP = "remove the all-zero filters of a pruned model: a smaller dense net with the same outputs"


def add_arguments(p):
    p.add_argument("--model", required=True, help="the pruned net's .prototxt")
    p.add_argument("--weights", required=True, help="its .caffemodel (with whole filters at zero)")
    p.add_argument("--keep", default="", help="layers whose zero filters stay: conv1,ip1")
    p.add_argument("-o", "--output", required=True,
                   help="output prefix: writes OUTPUT.prototxt and OUTPUT.caffemodel")


def shapes(edit):
    """Per layer with weights: (outputs, parameter count)."""
    out = {}
    for name, arrays in edit.blobs.items():
        lp = edit.layer(name)
        n = arrays[0].shape[out_axis(lp)] if weighted_param(lp) is not None else None
        out[name] = (n, sum(a.size for a in arrays))
    return out


def run(a):
    edit = NetEdit.load(a.model, a.weights)
    before = shapes(edit)
    notes = thin(edit, [n for n in a.keep.split(",") if n])
    after = shapes(edit)
    print(f"{'layer':<14} {'outputs':>15} {'parameters':>21}")
    for name, (n0, p0) in before.items():
        n1, p1 = after[name]
        outs = f"{n0} -> {n1}" if n0 is not None else ""
        print(f"{name:<14} {outs:>15} {p0:>9} -> {p1:<9}")
    t0, t1 = sum(p for _, p in before.values()), sum(p for _, p in after.values())
    print(f"{'total':<14} {'':>15} {t0:>9} -> {t1:<9} ({t0 / max(t1, 1):.2f}x fewer)")
    for line in notes:
        print(line)
    model, weights = edit.save(a.output)
    print(f"wrote {model} and {weights}")
