"""Suite files: a user's own models, each a baseline and its variants from any source.

::

    input_shape: 3x32x32          # default for factories and dynamic ONNX inputs
    models:
      - name: rn18c
        baseline: models/rn18c.py:baseline     # zoo name, zoo:variant, pkg.module:factory,
        variants:                               # path/to/file.py:factory, or a .onnx file
          noact-1x1: models/rn18c.py:noact_1x1
          pruned: exported/rn18c-pruned.onnx
      - name: resnet56
        baseline: resnet56
        variants: {dc-1x1: resnet56:dc-1x1}

Paths are relative to the file. A model may give its own ``input_shape`` and ``shapes``
(``images:1x3x320x320``, whole shapes per input of its ONNX files). Every problem is one line
naming the file and the key, before any work.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Dict, List, Optional

from harness.bench import SuiteModel, check_suite, resolve_model
from harness.errors import HarnessError, shown
from harness.export import ModelSource
from harness.onnx_io import InputShapes
from harness.profiles import build_validated, read_yaml_mapping

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")  # a model or variant name (file names too)


@dataclasses.dataclass
class SuiteEntry:
    """One model as the file writes it."""

    name: str  # the model's name in every table (letters, digits, '.', '_', '+', '-')
    baseline: str  # the source every variant is paired against
    variants: Dict[str, str] = dataclasses.field(default_factory=dict)  # name -> source
    input_shape: Optional[str] = None  # one sample without the batch: 3x32x32 (default: the file's)
    shapes: Optional[str] = None  # whole shapes per ONNX input: images:1x3x320x320,...


@dataclasses.dataclass
class SuiteDocument:
    """The file as written."""

    models: List[SuiteEntry]  # each a baseline and its variants, timed together
    input_shape: Optional[str] = None  # default for factories and dynamic ONNX inputs


def _checked_name(name: str, where: str) -> str:
    if not NAME.match(name):
        raise HarnessError(
            f"{where}: {name!r} is not a usable name (letters, digits, '.', '_', '+', '-')"
        )
    return name


def _variants(entry: SuiteEntry, where: str) -> Dict[str, str]:
    if not isinstance(entry.variants, dict):
        raise HarnessError(f"{where}.variants: expected a mapping of name: source")
    for name, source in entry.variants.items():
        if not isinstance(name, str) or not isinstance(source, str) or not source.strip():
            raise HarnessError(
                f"{where}.variants: expected name: source (both strings), got "
                f"{shown(name, 40)}: {shown(source, 40)}"
            )
        _checked_name(name, f"{where}.variants")
        if name == "baseline":
            raise HarnessError(f"{where}.variants.baseline: the baseline is the model's baseline")
    return entry.variants


def _model(entry: SuiteEntry, default_shape: Optional[str], base: Path, where: str, batch: int):
    shape = entry.input_shape or default_shape
    try:
        shapes = InputShapes.parse(shape, entry.shapes)
        graphs: Dict[str, ModelSource] = {}
        for variant, text in [("baseline", entry.baseline)] + list(_variants(entry, where).items()):
            key = "baseline" if variant == "baseline" else f"variants.{variant}"
            try:
                graphs[variant] = resolve_model(text, shape, batch, base)
            except HarnessError as exc:
                raise HarnessError(f"{where}.{key}: {exc}") from None
    except HarnessError as exc:
        if str(exc).startswith(where):
            raise
        raise HarnessError(f"{where}: {exc}") from None
    return SuiteModel(_checked_name(entry.name, f"{where}.name"), graphs, shapes)


def read_suite(path: Path, batch: int = 1) -> List[SuiteModel]:
    """The suite a file describes, every source resolved and checked (factories built and run
    once, ONNX files found); a problem is one line naming the file and the key."""
    path = Path(path)
    data = read_yaml_mapping(path, "suite file")
    document = build_validated(SuiteDocument, data, str(path))
    if not document.models:
        raise HarnessError(f"{path}: models is empty")
    suite = [
        _model(entry, document.input_shape, path.parent, f"{path}.models[{i}]", batch)
        for i, entry in enumerate(document.models)
    ]
    try:
        return check_suite(suite)
    except HarnessError as exc:
        raise HarnessError(f"{path}: models: {exc}") from None
