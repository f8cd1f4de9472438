"""pycaffe's caffe.draw: a net's graph through pydot and graphviz.

Layers are boxes labelled with their name, type and spatial parameters (coloured by type, green
when they work in place), blobs are octagons, and an edge from a layer to its top says how many
outputs it makes. Needs pydot and graphviz's `dot` program.
"""
import shutil
import subprocess

from minicaffe import io
from minicaffe.errors import CaffeError

from .proto import caffe_pb2

try:
    import pydot
except ImportError:  # said plainly when a net is drawn, not when `caffe` is imported
    pydot = None

LAYER_STYLE_DEFAULT = {'shape': 'record', 'fillcolor': '#6495ED', 'style': 'filled'}
NEURON_LAYER_STYLE = {'shape': 'record', 'fillcolor': '#90EE90', 'style': 'filled'}
BLOB_STYLE = {'shape': 'octagon', 'fillcolor': '#E0E0E0', 'style': 'filled'}

# minicaffe's pruned CmpConvolution and CmpInnerProduct are drawn as the layers they extend
_CONV_TYPES = ('Convolution', 'Deconvolution', 'CmpConvolution')
_IP_TYPES = ('InnerProduct', 'CmpInnerProduct')
_LEARNING_TYPES = _CONV_TYPES + _IP_TYPES
_TYPE_COLOURS = dict([(t, '#FF5050') for t in _CONV_TYPES] + [(t, '#CC33FF') for t in _IP_TYPES],
                     Pooling='#FF9900')
_DOT_KEYWORDS = ('node', 'edge', 'graph', 'digraph', 'subgraph', 'strict')


def get_pooling_types_dict():
    """Pooling method number -> name (0 -> 'MAX')."""
    return {v.number: v.name for v in caffe_pb2.PoolingParameter.PoolMethod.DESCRIPTOR.values}


def get_edge_label(layer):
    """What an edge out of `layer` says: the batch size of a Data layer, the outputs of a
    convolution or inner product, else nothing."""
    if layer.type == 'Data':
        return 'Batch %d' % layer.data_param.batch_size
    if layer.type in _CONV_TYPES:
        return str(layer.convolution_param.num_output)
    if layer.type in _IP_TYPES:
        return str(layer.inner_product_param.num_output)
    return '""'


def get_layer_lr_mult(layer):
    """(weights, bias) learning rate multipliers of a convolution or inner product layer."""
    if layer.type not in _LEARNING_TYPES:
        raise ValueError("%s layers do not have a learning rate multiplier" % layer.type)
    if len(layer.param) > 2:
        raise ValueError("Could not parse the learning rate multiplier")
    mults = [p.lr_mult for p in layer.param] + [1.0, 1.0]
    return mults[0], mults[1]


def _spatial(layer):
    """(kernel size, stride, pad) of a convolution or pooling layer: the first of each."""
    if layer.type == 'Pooling':
        p = layer.pooling_param
        return p.kernel_size, p.stride, p.pad
    p = layer.convolution_param
    return ((p.kernel_size[0] if len(p.kernel_size) else 1), (p.stride[0] if len(p.stride) else 1),
            (p.pad[0] if len(p.pad) else 0))


def get_layer_label(layer, rankdir, display_lrm=False):
    """A layer node's label, quoted for dot: name, (type), then kernel/stride/pad and the lr
    multipliers where they apply, one per line when the graph runs left to right (where height
    is free) and on one line when it runs top to bottom."""
    sep = ' ' if rankdir in ('TB', 'BT') else r'\n'
    if layer.type == 'Pooling':
        kind = '(%s %s)' % (layer.type, get_pooling_types_dict()[layer.pooling_param.pool])
    else:
        kind = '(%s)' % layer.type
    parts = [layer.name, kind]
    if layer.type in _CONV_TYPES + ('Pooling',):
        parts.append(sep.join(['kernel size: %d', 'stride: %d', 'pad: %d']) % _spatial(layer))
    if display_lrm and layer.type in _LEARNING_TYPES:
        lrm = get_layer_lr_mult(layer)
        if any(lrm):
            parts.append('lr mult: %.1f, %.1f' % lrm)
    return '"%s"' % sep.join(parts)


def choose_color_by_layertype(layertype):
    return _TYPE_COLOURS.get(layertype, LAYER_STYLE_DEFAULT['fillcolor'])


def _in_phase(layer, phase):
    """pycaffe's rule: a layer is drawn for `phase` unless its include rules name other phases
    or an exclude rule names this one (None draws every layer)."""
    if phase is None:
        return True
    if len(layer.include) and len(layer.exclude):
        raise ValueError('layer ' + layer.name + ' has both include and exclude specified.')
    if len(layer.include) and not any(r.phase == phase for r in layer.include):
        return False
    return not any(r.phase == phase for r in layer.exclude)


def _blob_node(blob):
    """A blob's node; a blob named like a dot keyword (node, graph, ...) is quoted, which pydot
    does not do, or dot would read it as a default-attribute statement."""
    name = '"%s"' % blob if blob.lower() in _DOT_KEYWORDS else blob
    return pydot.Node(name, **BLOB_STYLE)


def _need_pydot():
    if pydot is None:
        raise CaffeError("drawing a net needs pydot: pip install pydot (and graphviz for its `dot`)")


def get_pydot_graph(caffe_net, rankdir, label_edges=True, phase=None, display_lrm=False):
    """A pydot.Dot of a NetParameter: one node per layer and per blob, edges bottom -> layer -> top.
    `phase` (caffe.TRAIN or caffe.TEST) keeps that phase's layers; None keeps all."""
    _need_pydot()
    graph = pydot.Dot(caffe_net.name or 'Net', graph_type='digraph', rankdir=rankdir)
    nodes, edges = {}, []
    for layer in caffe_net.layer:
        if not _in_phase(layer, phase):
            continue
        key = '%s_%s' % (layer.name, layer.type)
        in_place = len(layer.bottom) == 1 and list(layer.bottom) == list(layer.top)
        style = dict(NEURON_LAYER_STYLE if in_place else LAYER_STYLE_DEFAULT)
        if not in_place:
            style['fillcolor'] = choose_color_by_layertype(layer.type)
        nodes[key] = pydot.Node(get_layer_label(layer, rankdir, display_lrm), **style)
        for blob in layer.bottom:
            nodes[blob + '_blob'] = _blob_node(blob)
            edges.append((blob + '_blob', key, '""'))
        label = get_edge_label(layer) if label_edges else '""'
        for blob in layer.top:
            nodes[blob + '_blob'] = _blob_node(blob)
            edges.append((key, blob + '_blob', label))
    for node in nodes.values():
        graph.add_node(node)
    for src, dst, label in dict.fromkeys(edges):  # a TRAIN and a TEST layer of one name: one edge
        graph.add_edge(pydot.Edge(nodes[src], nodes[dst], label=label))
    return graph


def draw_net(caffe_net, rankdir, ext='png', phase=None, display_lrm=False):
    """The drawing as bytes in graphviz's format `ext` (png, svg, pdf, ...; 'raw' is the dot source)."""
    graph = get_pydot_graph(caffe_net, rankdir, phase=phase, display_lrm=display_lrm)
    if ext == 'raw':
        return graph.to_string().encode()
    dot = shutil.which('dot')
    if dot is None:
        raise CaffeError("drawing a net needs graphviz's `dot` program, which is not on PATH: "
                         "install graphviz (apt-get install graphviz, brew install graphviz, "
                         "or conda install graphviz)")
    run = subprocess.run([dot, '-T' + ext], input=graph.to_string().encode(), capture_output=True)
    if run.returncode:
        why = run.stderr.decode(errors='replace').strip().splitlines() or ['dot failed']
        raise CaffeError("graphviz could not draw the net as '%s': %s" % (ext, why[0]))
    return run.stdout


def draw_net_to_file(caffe_net, filename, rankdir='LR', phase=None, display_lrm=False):
    """Draw to `filename` in the format its extension names ('.raw' writes the dot source)."""
    ext = filename[filename.rfind('.') + 1:]
    io.atomic_write(filename, draw_net(caffe_net, rankdir, ext, phase, display_lrm))
