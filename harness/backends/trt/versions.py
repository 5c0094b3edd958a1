"""Where TensorRT versions differ, in one place: version parsing and the defaults each version applies."""

from __future__ import annotations

import re
from typing import Dict, Tuple


def version_tuple(version: str) -> Tuple[int, ...]:
    """'8.5.2.2' -> (8, 5, 2, 2)."""
    return tuple(int(p) for p in re.findall(r"\d+", version)[:4])


def trtexec_defaults(version: str) -> Dict[str, bool]:
    """trtexec's own defaults for what changes a latency figure, by TensorRT version."""
    new = version_tuple(version) >= (11,)
    return {"cuda_graph": new, "spin_wait": new, "data_transfers": not new}


def build_only_flag(version: str) -> str:
    """trtexec's "build the engine, skip inference" flag: ``--buildOnly`` up to 8.5 (8.6 renamed it),
    ``--skipInference`` from 8.6 (8.5's trtexec fails on it as an unknown option)."""
    return "--buildOnly" if version_tuple(version) < (8, 6) else "--skipInference"
