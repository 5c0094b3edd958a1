"""``harness build``: build (and cache) a TensorRT engine for a device profile.

Or explain how trtexec would.
"""

from __future__ import annotations

from pathlib import Path

from harness.commands import (
    add_batch,
    add_command,
    add_device,
    add_input_shapes,
    add_precision,
    input_shapes_arg,
)

DESCRIPTION = """Build a TensorRT engine from an ONNX file with the device profile's settings
(precision, workspace, optimisation level, DLA and GPU fallback, timing cache) into the engine
cache engines/, keyed by the ONNX file's hash, the settings, the TensorRT version and the GPU; a
stale or mismatched engine is rebuilt. --explain prints the equivalent trtexec command line for a
TensorRT version and needs neither TensorRT nor a GPU."""


def register(subparsers) -> None:
    parser = add_command(
        subparsers,
        "build",
        "build a cached TensorRT engine (or --explain the trtexec line)",
        DESCRIPTION,
        "harness build model.onnx --device xavier --precision fp16 --explain",
    )
    parser.add_argument("onnx", type=Path, help="ONNX model")
    add_device(parser, default="xavier")
    add_precision(parser)
    add_batch(parser)
    add_input_shapes(parser, "binds dynamic dims (the bound graph is written into engines/)")
    parser.add_argument(
        "--explain", action="store_true", help="print the equivalent trtexec command and exit"
    )
    parser.add_argument(
        "--tensorrt-version",
        default=None,
        help="TensorRT version to explain for (default: the installed one, else the profile's "
        "expect.tensorrt, else 8.5.2 on a Jetson as on JetPack 5.1, 10.13 on other GPUs)",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from harness.onnx_io import load_model
    from harness.profiles import load_profile

    profile = load_profile(args.device)
    precision = args.precision or profile.precisions[0]
    batch = args.batch or profile.batch_sizes[0]
    model = load_model(args.onnx)  # clear errors for a missing or corrupt file before anything
    if profile.backend not in ("tensorrt", "trtexec"):
        from harness.errors import HarnessError

        raise HarnessError(
            f"profile {profile.name} runs on {profile.backend}, which builds no "
            f"engine: build is for TensorRT profiles (e.g. --device xavier); "
            f"`harness time` runs this one as it is"
        )
    from harness.backends.base import resolve_batch
    from harness.measure import open_runner

    onnx_path = _bound(args.onnx, model, input_shapes_arg(args))
    batch = resolve_batch(onnx_path, batch)  # a fixed batch must match, as `time` requires
    if args.explain:
        print(explain(onnx_path, profile, precision, batch, args.tensorrt_version))
        return 0
    # HarnessError naming what to install when TensorRT is missing
    with open_runner(onnx_path, profile, precision, batch, backend="tensorrt") as runner:
        info = runner.describe()
        state = f"built ({info['rebuilt']})" if info.get("rebuilt") else "cached, reused"
        print(
            f"engine {info['engine']} for {profile.name} ({precision}, batch {batch}, TensorRT "
            f"{info['version']}, {info['gpu']}): {state}"
        )
        for note in info["plan"]["notes"]:
            print(f"note: {note}")
    return 0


def _bound(path: Path, model, shapes) -> Path:
    """``path``, or a copy in engines/ with its dynamic input dims bound to ``shapes``."""
    from harness.backends.trt.cache import ENGINE_DIR
    from harness.onnx_io import bind_shapes, data_inputs, save_model

    bound, changed = bind_shapes(model, shapes) if shapes else (model, [])
    if not changed:
        return path
    dims = "_".join(
        "x".join(str(d.dim_value) for d in v.type.tensor_type.shape.dim) for v in data_inputs(bound)
    )
    target = save_model(bound, ENGINE_DIR / f"{path.stem}-{dims}.onnx")
    print(f"bound {', '.join(changed)}: {target}")
    return target


def explain(onnx_path: Path, profile, precision: str, batch: int, version=None) -> str:
    """The trtexec line equivalent to ``harness build`` + ``harness time`` with this profile.

    Preceded by comment lines that give the settings in force.
    """
    import shlex

    from harness.backends.trt.cache import ENGINE_DIR, BuildSettings, file_sha256
    from harness.backends.trt.trtexec import effective_settings, trtexec_command
    from harness.backends.trt.versions import checked_version
    from harness.onnx_io import input_shapes

    version = checked_version(
        version
        or _installed_tensorrt()
        or profile.expect.tensorrt
        or ("8.5.2" if profile.kind == "jetson" else "10.13")
    )
    capability = (profile.expect.compute_capability or "").replace(".", "")
    engines = Path(ENGINE_DIR.name)  # relative, as a user would type it from the checkout
    timing_cache = engines / f"timing-{version}-sm{capability or 'XX'}.cache"
    # one engine per file content, precision, batch and DLA core, as the cache keys them
    digest = file_sha256(Path(onnx_path))[:8]
    dla = BuildSettings.from_profile(profile, precision, batch).dla_core
    stem = f"{onnx_path.stem}-{digest}-{precision}-b{batch}" + (
        f"-dla{dla}" if dla is not None else ""
    )
    cmd = trtexec_command(
        onnx_path,
        profile,
        precision,
        batch,
        version,
        engine_path=engines / f"{stem}.engine",
        times_path=Path(f"{stem}-times.json"),
        input_shapes=input_shapes(onnx_path),
        timing_cache=timing_cache,
    )
    settings = effective_settings(cmd, version)
    lines = [
        f"# TensorRT {version}, device {profile.name}, {precision}, batch {batch}; measured: "
        + ", ".join(f"{k.replace('_', ' ')} {'on' if v else 'off'}" for k, v in settings.items())
    ]
    if precision == "int8":
        lines.append(
            "# without --calib trtexec uses placeholder INT8 scales: latency is representative, "
            "accuracy is not"
        )
    if dla is not None:
        lines.append(
            "# DLA: layers it cannot run fall back to the GPU (--allowGPUFallback); "
            "check the build log"
        )
    lines.append(" ".join(shlex.quote(part) for part in cmd))
    return "\n".join(lines)


def _installed_tensorrt():
    from importlib import metadata

    for name in ("tensorrt", "tensorrt-cu12", "tensorrt_libs"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None
