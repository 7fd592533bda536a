"""The name table between the PP-OCR detector's ONNX initializers and ofa-jax detector parameters.

The ONNX file names its tensors after Paddle's auto-numbered ops (``conv2d_112.w_0``,
``p2o.pd_op.reshape.0.0``), which say nothing about the layer. So the table is built from the other
side: ``layers(cfg)`` lists every convolution of ``ofa_jax.detect.net.DBNet`` in the order the
upstream forward pass runs them (the order the exporter wrote the graph in), with its kernel, stride,
groups and padding; ``table()`` walks the graph's Conv/ConvTranspose nodes in order, checks each
against its row (op, shape, stride, groups, pads: anything else is an error naming the node) and
takes the weight and, when an ``Add`` of a constant follows, the folded-BatchNorm bias. Print it with
``python -m tools.convert_detector --print-table`` and audit it against the graph.

Transforms: ``conv`` is OIHW -> HWIO (grouped: (out, in/groups, kh, kw) -> (kh, kw, in/groups, out));
``convT`` is ONNX's (in, out, kh, kw) -> (kh, kw, in, out); biases are flattened.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from ofa_jax.detect.net import DetectorConfig


@dataclasses.dataclass(frozen=True)
class Layer:
    path: str            # Flax module path under params/
    op: str              # "Conv" | "ConvTranspose"
    cin: int             # input channels
    cout: int
    kernel: int
    stride: int = 1
    groups: int = 1
    pads: Optional[tuple] = None   # (top, left, bottom, right); None: ONNX auto_pad SAME_UPPER
    bias: bool = True


def _conv(path, cin, cout, k=1, stride=1, groups=1, bias=True):
    p = k // 2
    return Layer(path, "Conv", cin, cout, k, stride, groups, (p, p, p, p), bias)


def layers(cfg: DetectorConfig) -> list[Layer]:
    """Every convolution of DBNet, in upstream forward order."""
    m, o = cfg.stem_mid, cfg.stem_out
    out = [_conv("backbone/stem/stem1", 3, m, 3, 2),
           Layer("backbone/stem/stem2a", "Conv", m, m // 2, 2, pads=None),
           Layer("backbone/stem/stem2b", "Conv", m // 2, m, 2, pads=None),
           _conv("backbone/stem/stem3", 2 * m, m, 3, 2),
           _conv("backbone/stem/stem4", m, o, 1)]
    for s, blocks in enumerate(cfg.stages, 1):
        for i, (k, cin, cout, stride, se) in enumerate(blocks):
            b = f"backbone/blocks_s{s}_{i}"
            out.append(_conv(f"{b}/dw", cin, cin, k, stride, groups=cin))
            if se:
                out += [_conv(f"{b}/se/conv1", cin, cin // cfg.se_reduction),
                        _conv(f"{b}/se/conv2", cin // cfg.se_reduction, cin)]
            hidden = cin * cfg.expand_ratio
            out += [_conv(f"{b}/expand", cin, hidden), _conv(f"{b}/compress", hidden, cout)]
    n, r = cfg.neck_channels, cfg.se_reduction
    widths = [blocks[-1][2] for blocks in cfg.stages]
    for i in (3, 2, 1, 0):
        out += [_conv(f"neck/ins_conv_{i}/in_conv", widths[i], n, bias=False),
                _conv(f"neck/ins_conv_{i}/se/conv1", n, n // r), _conv(f"neck/ins_conv_{i}/se/conv2", n // r, n)]
    q = n // 4
    for i in (3, 2, 1, 0):
        out += [_conv(f"neck/inp_conv_{i}/dw", n, n, cfg.neck_kernel, groups=n),
                _conv(f"neck/inp_conv_{i}/pw", n, q, bias=False),
                _conv(f"neck/inp_conv_{i}/se/conv1", q, q // r), _conv(f"neck/inp_conv_{i}/se/conv2", q // r, q)]
    out += [_conv("head/conv1", n, q, 3),
            Layer("head/conv2", "ConvTranspose", q, q, 2, 2, pads=(0, 0, 0, 0)),
            Layer("head/conv3", "ConvTranspose", q, 1, 2, 2, pads=(0, 0, 0, 0))]
    return out


@dataclasses.dataclass(frozen=True)
class Row:
    onnx_name: str
    flax_path: str   # "params/<module path>/<kernel|bias>"
    kind: str        # "conv" | "convT" | "bias"
    node: str        # the ONNX node that uses it (for error messages and the printed table)


class MappingError(ValueError):
    """The ONNX graph is not the architecture ``layers`` describes (message names the node)."""


def _attrs(node) -> dict:
    import onnx
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def graph_index(graph):
    """Identity nodes resolved: (initializers by name, consumers of each tensor, real nodes in order)."""
    from onnx import numpy_helper
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity"}

    def resolve(x):
        while x in alias:
            x = alias[x]
        return x

    nodes = []
    for n in graph.node:
        if n.op_type != "Identity":
            nodes.append((n, [resolve(i) for i in n.input], list(n.output)))
    consumers: dict = {}
    for n, ins, _ in nodes:
        for i in ins:
            consumers.setdefault(i, []).append((n, ins))
    return init, consumers, nodes


def table(graph, cfg: DetectorConfig) -> list[Row]:
    init, consumers, nodes = graph_index(graph)
    convs = [(n, ins, outs) for n, ins, outs in nodes if n.op_type in ("Conv", "ConvTranspose")]
    want = layers(cfg)
    if len(convs) != len(want):
        raise MappingError(f"the graph has {len(convs)} Conv/ConvTranspose nodes, the {cfg.stem_out}-wide "
                           f"DBNet config {len(want)}: another detector variant?")
    rows = []
    for (node, ins, outs), layer in zip(convs, want):
        where = f"{node.op_type} node {node.name or outs[0]} (for {layer.path})"
        a = _attrs(node)
        if node.op_type != layer.op:
            raise MappingError(f"{where}: expected {layer.op}")
        if ins[1] not in init:
            raise MappingError(f"{where}: weight {ins[1]} is not an initializer")
        w = init[ins[1]]
        shape = ((layer.cout, layer.cin // layer.groups) if layer.op == "Conv" else (layer.cin, layer.cout)) \
            + (layer.kernel, layer.kernel)
        if w.shape != shape:
            raise MappingError(f"{where}: weight {ins[1]} has shape {w.shape}, expected {shape}")
        if tuple(a.get("strides", (1, 1))) != (layer.stride,) * 2 or a.get("group", 1) != layer.groups:
            raise MappingError(f"{where}: strides {a.get('strides')} group {a.get('group', 1)}, expected "
                               f"{layer.stride} / {layer.groups}")
        if tuple(a.get("dilations", (1, 1))) != (1, 1):
            raise MappingError(f"{where}: dilated convolution not expected")
        if layer.pads is None:
            if a.get("auto_pad", b"") not in (b"SAME_UPPER", "SAME_UPPER"):
                raise MappingError(f"{where}: expected auto_pad SAME_UPPER, got {a}")
        elif tuple(a.get("pads", (0, 0, 0, 0))) != layer.pads or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise MappingError(f"{where}: pads {a.get('pads')}, expected {layer.pads}")
        kind = "conv" if layer.op == "Conv" else "convT"
        rows.append(Row(ins[1], f"params/{layer.path}/kernel", kind, node.name or outs[0]))
        bias = [init_name for c, cins in consumers.get(outs[0], []) if c.op_type == "Add"
                for init_name in cins if init_name in init]
        if len(ins) > 2 and ins[2]:
            bias.append(ins[2])
        if layer.bias:
            if len(bias) != 1 or init[bias[0]].size != layer.cout:
                raise MappingError(f"{where}: expected one bias of {layer.cout} values after it, found {bias}")
            rows.append(Row(bias[0], f"params/{layer.path}/bias", "bias", node.name or outs[0]))
        elif bias:
            raise MappingError(f"{where}: a bias {bias} where upstream has none")
    return rows


def check_activations(graph, cfg: DetectorConfig) -> None:
    """The hard-sigmoid slopes of the SE gates (backbone's first, then the neck's) are the config's."""
    _, _, nodes = graph_index(graph)
    alphas = [_attrs(n).get("alpha", 0.2) for n, _, _ in nodes if n.op_type == "HardSigmoid"]
    n_backbone = sum(se for blocks in cfg.stages for (*_, se) in blocks)
    want = [cfg.backbone_se_slope] * n_backbone + [cfg.neck_se_slope] * 8
    if len(alphas) != len(want) or not np.allclose(alphas, want, atol=1e-6):
        raise MappingError(f"HardSigmoid slopes {alphas} differ from the config's {want}")


def transform(kind: str, a: np.ndarray) -> np.ndarray:
    if kind == "conv":
        return np.transpose(a, (2, 3, 1, 0))
    if kind == "convT":
        return np.transpose(a, (2, 3, 0, 1))
    return a.reshape(-1)
