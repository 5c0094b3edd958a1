"""TensorRT on NVIDIA devices: version rules (``versions``), the engine cache (``cache``), the Python-API runner
(``runner``, engines built through Polygraphy) and NVIDIA's trtexec binary (``trtexec``).

Only ``runner`` imports TensorRT and CUDA; everything else is pure and runs anywhere (Python 3.8, no torch).
"""
