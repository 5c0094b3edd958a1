"""The child process of ``harness.memory.cpu_peak_rss``: load one ONNX graph in ONNX Runtime (CPU),
run it until its peak settles, print the peak resident set (bytes) after the imports and after the
runs as JSON.

Run as a script (``python memory_child.py graph.onnx THREADS ITERATIONS``) so that it imports
nothing but numpy and onnxruntime: the figure is this graph's, not the harness's.
Python 3.8 compatible.
"""

import json
import resource
import sys
from typing import Dict, Tuple, Union

# runs in a row that leave the peak where it was: ONNX Runtime's arena and the memory pattern are
# allocated by the first runs, so a peak that held this long is the graph's
SETTLED_RUNS = 3


def max_rss_bytes() -> Tuple[int, str]:
    """This process's peak resident set in bytes and the counter read: ``VmHWM`` of
    /proc/self/status on Linux (Linux carries ``ru_maxrss`` across exec, so a child would report
    its parent's peak), else ``ru_maxrss`` (bytes on macOS)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024, "VmHWM"
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"


def main(onnx_path: str, threads: int, iterations: int) -> Dict[str, Union[int, str]]:
    """Load and run the graph until its peak holds for ``SETTLED_RUNS`` runs in a row (at most
    ``iterations`` runs); the peak before loading it and after running it, and the runs."""
    import numpy as np
    import onnxruntime as ort

    baseline, _ = max_rss_bytes()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {}
    for arg in session.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in arg.shape]
        dtype = np.float16 if arg.type == "tensor(float16)" else np.float32
        feeds[arg.name] = rng.standard_normal(shape).astype(dtype)
    peak, counter, runs, held = baseline, "", 0, 0
    while runs < iterations and held < SETTLED_RUNS:
        session.run(None, feeds)
        runs += 1
        now, counter = max_rss_bytes()
        held = held + 1 if now <= peak else 0
        peak = max(peak, now)
    return {"baseline": baseline, "peak": peak, "counter": counter, "runs": runs}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
