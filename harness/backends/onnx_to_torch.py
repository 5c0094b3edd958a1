"""A small ONNX interpreter in PyTorch for the ops harness's own graphs use.

Those are zoo exports and folded graphs.

The torch reference backend prefers ``onnx2torch`` when it is installed; it needs torchvision, which
the CPU build of torch used in CI cannot import, so this covers the common CNN ops without it and
names any op it lacks. Forward never reads a device tensor back to the host (Clip bounds become
numbers at load, integer constants such as Reshape's shape stay on the CPU), so that it can be
captured into a CUDA graph.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Dict, List, Tuple

import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper

from harness.errors import HarnessError
from harness.onnx_io import graph_inputs


def _attrs(node: onnx.NodeProto) -> Dict[str, object]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _conv(x, w, b=None, *, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1, **_):
    top, left, bottom, right = pads
    if top != bottom or left != right:
        x = F.pad(x, (left, right, top, bottom))
        top = left = 0
    return F.conv2d(x, w, b, tuple(strides), (top, left), tuple(dilations), group)


def _gemm(a, b, c=None, *, transA=0, transB=0, alpha=1.0, beta=1.0, **_):
    a = a.t() if transA else a
    b = b.t() if transB else b
    out = alpha * (a @ b)
    return out + beta * c if c is not None else out


def _maxpool(
    x, *, kernel_shape, strides=None, pads=(0, 0, 0, 0), dilations=(1, 1), ceil_mode=0, **_
):
    top, left, bottom, right = pads
    if top != bottom or left != right:  # asymmetric: pad with -inf, which no window's max takes
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        top = left = 0
    return F.max_pool2d(
        x,
        tuple(kernel_shape),
        tuple(strides or (1, 1)),  # ONNX: 1 where not given (torch: the kernel)
        (top, left),
        tuple(dilations),
        ceil_mode=bool(ceil_mode),
    )


def _reshape(x, shape, *, allowzero=0, **_):
    dims = [int(d) for d in shape.tolist()]  # a 0 copies the input's dim there (allowzero 0)
    return torch.reshape(
        x, [x.shape[i] if d == 0 and not allowzero else d for i, d in enumerate(dims)]
    )


def _clip(x, *, min=None, max=None, **_):  # noqa: A002 - ONNX's attribute names; bounds resolved at load
    return torch.clamp(x, min, max)


def _batchnorm(x, scale, bias, mean, var, *, epsilon=1e-5, **_):
    return F.batch_norm(x, mean, var, scale, bias, False, 0.0, epsilon)


OPS: Dict[str, Callable] = {
    "Conv": _conv,
    "Gemm": _gemm,
    "MaxPool": _maxpool,
    "Clip": _clip,
    "BatchNormalization": _batchnorm,
    "Relu": lambda x, **_: torch.relu(x),
    "Add": lambda a, b, **_: a + b,
    "Mul": lambda a, b, **_: a * b,
    "MatMul": lambda a, b, **_: a @ b,
    "Identity": lambda x, **_: x,
    "GlobalAveragePool": lambda x, **_: x.mean(dim=(2, 3), keepdim=True),
    "Flatten": lambda x, *, axis=1, **_: torch.flatten(x, axis),
    "Reshape": _reshape,
}


# the attributes each op's implementation honours, and the values it needs where it takes only some:
# any other attribute, or value, is refused (never dropped: that would time another computation)
HONOURED: Dict[str, Dict[str, object]] = {
    "Conv": {
        "strides": None,
        "pads": None,
        "dilations": None,
        "group": None,
        "kernel_shape": None,
        "auto_pad": ("NOTSET", "VALID"),
    },
    "Gemm": {"transA": None, "transB": None, "alpha": None, "beta": None},
    "MaxPool": {
        "kernel_shape": None,
        "strides": None,
        "pads": None,
        "dilations": None,
        "ceil_mode": None,
        "auto_pad": ("NOTSET", "VALID"),
        "storage_order": (0,),
    },
    "Clip": {"min": None, "max": None},
    "BatchNormalization": {"epsilon": None, "momentum": None, "training_mode": (0,)},
    "Flatten": {"axis": None},
    "Reshape": {"allowzero": None},
}


def _check_attributes(node: onnx.NodeProto, attrs: Dict[str, object]) -> None:
    """Refuse an attribute (or value) the op's implementation does not honour."""
    honoured = HONOURED.get(node.op_type, {})
    for name, value in attrs.items():
        shown = value.decode() if isinstance(value, bytes) else value
        allowed = honoured.get(name, ())
        if name not in honoured or (allowed is not None and shown not in allowed):
            raise HarnessError(
                f"the torch backend's interpreter does not honour {node.op_type} {name}={shown!r} "
                f"(node {node.name or node.output[0]!r}): pip install onnx2torch (needs "
                "torchvision) for full ONNX coverage"
            )


class OnnxModule(torch.nn.Module):
    """Runs an ONNX graph node by node with torch operations (inference only)."""

    def __init__(self, model: onnx.ModelProto, record: bool = False) -> None:
        super().__init__()
        self.record = record  # each node inside a torch.profiler.record_function named after it
        unsupported = sorted({n.op_type for n in model.graph.node} - set(OPS) - {"Constant"})
        if unsupported:
            raise HarnessError(
                f"the torch backend's interpreter lacks {', '.join(unsupported)}: "
                f"pip install onnx2torch (needs torchvision) for full ONNX coverage"
            )
        self.constants: Dict[str, torch.Tensor] = {}
        for init in model.graph.initializer:
            self.constants[init.name] = torch.from_numpy(numpy_helper.to_array(init).copy())
        for node in model.graph.node:
            if node.op_type == "Constant":
                self.constants[node.output[0]] = torch.from_numpy(
                    numpy_helper.to_array(_attrs(node)["value"]).copy()
                )
        self.nodes = [self._resolved(n) for n in model.graph.node if n.op_type != "Constant"]
        self.names = [n.name or n.output[0] for n in model.graph.node if n.op_type != "Constant"]
        self.input_names: List[str] = [i.name for i in graph_inputs(model)]
        self.output_names = [o.name for o in model.graph.output]

    def _resolved(self, node: onnx.NodeProto) -> Tuple[str, List[str], str, Dict[str, object]]:
        """(op, inputs, output, attributes), with Clip's constant bounds turned into numbers."""
        inputs, attrs = list(node.input), _attrs(node)
        _check_attributes(node, attrs)
        weight = self.constants.get(inputs[1]) if node.op_type == "Conv" else None
        kernel = attrs.get("kernel_shape") if node.op_type == "MaxPool" else None
        if (weight is not None and weight.ndim != 4) or (kernel is not None and len(kernel) != 2):
            raise HarnessError(
                f"the torch backend's interpreter runs 2-D {node.op_type} only (node "
                f"{node.name or node.output[0]!r}): pip install onnx2torch for other ranks"
            )
        attrs.pop("auto_pad", None)  # NOTSET or VALID: the explicit pads (or none) say it all
        if node.op_type == "Clip":
            for name, key in zip(inputs[1:], ("min", "max")):
                if name and name not in self.constants:
                    raise HarnessError(
                        f"Clip {node.name!r} has a computed bound {name!r}: the interpreter needs "
                        f"constant bounds (pip install onnx2torch)"
                    )
                if name:
                    attrs[key] = float(self.constants[name])
            inputs = inputs[:1]
        return node.op_type, inputs, node.output[0], attrs

    def to(
        self, *args, **kwargs
    ):  # floating constants go with the module; integer ones (shapes) stay on the CPU
        self.constants = {
            k: v.to(*args, **kwargs) if v.is_floating_point() else v
            for k, v in self.constants.items()
        }
        return super().to(*args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = dict(self.constants)
        values[self.input_names[0]] = x
        for node, (op, inputs, output, attrs) in zip(self.names, self.nodes):
            args = [values[name] if name else None for name in inputs]
            with torch.profiler.record_function(node) if self.record else contextlib.nullcontext():
                values[output] = OPS[op](*args, **attrs)
        return values[self.output_names[0]]
