"""``harness build``: build (and cache) a TensorRT engine for a device profile, or explain how trtexec would."""

from __future__ import annotations

from pathlib import Path

from harness.commands import add_command

DESCRIPTION = """Build a TensorRT engine from an ONNX file with the device profile's settings (precision,
workspace, optimisation level, DLA and GPU fallback, timing cache) into the engine cache engines/, keyed by the
ONNX file's hash, the settings, the TensorRT version and the GPU; a stale or mismatched engine is rebuilt.
--explain prints the equivalent trtexec command line for the given TensorRT version and needs no GPU."""


def register(subparsers) -> None:
    parser = add_command(subparsers, "build", "build a cached TensorRT engine (or --explain the trtexec line)",
                         DESCRIPTION, "harness build model.onnx --device xavier --precision fp16 --explain")
    parser.add_argument("onnx", type=Path, help="ONNX model (static shapes)")
    parser.add_argument("--device", default="xavier", help="device profile name or YAML path (default: xavier)")
    parser.add_argument("--precision", default=None, help="fp32, fp16 or int8 (default: the profile's first)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default: the profile's first)")
    parser.add_argument("--explain", action="store_true", help="print the equivalent trtexec command and exit")
    parser.add_argument("--tensorrt-version", default=None,
                        help="TensorRT version to explain for (default: installed, else 8.5 for JetPack 5.1)")
    parser.set_defaults(func=run)


def run(args) -> int:
    import shlex

    from harness.backends.trt_config import trtexec_command
    from harness.onnx_io import load_model
    from harness.profiles import load_profile

    profile = load_profile(args.device)
    precision = args.precision or profile.precisions[0]
    batch = args.batch or profile.batch_sizes[0]
    model = load_model(args.onnx)
    if args.explain:
        version = args.tensorrt_version or _installed_tensorrt() or "8.5.2"
        dims = model.graph.input[0].type.tensor_type.shape.dim
        shape = tuple(d.dim_value for d in dims) if dims else None
        cmd = trtexec_command(args.onnx, profile, precision, batch, version,
                              engine_path=Path("engines") / f"{args.onnx.stem}-{precision}.engine",
                              times_path=Path(f"{args.onnx.stem}-times.json"),
                              input_name=model.graph.input[0].name, input_shape=shape)
        print(f"# TensorRT {version}, device {profile.name}, {precision}, batch {batch}")
        print(" ".join(shlex.quote(part) for part in cmd))
        return 0
    from harness.backends import get_runner_class

    runner_class = get_runner_class("tensorrt")
    with runner_class(args.onnx, profile, precision, batch) as runner:
        print(f"engine {runner.describe()['engine']} ready for {profile.name} ({precision}, batch {batch})")
    return 0


def _installed_tensorrt():
    from importlib import metadata

    for name in ("tensorrt", "tensorrt-cu12", "tensorrt_libs"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None
