"""Fuzzing the loaders a user's files reach: device profiles, bench manifests, results files (and
compare on them), ONNX files (and fold on them), suite files and trtexec's per-layer exports (and
the lint on them). Every input must end in a result or a
HarnessError of one short line: any other exception (what the CLI calls an "internal error") or an
example that runs past its time limit (a hang) fails.

Fast by default (a few dozen examples per loader); the ``slow`` runs draw many more. Every run
draws the same examples unless ``HARNESS_FUZZ_EXPLORE=1`` (conftest.py): fix what an exploring
run finds and add the input to the fault tests.
"""

from __future__ import annotations

import contextlib
import copy
import json
import signal
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import onnx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from harness.cli import main
from harness.compare import compare_results
from harness.errors import HarnessError
from harness.explain import lint
from harness.layer_profile import trt_layer_profile
from harness.onnx_io import load_model
from harness.profiles import PROFILE_DIR, load_profile, load_profile_file
from harness.remote import MANIFEST_VERSION, read_manifest
from harness.results import parse_results
from harness.suites import read_suite
from tests.trt_recordings import LAYERS_85, PROFILE_85, resnet_head

DATA = Path(__file__).resolve().parent / "data"
RECORDED = json.loads((DATA / "results_schema1_lenet5.json").read_text())
PROFILE = yaml.safe_load((PROFILE_DIR / "xavier.yaml").read_text())
EXAMPLES = [pytest.param(30, id="quick"), pytest.param(200, id="many", marks=pytest.mark.slow)]
LIMIT_S = 20  # one example: far beyond any real input's time, short of a hang


class Hang(Exception):
    """An example ran past LIMIT_S."""


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:
        raise Hang(f"no answer after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _answers(call: Callable[[], Any]) -> None:
    """``call`` returns, or refuses with one short line; nothing else, and in time."""
    with _time_limit(LIMIT_S):
        try:
            call()
        except HarnessError as exc:
            text = str(exc)
            assert "\n" not in text.strip() and len(text) < 2000, text[:300]


def _fuzz(strategy: st.SearchStrategy, check: Callable[[Any], None], examples: int) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def run(value: Any) -> None:
        check(value)

    run()


# values of every JSON/YAML kind, the troublesome ones often: huge and negative numbers,
# non-finite floats, long and odd strings, nesting
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**18, max_value=10**400),
    st.sampled_from([0, -1, 1, 2**31, 2**63, -(2**63)]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", "../../x", "-oProxyCommand=x", "a\x00b", "x" * 5000, ".inf", "1e999"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


def _paths(document: Any, prefix=()) -> list:
    """Every (container, key) path into a JSON-like document."""
    found = []
    items = (
        document.items()
        if isinstance(document, dict)
        else enumerate(document)
        if isinstance(document, list)
        else []
    )
    for key, value in items:
        found.append(prefix + (key,))
        found += _paths(value, prefix + (key,))
    return found


@st.composite
def mutated(draw, document: Any, edits: int = 3) -> Any:
    """``document`` with up to ``edits`` values replaced, keys removed or keys added."""
    document = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, edits))):
        paths = _paths(document)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(VALUES)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(VALUES)
    return document


@pytest.mark.parametrize("examples", EXAMPLES)
def test_fuzz_profiles(tmp_path, examples):
    path = tmp_path / "fuzzed.yaml"

    def check(text: bytes) -> None:
        path.write_bytes(text)
        _answers(lambda: load_profile_file(path))

    documents = mutated(PROFILE).map(
        lambda d: yaml.safe_dump(d, allow_unicode=True).encode("utf-8", "surrogatepass")
    )
    raw = st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
        st.sampled_from([b"a: &a [*a]", b"{", b"- - - -", b"name: !!python/object:os.system x"]),
    )
    _fuzz(st.one_of(documents, raw), check, examples)


def _manifest(folder: Path) -> dict:
    onnx.save(_tiny(), str(folder / "m.onnx"))
    graph = {"run_id": "m/baseline", "variant": "baseline", "folded": False, "file": "m.onnx"}
    source = {"kind": "onnx", "name": "m", "reference": "m.onnx", "variant": None}
    return {  # as remote.write_manifest writes it
        "manifest": MANIFEST_VERSION,
        "merge": "auto",
        "verify": True,
        "batch": 1,
        "precision": "fp32",
        "models": [
            {
                "name": "m",
                "variants": {"baseline": source},
                "graphs": [{**graph, "info": {"flops": 10}}],
            }
        ],
    }


@pytest.mark.parametrize("examples", EXAMPLES)
def test_fuzz_bench_manifests(tmp_path, examples):
    profile = load_profile("host")
    path = tmp_path / "manifest.json"
    valid = _manifest(tmp_path)
    read_manifest(_write_json(path, valid), profile, tmp_path / "out")  # the valid one reads

    def check(document: Any) -> None:
        _answers(lambda: read_manifest(_write_json(path, document), profile, tmp_path / "out"))

    _fuzz(mutated(valid, 4), check, examples)


def _write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document, allow_nan=True))
    return path


@pytest.mark.parametrize("examples", EXAMPLES)
def test_fuzz_results_compare_and_report(tmp_path, capsys, examples):
    base = parse_results(RECORDED, "base.json")
    path = tmp_path / "new.json"

    def check(document: Any) -> None:
        def read_and_compare() -> None:
            new = parse_results(document, "new.json")
            compare_results(base, new, 0.05)

        _answers(read_and_compare)
        _write_json(path, document)
        with _time_limit(LIMIT_S):
            code = main(["report", str(path), "-o", str(tmp_path / "report"), "--no-plots"])
        err = capsys.readouterr().err
        assert code in (0, 2) and "internal error" not in err, err

    _fuzz(mutated(RECORDED, 4), check, examples)


def _tiny() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], group=1),
            helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["r"]),
            helper.make_node("Relu", ["r"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
        [numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "w")]
        + [numpy_helper.from_array(rng.random(4).astype(np.float32) + 0.5, n) for n in "sbmv"],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@st.composite
def fuzzed_models(draw) -> bytes:
    """The tiny model with its structure edited (dims, attributes, types, names) or its bytes
    flipped or cut."""
    model = _tiny()
    kinds = ["dims", "attribute", "type", "name", "weight", "opset", "op", "bytes"]
    kind = draw(st.sampled_from(kinds))
    count = st.one_of(st.integers(-3, 70), st.sampled_from([0, 2**31, 2**40, 200000]))
    if kind == "dims":
        dims = model.graph.input[0].type.tensor_type.shape.dim
        index = draw(st.integers(0, 3))
        if draw(st.booleans()):
            dims[index].dim_value = max(draw(count), 0)
        else:
            dims[index].dim_param = draw(st.text(max_size=5))
    elif kind == "attribute":
        node = model.graph.node[0]
        name = draw(st.sampled_from(["group", "pads", "strides", "dilations", "kernel_shape"]))
        del node.attribute[:]
        value = draw(count) if name == "group" else draw(st.lists(count, min_size=1, max_size=5))
        node.attribute.append(helper.make_attribute(name, value))
    elif kind == "type":
        model.graph.input[0].type.tensor_type.elem_type = draw(st.integers(0, 25))
    elif kind == "name":
        node = model.graph.node[draw(st.integers(0, 2))]
        node.input[0] = draw(st.sampled_from(["", "y", "missing", "w"]))
    elif kind == "weight":  # dims that the stored bytes do not fill, or a weight of another rank
        tensor = model.graph.initializer[draw(st.integers(0, 4))]
        del tensor.dims[:]
        tensor.dims.extend(draw(st.lists(st.integers(0, 40), max_size=5)))
    elif kind == "opset":
        model.opset_import[0].version = draw(st.integers(-2, 40))
    elif kind == "op":
        ops = ["Gemm", "MatMul", "ConvTranspose", "MaxPool", "Add", "Reshape", "Pad", "Foo"]
        model.graph.node[draw(st.integers(0, 2))].op_type = draw(st.sampled_from(ops))
    data = model.SerializeToString()
    if kind == "bytes":
        cut = draw(st.integers(0, len(data)))
        flips = draw(st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255))))
        raw = bytearray(data)
        for at, value in flips[:8]:
            raw[at] = value
        data = bytes(raw[: cut if draw(st.booleans()) else len(raw)])
    return data


@pytest.mark.parametrize("examples", EXAMPLES)
def test_fuzz_onnx_loading_and_fold(tmp_path, capsys, examples):
    path = tmp_path / "fuzzed.onnx"

    def check(data: bytes) -> None:
        path.write_bytes(data)
        _answers(lambda: load_model(path))
        with _time_limit(LIMIT_S):
            code = main(["fold", str(path), "-o", str(tmp_path / "out.onnx")])
        err = capsys.readouterr().err
        assert code in (0, 1, 2) and "internal error" not in err, err

    _fuzz(fuzzed_models(), check, examples // 2)


@pytest.mark.parametrize("examples", EXAMPLES)
def test_fuzz_suite_files(tmp_path, examples):
    path = tmp_path / "suite.yaml"
    suite = {
        "input_shape": "3x32x32",
        "models": [{"name": "l", "baseline": "lenet5", "variants": {"fc": "lenet5:dc-fc"}}],
    }

    def check(document: Any) -> None:
        path.write_text(yaml.safe_dump(document, allow_unicode=True))
        _answers(lambda: read_suite(path))

    _fuzz(mutated(suite, 3), check, examples)


@pytest.mark.parametrize("examples", EXAMPLES)
def test_fuzz_trtexec_exports_and_the_lint(examples):
    """NVIDIA's recorded --exportProfile / --exportLayerInfo pair, one of them edited."""
    model, profile = resnet_head(), load_profile("xavier")

    def check(exports: Any) -> None:
        def read_and_lint() -> None:
            layers = trt_layer_profile(*exports, model, "8.5")
            lint(model, layers, profile, "fp16")

        _answers(read_and_lint)

    edited = st.one_of(
        mutated(PROFILE_85, 4).map(lambda times: (times, LAYERS_85)),
        mutated(LAYERS_85, 5).map(lambda info: (PROFILE_85, info)),
    )
    _fuzz(edited, check, examples)
