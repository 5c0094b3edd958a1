"""Inference backends behind one small interface.

Heavy imports happen only when a backend is chosen.
"""

from __future__ import annotations

import importlib
from typing import Dict, Type

from harness.backends.base import LATENCY, Runner
from harness.errors import HarnessError

__all__ = ["BACKENDS", "LATENCY", "Runner", "get_runner_class"]

# backend name -> (module, class, how to install what it needs)
BACKENDS: Dict[str, tuple] = {
    "onnxruntime": ("harness.backends.onnxruntime", "OnnxRuntimeRunner", "pip install onnxruntime"),
    "tensorrt": (
        "harness.backends.trt.runner",
        "TensorRTRunner",
        "pip install '.[tensorrt]' on a desktop GPU, or on a Jetson use JetPack's TensorRT "
        "(sudo apt install python3-libnvinfer) and pip install pycuda",
    ),
    "torch": ("harness.backends.torch_backend", "TorchRunner", "pip install torch"),
    "trtexec": (
        "harness.backends.trt.trtexec",
        "TrtexecRunner",
        "trtexec ships with TensorRT: /usr/src/tensorrt/bin/trtexec on a Jetson (JetPack), the "
        "TensorRT tar/deb packages' bin/ on a desktop",
    ),
}


def get_runner_class(name: str) -> Type[Runner]:
    """The Runner class of backend ``name``.

    A clear error says what to install when its library is missing.
    """
    if name not in BACKENDS:
        raise HarnessError(
            f"unknown backend {name!r}; known backends: {', '.join(sorted(BACKENDS))}"
        )
    module_name, class_name, install = BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HarnessError(
            f"backend {name!r} is not available here ({exc}); install it with: {install}"
        ) from None
    return getattr(module, class_name)
