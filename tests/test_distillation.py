"""KnowledgeDistillation: the loss against a per-example NumPy formula, the student gradient by
finite differences, ignore_label and the normalization modes."""
import numpy as np
import pytest

from gradcheck import check_gradient, forward, make_layer
from minicaffe.errors import CaffeError


def kd_reference(s, t, T, axis=1, labels=None, ignore=None, mode="VALID"):
    """Loop over (outer, inner) positions: T^2 * sum_c q_c log(q_c / p_c)."""
    s = np.moveaxis(s.astype(np.float64), axis, -1).reshape(-1, s.shape[axis])
    t = np.moveaxis(t.astype(np.float64), axis, -1).reshape(-1, t.shape[axis])
    lab = None if labels is None else np.moveaxis(
        labels.reshape(labels.shape[:axis] + (1,) + labels.shape[axis + 1:]), axis, -1).ravel()
    total, valid = 0.0, 0
    for k in range(s.shape[0]):
        if lab is not None and int(lab[k]) == ignore:
            continue
        p = np.exp(s[k] / T) / np.exp(s[k] / T).sum()
        q = np.exp(t[k] / T) / np.exp(t[k] / T).sum()
        total += T * T * float(np.sum(q * np.log(q / p)))
        valid += 1
    return total, valid


def logits(shape, seed):
    return (np.random.RandomState(seed).randn(*shape) * 2).astype(np.float32)


def run(text, bottoms):
    layer, bottom, top = make_layer(text, bottoms)
    forward(layer, bottom, top)
    return float(top[0].data)


@pytest.mark.parametrize("T", [1.0, 4.0, 0.5])
def test_forward_matches_kl(T):
    s, t = logits((6, 10), 0), logits((6, 10), 1)
    text = f'type: "KnowledgeDistillation" knowledge_distillation_param {{ temperature: {T} }}'
    total, valid = kd_reference(s, t, T)
    assert run(text, [s, t]) == pytest.approx(total / 6, rel=1e-4)


def test_identical_logits_give_zero_loss():
    s = logits((5, 7), 2)
    assert abs(run('type: "KnowledgeDistillation"', [s, s.copy()])) < 1e-6


def test_default_temperature_is_one():
    s, t = logits((4, 5), 3), logits((4, 5), 4)
    assert run('type: "KnowledgeDistillation"', [s, t]) == pytest.approx(kd_reference(s, t, 1.0)[0] / 4,
                                                                       rel=1e-4)


@pytest.mark.parametrize("mode,expect_norm", [("FULL", 2 * 3 * 4), ("VALID", None),
                                               ("BATCH_SIZE", 2), ("NONE", 1)])
def test_spatial_ignore_label_and_normalization(mode, expect_norm):
    s, t = logits((2, 5, 3, 4), 5), logits((2, 5, 3, 4), 6)
    labels = np.random.RandomState(7).randint(0, 5, (2, 1, 3, 4)).astype(np.float32)
    total, valid = kd_reference(s, t, 3.0, labels=labels, ignore=2)
    assert 0 < valid < 24
    text = ('type: "KnowledgeDistillation" knowledge_distillation_param { temperature: 3 } '
            f'loss_param {{ ignore_label: 2 normalization: {mode} }}')
    norm = valid if expect_norm is None else expect_norm
    assert run(text, [s, t, labels]) == pytest.approx(total / norm, rel=1e-4)


def test_legacy_normalize_false_is_batch_size():
    s, t = logits((3, 4, 5), 8), logits((3, 4, 5), 9)
    text = 'type: "KnowledgeDistillation" loss_param { normalize: false }'
    assert run(text, [s, t]) == pytest.approx(kd_reference(s, t, 1.0)[0] / 3, rel=1e-4)


def test_softmax_axis():
    s, t = logits((3, 4, 6), 10), logits((3, 4, 6), 11)
    text = ('type: "KnowledgeDistillation" softmax_param { axis: 2 } '
            'knowledge_distillation_param { temperature: 2 }')
    total, valid = kd_reference(s, t, 2.0, axis=2)
    assert valid == 12
    assert run(text, [s, t]) == pytest.approx(total / 12, rel=1e-4)


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_gradient_student_only(T):
    s, t = logits((4, 6), 12), logits((4, 6), 13)
    check_gradient(f'type: "KnowledgeDistillation" knowledge_distillation_param {{ temperature: {T} }}',
                   [s, t], check_bottom=[0], loss=True, step=1e-3)


def test_gradient_ignore_label_spatial_full():
    s, t = logits((2, 4, 3, 2), 14), logits((2, 4, 3, 2), 15)
    labels = np.random.RandomState(16).randint(0, 4, (2, 3, 2)).astype(np.float32)
    text = ('type: "KnowledgeDistillation" knowledge_distillation_param { temperature: 2.5 } '
            'loss_param { ignore_label: 1 normalization: FULL }')
    check_gradient(text, [s, t, labels], check_bottom=[0], loss=True, step=1e-3)
    layer, bottom, top = make_layer(text, [s, t, labels])
    forward(layer, bottom, top)
    top[0].diff[...] = 1
    layer.backward(top, [True, False, False], bottom)
    ignored = (labels == 1)[:, None].repeat(4, axis=1)
    assert np.all(bottom[0].diff[ignored] == 0) and np.any(bottom[0].diff[~ignored] != 0)


def test_no_gradient_into_teacher_or_labels():
    s, t = logits((2, 3), 17), logits((2, 3), 18)
    layer, bottom, top = make_layer('type: "KnowledgeDistillation"', [s, t])
    assert layer.allow_force_backward(0)
    assert not layer.allow_force_backward(1) and not layer.allow_force_backward(2)
    forward(layer, bottom, top)
    with pytest.raises(CaffeError, match="teacher"):
        layer.backward(top, [True, True], bottom)


@pytest.mark.parametrize("text,bottoms,msg", [
    ('type: "KnowledgeDistillation"', [np.zeros((2, 3)), np.zeros((2, 4))], "same shape"),
    ('type: "KnowledgeDistillation" loss_param { ignore_label: 0 }',
     [np.zeros((2, 3)), np.zeros((2, 3))], "ignore_label"),
    ('type: "KnowledgeDistillation"', [np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(2)], "ignore_label"),
    ('type: "KnowledgeDistillation" loss_param { ignore_label: 0 }',
     [np.zeros((2, 3)), np.zeros((2, 3)), np.zeros(3)], "number of labels"),
    ('type: "KnowledgeDistillation" knowledge_distillation_param { temperature: 0 }',
     [np.zeros((2, 3)), np.zeros((2, 3))], "temperature"),
])
def test_bad_setups_are_named(text, bottoms, msg):
    with pytest.raises(CaffeError, match=msg):
        make_layer(text, [b.astype(np.float32) for b in bottoms])


NET = """
layer { name: "in" type: "Input" top: "x" top: "label"
        input_param { shape { dim: 8 dim: 6 } shape { dim: 8 } } }
layer { name: "student" type: "InnerProduct" bottom: "x" top: "s"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "teacher" type: "InnerProduct" bottom: "x" top: "t"
        param { lr_mult: 0 } param { lr_mult: 0 }
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "hard" type: "SoftmaxWithLoss" bottom: "s" bottom: "label" top: "hard" loss_weight: 0.2 }
layer { name: "kd" type: "KnowledgeDistillation" bottom: "s" bottom: "t" top: "kd" loss_weight: 0.6
        knowledge_distillation_param { temperature: 4 } }
"""


def test_in_a_net_only_the_student_learns():
    """The frozen teacher (lr_mult 0) gets no backward; the student gets both losses' gradients."""
    from google.protobuf import text_format

    import minicaffe
    from minicaffe import minicaffe_pb2 as pb
    net = minicaffe.Net(text_format.Parse(NET, pb.NetParameter()), minicaffe.TRAIN)
    net.blobs["x"].data[...] = np.random.RandomState(19).randn(8, 6)
    net.blobs["label"].data[...] = np.arange(8) % 4
    net.forward_backward()
    assert np.all(net.params["teacher"][0].diff == 0)
    assert np.abs(net.params["student"][0].diff).sum() > 0
    s, t = net.blobs["s"].data, net.blobs["t"].data
    total, _ = kd_reference(s, t, 4.0)
    assert float(net.blobs["kd"].data) == pytest.approx(total / 8, rel=1e-4)
