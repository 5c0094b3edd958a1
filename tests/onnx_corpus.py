"""The ONNX models the onnx wheel ships under ``onnx/backend/test/data/`` (a corpus nobody in this
project wrote), with the inputs and reference outputs stored beside them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List

import numpy as np
import onnx
from onnx import numpy_helper

from harness.onnx_io import graph_inputs

DATA = Path(onnx.__file__).resolve().parent / "backend" / "test" / "data"
GROUPS = ("light", "pytorch-converted", "pytorch-operator", "simple")


@dataclasses.dataclass
class CorpusModel:
    """One corpus model: its file and, where shipped, the input and reference output files."""

    group: str
    name: str
    path: Path
    inputs: List[Path]
    outputs: List[Path]

    @property
    def id(self) -> str:
        return f"{self.group}/{self.name}"

    def feeds(self, model: onnx.ModelProto) -> dict:
        """Inputs by graph-input name: the stored ones, or for ``light`` models what onnx's backend
        test feeds them (``arange(n) / n`` in the input's shape, the input their reference outputs
        were made with)."""
        inputs = graph_inputs(model)
        if self.inputs:
            return {v.name: _read(p) for v, p in zip(inputs, self.inputs)}
        feeds = {}
        for value in inputs:
            shape = tuple(d.dim_value or 1 for d in value.type.tensor_type.shape.dim)
            n = int(np.prod(shape))
            feeds[value.name] = (np.arange(n).reshape(shape) / n).astype(np.float32)
        return feeds

    def references(self) -> List[np.ndarray]:
        return [_read(p) for p in self.outputs]


def _read(path: Path) -> np.ndarray:
    tensor = onnx.TensorProto()
    tensor.ParseFromString(path.read_bytes())
    return numpy_helper.to_array(tensor)


def corpus() -> List[CorpusModel]:
    """Every model of the corpus, light models first, then the others by group and name."""
    found = []
    for path in sorted((DATA / "light").glob("*.onnx")):
        outputs = sorted(path.parent.glob(f"{path.stem}_output_*.pb"))
        found.append(CorpusModel("light", path.stem, path, [], outputs))
    for group in GROUPS[1:]:
        for folder in sorted(p for p in (DATA / group).iterdir() if (p / "model.onnx").is_file()):
            data = folder / "test_data_set_0"
            found.append(
                CorpusModel(
                    group,
                    folder.name,
                    folder / "model.onnx",
                    sorted(data.glob("input_*.pb"), key=_index),
                    sorted(data.glob("output_*.pb"), key=_index),
                )
            )
    return found


def _index(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[1])
