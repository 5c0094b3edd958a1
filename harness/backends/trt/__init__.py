"""TensorRT on NVIDIA devices: version rules (``versions``), the engine cache (``cache``), engine
building through Polygraphy (``build``), the timing runner and its per-layer profile (``runner``),
ONNX preparation for strongly typed TensorRT 11 (``prepare``) and NVIDIA's trtexec binary
(``trtexec``); ``parser_ops``: the ONNX parser's operator support matrix per release (data).

Only ``build`` and ``runner`` import TensorRT and CUDA; the rest runs anywhere (Python 3.8, no
torch).
"""
