"""The cost model stage: what a merge costs on a device, and whether ``fold --merge auto`` takes it.

``model`` prices a conv (roofline, calibrated per conv class, or a measured table), ``calibrate``
fits the device's rates from micro-benchmarks, ``lut`` measures latency tables over activation
chains, ``plan`` picks merges under a budget from them, ``arbitrate`` times a plan against none and
all, and ``check`` holds the model's predictions against per-layer measurements where it decides.
"""
