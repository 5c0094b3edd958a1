"""Loading and saving ONNX files safely: clear errors for missing, corrupt or unsafe files; atomic writes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Dict, List, Union

import onnx
from onnx import external_data_helper

from harness.errors import HarnessError

PathLike = Union[str, "os.PathLike[str]"]
Dim = Union[int, str, None]  # a fixed size, a named dynamic dimension, or an unnamed one


def input_shapes(path: PathLike) -> Dict[str, List[Dim]]:
    """Graph input name -> dims (int, or the dim's name / None when dynamic), initializers excluded."""
    model = onnx.load(str(path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    return {value.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                         for d in value.type.tensor_type.shape.dim]
            for value in model.graph.input if value.name not in initializers}


def check_external_data(model: onnx.ModelProto, base_dir: Path) -> None:
    """Refuse external-data references that point outside the model's own folder (path traversal) or are missing."""
    base = base_dir.resolve()
    for tensor in external_data_helper._get_all_tensors(model):
        if not external_data_helper.uses_external_data(tensor):
            continue
        info = external_data_helper.ExternalDataInfo(tensor)
        target = (base / info.location).resolve()
        if os.path.isabs(info.location) or (target != base and base not in target.parents):
            raise HarnessError(f"tensor {tensor.name!r} keeps its data at {info.location!r}, outside the model's "
                               f"folder {base}: refusing to read it (move the data file beside the model)")
        if not target.is_file():
            raise HarnessError(f"tensor {tensor.name!r} keeps its data in {target}, which does not exist")


def load_model(path: PathLike, infer_shapes: bool = True) -> onnx.ModelProto:
    """Load an ONNX file, with its external data, checked by ``onnx.checker`` and shape-inferred."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"ONNX file {path} does not exist")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several types for garbage input
        raise HarnessError(f"{path} is not a valid ONNX file ({type(exc).__name__}); export it again") from None
    if not model.graph.node:
        raise HarnessError(f"{path} holds no graph nodes: is it an ONNX model?")
    check_external_data(model, path.parent)
    try:
        external_data_helper.load_external_data_for_model(model, str(path.parent))
        onnx.checker.check_model(model)
        if infer_shapes:
            model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HarnessError(f"{path} is not a valid ONNX model: {first}") from None
    return model


def _temporary_beside(path: Path) -> str:
    """A new temporary file in ``path``'s folder, with the permissions a plain ``open`` would give it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


def save_model(model: onnx.ModelProto, path: PathLike) -> Path:
    """Write a model atomically (a temporary file in the same folder, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_beside(path)
    try:
        onnx.save(model, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_text_atomic(path: PathLike, text: str) -> Path:
    """Write a text file atomically, so that a failure never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_beside(path)
    try:
        with open(tmp, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
