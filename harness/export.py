"""Model sources (zoo name, ``package.module:factory``, ``.onnx`` file) and torch -> ONNX export.

Exports use static shapes and opset 17, then pass ``onnx.checker`` and strict shape inference, and
are written with the lowest IR version that holds opset 17 (IR 8), which JetPack's ONNX Runtime and
TensorRT 8.5 read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import io
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import onnx

from harness.errors import HarnessError, first_line, shown
from harness.onnx_io import load_model, parse_shape, save_model, with_lowest_ir
from harness.outputs import quiet_native

OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "output"


@dataclasses.dataclass
class ModelSource:
    """Where a model comes from: a zoo variant, a user factory, or an ONNX file."""

    kind: str  # "zoo" | "factory" | "onnx"
    name: str  # display name (zoo model, factory reference, file stem)
    variant: str = "baseline"
    reference: str = ""  # factory "pkg.mod:fn" or ONNX path
    input_shape: Optional[Tuple[int, ...]] = None  # without batch, for torch sources
    module: Any = None  # a factory's module, once built and checked (see ``check_factory``)


def _torch():
    """torch, or a clear error saying how to get it (device-side installs do without it)."""
    try:
        import torch
    except ImportError:
        raise HarnessError(
            "exporting from PyTorch needs torch: pip install 'harness[torch]' "
            "(or pass an .onnx file)"
        ) from None
    return torch


def resolve_source(model: str, input_shape: Optional[str] = None) -> ModelSource:
    """Interpret a ``--model`` argument.

    An existing or ``.onnx`` path, a ``package.module:factory`` or ``path/to/file.py:factory``,
    a zoo name, or ``zoo:variant`` (a zoo model's compressed variant).
    """
    if (
        model.endswith(".onnx")
        or Path(model).suffix == ".onnx"
        or ("/" in model and ":" not in model)
    ):
        return ModelSource("onnx", Path(model).stem, reference=model)
    zoo_name, colon, variant = model.partition(":")
    if colon and "/" not in model and not zoo_name.endswith(".py"):
        _torch()  # the zoo is built with torch
        from harness.zoo import ZOO, variant_spec

        if zoo_name in ZOO:
            variant_spec(zoo_name, variant)  # an unknown variant names the known ones
            return ModelSource("zoo", zoo_name, variant, input_shape=ZOO[zoo_name].input_shape)
    if ":" in model:
        if not input_shape:
            raise HarnessError(
                f"--model {model} is a factory: also give --input-shape, e.g. --input-shape 3x32x32"
            )
        return ModelSource("factory", model, reference=model, input_shape=parse_shape(input_shape))
    _torch()  # the zoo is built with torch
    from harness.zoo import ZOO

    if model not in ZOO:
        raise HarnessError(
            f"unknown model {shown(model)}; zoo models: {', '.join(ZOO)} "
            f"(or pass path/to/model.onnx or package.module:factory)"
        )
    return ModelSource("zoo", model, input_shape=ZOO[model].input_shape)


def with_input_shape(source: ModelSource, input_shape: Optional[str]) -> ModelSource:
    """``source`` at ``--input-shape`` (without batch): applied to a zoo model (a shape it cannot
    take fails when exported), already applied to a factory, refused for an ONNX file."""
    if not input_shape or source.kind == "factory":
        return source
    if source.kind == "onnx":
        raise HarnessError(
            "--input-shape applies to zoo models and factories; an ONNX file keeps its own "
            "shapes (bind its dynamic dims with harness fold --input-shape)"
        )
    return dataclasses.replace(source, input_shape=parse_shape(input_shape))


def load_factory(reference: str):
    """Import ``package.module:factory`` (or ``path/to/file.py:factory``) and call it; must return
    a ``torch.nn.Module``."""
    torch = _torch()

    module_name, _, attr = reference.rpartition(":")
    if not module_name or not attr:
        raise HarnessError(f"factory {reference!r} must look like package.module:function")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # let users name modules in the current folder
    try:
        module = (
            _module_from_file(Path(module_name))
            if module_name.endswith(".py")
            else importlib.import_module(module_name)
        )
    except (HarnessError, KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # user code: GeneratorExit or its own BaseException too
        raise HarnessError(
            f"cannot import {shown(module_name)} for factory {reference}: {first_line(exc)}"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise HarnessError(f"{module_name} has no callable {attr!r}")
    try:
        built = factory()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        raise HarnessError(
            f"factory {reference} raised {type(exc).__name__}: {first_line(exc)}"
        ) from None
    if not isinstance(built, torch.nn.Module):
        raise HarnessError(
            f"factory {reference} returned {type(built).__name__}, expected a torch.nn.Module"
        )
    return built.eval()


def _module_from_file(path: Path):
    """The Python file ``path`` imported as a module of its own (a name derived from its path, so
    that two files named models.py stay two); its folder is importable while it loads."""
    import importlib.util

    if not path.is_file():
        raise HarnessError(f"factory file {path} does not exist")
    resolved = path.resolve()
    name = "harness_user_" + "".join(c if c.isalnum() else "_" for c in str(resolved))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise HarnessError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(resolved.parent))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    finally:
        sys.path.remove(str(resolved.parent))
    return module


def check_runs(module, input_shape: Tuple[int, ...], batch: int = 1):
    """Run the module once on a random input of the shape; a clear error if the shape cannot run."""
    torch = _torch()

    try:
        example = torch.randn(batch, *input_shape)  # a shape too large to allocate fails here
        with torch.no_grad():
            module(example)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        raise HarnessError(
            f"the model cannot run on input shape {(batch,) + tuple(input_shape)}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from None
    return example


def check_factory(source: ModelSource, batch: int = 1) -> ModelSource:
    """Build a factory source's module and run it once, so that bad input fails before any work."""
    module = load_factory(source.reference)
    check_runs(module, source.input_shape or (), batch)
    return dataclasses.replace(source, module=module)


def torchscript_exporter(export: Any) -> Dict[str, bool]:
    """The keyword that selects the TorchScript exporter: ``dynamo=False`` where ``export`` takes
    it (torch >= 2.5; the default from 2.9 is the dynamo exporter), nothing before (torch 2.0-2.4,
    JetPack 5.1's Python 3.8 tops out at 2.4.1: TorchScript is the only ``export`` there)."""
    return {"dynamo": False} if "dynamo" in inspect.signature(export).parameters else {}


def export_module(
    module, input_shape: Tuple[int, ...], path: Path, batch: int = 1
) -> onnx.ModelProto:
    """Export an eval-mode module to ONNX at ``path`` (static shapes), checked, shapes inferred."""
    torch = _torch()

    example = check_runs(module, input_shape, batch)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), quiet_native(
            1, 2
        ):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                buffer,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                do_constant_folding=True,
                **torchscript_exporter(torch.onnx.export),
            )
        model = onnx.load_from_string(buffer.getvalue())
        onnx.checker.check_model(model)
        model = with_lowest_ir(onnx.shape_inference.infer_shapes(model, strict_mode=True))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # an op without an ONNX export, an output that is no tensor
        raise HarnessError(
            f"cannot export the model to ONNX (opset {OPSET}): {type(exc).__name__}: "
            f"{first_line(exc)}"
        ) from None
    save_model(model, path)
    return model


def materialize(source: ModelSource, path: Path, batch: int = 1) -> onnx.ModelProto:
    """Produce the ONNX file for a source at ``path``.

    Torch sources are exported; ONNX files are checked and copied.
    """
    if source.kind == "onnx":
        model = load_model(source.reference)
        save_model(model, path)
        return model
    if source.kind == "factory":
        module = source.module if source.module is not None else load_factory(source.reference)
    else:
        from harness.zoo import build_model

        module, _ = build_model(source.name, source.variant)
    return export_module(module, source.input_shape or (), path, batch)
