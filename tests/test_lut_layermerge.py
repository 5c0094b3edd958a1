"""The layermerge and efficientdc layouts against the papers' own enumerations and readers.

The recorded data (tests/data/layermerge_tables.json) come from snu-mllab/LayerMerge at the
commit it names: LayerMerge's span and row enumeration run on its own ResNet and MobileNetV2
classes, and the (st, end) keys of EfficientDC's committed MobileNetV2-1.0 table.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from harness.cli import main
from harness.cost.lut import (
    Entry,
    Span,
    depth_network,
    depth_spans,
    layout_spans,
    optimal_rows,
    pruning_options,
    read_table,
    table_rows,
    write_layout,
)
from harness.errors import HarnessError
from harness.export import export_module
from harness.geometry import ConvGeometry

RECORDED = json.loads((Path(__file__).parent / "data" / "layermerge_tables.json").read_text())


class TinyResNet(nn.Module):
    """Stem, two basic blocks (the second strided, with a 1x1 downsample), a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.a1, self.a2 = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.b1 = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.b2 = nn.Conv2d(8, 8, 3, padding=1)
        self.down = nn.Conv2d(4, 8, 1, stride=2)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.a2(torch.relu(self.a1(x))))
        x = torch.relu(self.down(x) + self.b2(torch.relu(self.b1(x))))
        return self.fc(x.mean((2, 3)))


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.onnx"
    export_module(TinyResNet().eval(), (3, 8, 8), path)
    return path


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """The zoo's MobileNetV2-1.0, ResNet-34 and ResNet-50 at 3x32x32 (the span set and rows do
    not depend on the resolution), exported once."""
    from harness.zoo import build_model

    folder = tmp_path_factory.mktemp("zoo")
    graphs = {}
    for name in ("mobilenetv2", "resnet34", "resnet50"):
        module, _ = build_model(name)
        graphs[name] = export_module(module, (3, 32, 32), folder / f"{name}.onnx")
    return graphs


def _rows(spans):
    return [[s.st, s.end, s.kernel, s.stride, s.is_dw] for s in spans]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,spans,rows", [("mobilenetv2", 171, 391), ("resnet34", 62, 150), ("resnet50", 107, 192)]
)
def test_layermerge_rows_equal_their_enumeration(zoo, name, spans, rows):
    got = layout_spans(depth_network(zoo[name]), "layermerge")
    assert len({(s.st, s.end) for s in got}) == spans and len(got) == rows
    assert _rows(got) == RECORDED["layermerge"][name]  # row for row, in their order


@pytest.mark.slow
def test_efficientdc_spans_equal_their_committed_table(zoo):
    got = layout_spans(depth_network(zoo["mobilenetv2"]), "efficientdc")
    assert [[s.st, s.end] for s in got] == RECORDED["efficientdc"]["mobilenetv2"]
    full = {(r[0], r[1]): r for r in RECORDED["layermerge"]["mobilenetv2"]}
    for s in got:  # the full merge: LayerMerge's widest kernel of the span
        widest = max(r[2] for r in RECORDED["layermerge"]["mobilenetv2"] if r[:2] == [s.st, s.end])
        assert s.kernel == widest and s.stride == full[(s.st, s.end)][3]


@pytest.mark.slow
def test_numbering_leaves_out_stem_head_and_downsample(zoo):
    mbv2, r34 = depth_network(zoo["mobilenetv2"]), depth_network(zoo["resnet34"])
    assert mbv2.positions == 50 and len(mbv2.left_out) == 2  # stem and the last 1x1
    assert mbv2.left_out[1].geometry.out_channels == 1280
    assert r34.positions == 32 and len(r34.left_out) == 4  # stem and 3 downsample convs
    assert all(c.geometry.kernel == (1, 1) for c in r34.left_out[1:])
    assert sorted(r34.skips.items()) == [(i, i + 2) for i in range(0, 32, 2)]


def test_tiny_network_numbering_and_spans(tiny):
    import onnx

    net = depth_network(onnx.load(tiny))
    assert net.positions == 4 and net.skips == {0: 2, 2: 4}
    assert [c.geometry.out_channels for c in net.left_out] == [4, 8]  # stem, downsample
    assert 3 in net.breaks  # the strided conv b1 (position 3) is followed by a 3x3
    # (2, 4): the whole strided block cannot merge across the stride break
    assert depth_spans(net) == [(0, 1), (0, 2), (1, 2), (2, 3), (3, 4)]


def _geometry(c_in, c_out, k, stride=1, groups=1):
    return ConvGeometry.centred((1, c_in, 8, 8), c_out, k, stride, groups, (0, 0))


def test_pruning_options_follow_the_definition():
    """Keep, per (kernel, depthwise) class, from its irreducible convs to all of them; the
    merged kernel is 1 + sum(k - 1) over the convs kept; distinct options in product order."""
    convs = [
        _geometry(4, 4, 3),
        _geometry(4, 4, 1),
        _geometry(4, 8, 3),
        _geometry(8, 8, 3, groups=8),
    ]
    classes = {}
    for g in convs:
        counts = classes.setdefault((g.kernel[0], g.depthwise), [0, 0])
        counts[0] += g.in_channels != g.out_channels or g.stride > 1
        counts[1] += 1
    expected = []
    for kept in itertools.product(*(range(lo, hi + 1) for lo, hi in classes.values())):
        if sum(kept):
            kernel = 1 + sum(n * (k - 1) for (k, _), n in zip(classes, kept))
            option = (kernel, all(dw for (_, dw), n in zip(classes, kept) if n))
            expected += [option] if option not in expected else []
    assert pruning_options(convs) == expected
    assert (3, False) in expected and (7, False) in expected  # the 3x3 (4->8) always stays
    assert pruning_options([_geometry(8, 8, 3, groups=8)]) == [(3, True)]
    assert pruning_options([_geometry(4, 4, 3), _geometry(4, 4, 3)]) == [(3, False), (5, False)]


def test_optimal_rows_are_the_fastest_split():
    random.seed(3)
    spans = [(st, end) for st in range(5) for end in range(st + 1, 6) if (st, end) != (1, 4)]
    rows = [
        {"id": i, "st": st, "end": end, "time": random.uniform(0.1, 2.0), "stdev": 0.01}
        for i, (st, end) in enumerate(spans)
    ]
    times = {(r["st"], r["end"]): r["time"] for r in rows}

    def fastest(st, end):
        best = times.get((st, end), float("inf"))
        for j in range(st + 1, end):
            if (st, j) in times:
                best = min(best, fastest(st, j) + fastest(j, end))
        return best

    for row in optimal_rows(rows):
        st, end = row["st"], row["end"]
        assert row["time"] == pytest.approx(fastest(st, end), abs=1e-6)
        cut = [int(b) for b in row["breaks"].split(",")]
        assert cut[0] == st and cut[-1] == end
        parts = list(zip(cut, cut[1:]))
        assert all(p in times for p in parts)
        assert sum(times[p] for p in parts) == pytest.approx(row["time"], abs=1e-6)


def _their_reader(file_path):
    """LayerMerge's ``read_csv_and_create_dict`` (layer_merge/kim24layermerge/generate_tables.py,
    snu-mllab/LayerMerge@3dcddb6), re-implemented statement by statement."""
    pd = pytest.importorskip("pandas")
    df = pd.read_csv(file_path)
    result_dict = {}
    for _, row in df.iterrows():
        key = f"st{row['st']}_end{row['end']}"
        childkey = f"ker{row['ker']}_str{row['str']}_is_dw_{row['is_dw']}"
        if key not in result_dict:
            result_dict[key] = dict()
        if "importance" in row:
            result_dict[key][childkey] = (row["importance"], row["conv_comb"])
        elif "time" in row:
            result_dict[key][childkey] = row["time"]
        else:
            raise NotImplementedError()
    return result_dict, df.dtypes


def test_layermerge_table_reads_into_integer_keys(tmp_path):
    spans = [
        Span(0, 1, (2, 4, 8, 8), 4, 3, 1, True),
        Span(0, 2, (2, 4, 8, 8), 8, 1, 1, False),
        Span(0, 2, (2, 4, 8, 8), 8, 3, 1, False),
        Span(1, 2, (2, 4, 8, 8), 8, 1, 2, False),
    ]
    entries = {s.key: Entry(0.125 * (i + 1), 0.01, 10) for i, s in enumerate(spans)}
    rows = table_rows(spans, entries, "layermerge")
    (path,) = write_layout(rows, tmp_path / "t.csv", "layermerge")
    table, dtypes = _their_reader(path)
    assert {c: str(t) for c, t in dtypes.items()} == {
        "id": "int64",
        "st": "int64",
        "end": "int64",
        "ker": "int64",
        "str": "int64",
        "is_dw": "bool",
        "time": "float64",
        "stdev": "float64",
    }
    assert table == {
        "st0_end1": {"ker3_str1_is_dw_True": entries[spans[0].key].time},
        "st0_end2": {
            "ker1_str1_is_dw_False": entries[spans[1].key].time,
            "ker3_str1_is_dw_False": entries[spans[2].key].time,
        },
        "st1_end2": {"ker1_str2_is_dw_False": entries[spans[3].key].time},
    }
    # the harness long layout's 0/1 is what their reader turns into st0.0_end1.0
    harness_rows = table_rows(spans, entries)
    (long_path,) = write_layout(harness_rows, tmp_path / "h.csv", "layermerge")
    assert "st0.0_end1.0" in _their_reader(long_path)[0]


def test_lut_command_writes_the_layouts(tiny, tmp_path, fast_profile, capsys):
    table = tmp_path / "time_tiny.csv"
    argv = ["lut", str(tiny), "--device", str(fast_profile), "-o", str(table)]
    assert main(argv + ["--layout", "layermerge", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "layermerge layout: 5 spans in" in out and "mean" in out and "batch of 4" in out
    lines = table.read_text().splitlines()
    assert lines[0] == "id,st,end,ker,str,is_dw,time,stdev"
    assert {line.split(",")[5] for line in lines[1:]} <= {"True", "False"}
    meta = json.loads(table.with_suffix(".json").read_text())
    assert (meta["layout"], meta["batch"], meta["statistic"]) == ("layermerge", 4, "mean")
    assert meta["spans"] == 5 and meta["rows"] == len(lines) - 1
    assert not table.with_name("time_tiny_long.csv").exists()

    assert main(argv + ["--layout", "efficientdc", "--batch", "2", "--statistic", "median"]) == 0
    assert table.read_text().splitlines()[0] == "id,st,end,time,stdev"
    opt = table.with_name("opt_time_tiny.csv").read_text().splitlines()
    assert opt[0] == "id,st,end,time,stdev,breaks" and len(opt) == 6
    assert json.loads(table.with_suffix(".json").read_text())["statistic"] == "median"
    capsys.readouterr()
    assert main(argv + ["--layout", "layermerge", "--max-span", "2"]) == 2
    assert "--max-span applies to the harness layout" in capsys.readouterr().err


def test_layermerge_layout_needs_residual_blocks(tmp_path):
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    model = export_module(plain.eval(), (3, 8, 8), tmp_path / "plain.onnx")
    with pytest.raises(HarnessError, match="networks of residual blocks"):
        depth_network(model)


def test_harness_readers_refuse_the_papers_layouts(tmp_path):
    spans = [Span(0, 1, (1, 4, 8, 8), 4, 3, 1, False), Span(0, 1, (1, 4, 8, 8), 4, 1, 1, False)]
    entries = {s.key: Entry(0.5, 0.01, 10) for s in spans}
    rows = table_rows(spans, entries, "layermerge")
    (table,) = write_layout(rows, tmp_path / "t.csv", "layermerge")
    with pytest.raises(HarnessError, match="layermerge-layout table"):
        read_table(table)  # by its True/False is_dw, without a sidecar
    raw, _ = write_layout(table_rows(spans[:1], entries), tmp_path / "e.csv", "efficientdc")
    raw.with_suffix(".json").write_text(json.dumps({"layout": "efficientdc"}))
    with pytest.raises(HarnessError, match="efficientdc-layout table"):
        read_table(raw)  # its columns are the harness short layout's: the sidecar tells
    raw.with_suffix(".json").unlink()
    with pytest.raises(HarnessError, match="efficientdc-layout table"):
        read_table(raw.with_name("opt_e.csv"))  # its breaks tell


class TwoPaths(nn.Module):
    """A residual block, then two convs concatenated: not a chain of residual blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.a = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.l, self.r = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.a(x))
        return torch.cat([self.l(x), self.r(x)], 1)


def test_a_network_the_numbering_cannot_cover_is_refused(tmp_path):
    model = export_module(TwoPaths().eval(), (3, 8, 8), tmp_path / "two.onnx")
    with pytest.raises(HarnessError, match="main path stops at .* with 2 convs after it"):
        depth_network(model)
