"""Latency tables (span enumeration, formats, resume) and the planning DP against brute force."""

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
    activation_chains,
    enumerate_spans,
    load_progress,
    measure_spans,
    read_table,
    table_rows,
    write_tables,
)
from harness.cost.plan import plan_chains
from harness.errors import HarnessError
from harness.export import export_module
from tests.conftest import conv_net


class Branchy(nn.Module):
    """conv0 -relu- conv1(s2) - conv2(1x1, depthwise-free) ; then a residual pair conv3, conv4
    (dw) + skip."""

    def __init__(self) -> None:
        super().__init__()
        self.c0 = nn.Conv2d(3, 8, 3, padding=1)
        self.c1 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(8, 16, 1)
        self.c3 = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.c4 = nn.Conv2d(16, 16, 3, padding=1, groups=16)

    def forward(self, x):
        x = self.c2(self.c1(torch.relu(self.c0(x))))
        return x + self.c4(nn.functional.relu6(self.c3(x)))


@pytest.fixture
def branchy(tmp_path: Path):
    return export_module(Branchy().eval(), (3, 16, 16), tmp_path / "b.onnx")


def test_chains_and_spans_have_the_known_answer(branchy):
    chains = activation_chains(branchy)
    assert [[c.index for c in ch.convs] for ch in chains] == [[0, 1, 2], [3, 4]]
    assert (
        chains[0].activations[0] is not None and chains[0].activations[1] is None
    )  # relu, then nothing
    spans = {(s.st, s.end): s for s in enumerate_spans(chains, max_span=3)}
    assert set(spans) == {(0, 0), (1, 1), (2, 2), (0, 1), (1, 2), (0, 2), (3, 3), (4, 4), (3, 4)}
    assert (spans[(0, 1)].kernel, spans[(0, 1)].stride) == (5, 2)
    assert (spans[(0, 2)].kernel, spans[(0, 2)].out_ch) == (5, 16)
    assert spans[(3, 4)].is_dw and spans[(3, 4)].kernel == 5 and not spans[(1, 2)].is_dw
    assert spans[(3, 3)].key == spans[(4, 4)].key  # same shape: timed once
    assert {(s.st, s.end) for s in enumerate_spans(chains, max_span=1)} == {
        (i, i) for i in range(5)
    }


def test_tables_round_trip_and_resume_after_interruption(branchy, tmp_path):
    spans = enumerate_spans(activation_chains(branchy), 3)
    progress = tmp_path / "t.progress.jsonl"
    calls = []

    def measure(span):
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl-C after three measurements
        calls.append(span.key)
        return Entry(time=0.1 * len(calls), stdev=0.01, n=50)

    with pytest.raises(KeyboardInterrupt):
        measure_spans(spans, measure, progress)
    assert len(load_progress(progress)[0]) == 3
    with progress.open("a") as handle:
        handle.write('{"key": "torn')  # a crash mid-write leaves a torn line: ignored
    first_three = list(calls)
    calls.clear()

    def measure_rest(span):
        assert span.key not in first_three  # nothing measured twice
        calls.append(span.key)
        return Entry(time=1.0, stdev=0.1, n=20)

    entries, now = measure_spans(spans, measure_rest, progress)
    unique = len({s.key for s in spans})
    assert now == unique - 3 == len(calls)
    short, long = write_tables(table_rows(spans, entries), tmp_path / "t.csv")
    assert short.read_text().splitlines()[0] == "id,st,end,time,stdev"
    assert long.read_text().splitlines()[0] == "id,st,end,ker,str,is_dw,time,stdev"
    for path in (short, long):
        table = read_table(path)
        assert set(table) == {(s.st, s.end) for s in spans}
        assert table[(3, 3)] == table[(4, 4)]


def test_resume_with_another_context_reuses_nothing(branchy, tmp_path):
    """Issue 16: a run resumed with another profile (threads, device, versions) must measure
    everything again."""
    spans = enumerate_spans(activation_chains(branchy), 2)
    progress = tmp_path / "t.progress.jsonl"
    first = {
        "device": "host",
        "backend": "onnxruntime",
        "backend_settings": {"intra_op_threads": 1},
    }
    entries, now = measure_spans(spans, lambda s: Entry(0.5, 0.01, 30), progress, context=first)
    assert now == len(entries) == len({s.key for s in spans})
    second = dict(first, backend_settings={"intra_op_threads": 2})
    assert load_progress(progress, second) == (
        {},
        now,
    )  # the first context's lines are ignored, and counted
    again, measured = measure_spans(
        spans, lambda s: Entry(0.25, 0.01, 30), progress, context=second
    )
    assert measured == now and {e.time for e in again.values()} == {0.25}
    kept, ignored = load_progress(progress, first)
    assert {e.time for e in kept.values()} == {
        0.5
    } and ignored == now  # neither context sees the other's


def test_read_table_rejects_other_csvs(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(HarnessError, match="missing columns"):
        read_table(tmp_path / "x.csv")


def _brute_force(chains, latency, importance, budget):
    def segmentations(chain):
        n = len(chain)
        for cuts in itertools.product([False, True], repeat=n - 1):
            segs, start = [], 0
            for i, cut in enumerate(cuts):
                if cut:
                    segs.append((chain[start], chain[i]))
                    start = i + 1
            segs.append((chain[start], chain[-1]))
            if all(s in latency and (s in importance or s[0] == s[1]) for s in segs):
                yield segs

    best = None
    for combo in itertools.product(*[list(segmentations(c)) for c in chains]):
        segs = [s for part in combo for s in part]
        ms = sum(latency[s] for s in segs)
        imp = sum(importance.get(s, 0.0) for s in segs)
        if ms <= budget and (best is None or imp > best[0] + 1e-9):
            best = (imp, ms)
    return best


@pytest.mark.parametrize("seed", range(25))
def test_plan_dp_matches_brute_force(seed):
    rng = random.Random(seed)
    chains, start = [], 0
    for _ in range(rng.randint(1, 3)):
        length = rng.randint(1, 4)
        chains.append(list(range(start, start + length)))
        start += length
    latency, importance = {}, {}
    for chain in chains:
        for i, j in itertools.combinations_with_replacement(range(len(chain)), 2):
            seg = (chain[i], chain[j])
            latency[seg] = round(
                rng.uniform(0.2, 1.0) * (1 + 0.3 * (j - i)) / (1 + 0.5 * (j - i)), 3
            )
            if i != j:
                importance[seg] = -round(rng.uniform(0, 1), 3)  # merging costs accuracy
    total = sum(latency[(c, c)] for chain in chains for c in chain)
    budget = round(total * rng.uniform(0.5, 1.1), 3)
    expected = _brute_force(chains, latency, importance, budget)
    plan = plan_chains(chains, latency, importance, budget, resolution=4000)
    if expected is None:
        assert plan is None
    else:
        assert plan is not None and plan.latency_ms <= budget + 1e-9
        assert plan.importance == pytest.approx(expected[0], abs=1e-6)


def test_plan_command_end_to_end(tmp_path, fast_profile, capsys):
    table = tmp_path / "r20.csv"
    assert (
        main(
            ["lut", "resnet20", "--device", str(fast_profile), "--max-span", "2", "-o", str(table)]
        )
        == 0
    )
    meta = json.loads(table.with_suffix(".json").read_text())
    assert (
        meta["spans"] > meta["unique_signatures"]
        and not (tmp_path / "r20.csv.progress.jsonl").exists()
    )
    rows = read_table(table)
    importance = tmp_path / "imp.csv"
    importance.write_text(
        "st,end,importance\n" + "".join(f"{st},{end},-0.01\n" for st, end in rows if end > st)
    )
    singles = sum(ms for (st, end), ms in rows.items() if st == end)
    plan_path = tmp_path / "plan.json"
    argv = [
        "plan",
        "resnet20",
        "--table",
        str(table),
        "--importance",
        str(importance),
        "-o",
        str(plan_path),
    ]
    assert main(argv + ["--budget-ms", str(singles * 1.02)]) == 0
    plan = json.loads(plan_path.read_text())
    assert plan["device"] == "fast"  # the table's, from its JSON sidecar
    long_argv = [a.replace("r20.csv", "r20_long.csv") for a in argv]
    assert main(long_argv + ["--budget-ms", str(singles * 1.02)]) == 0  # the long layout
    assert json.loads(plan_path.read_text())["device"] == "fast"  # finds the same sidecar
    capsys.readouterr()
    assert main(argv + ["--budget-ms", "1", "--device", "host"]) == 2
    assert "was measured on 'fast'" in capsys.readouterr().err
    assert (
        plan["merged_segments"] == [] and plan["predicted_latency_ms"] <= singles * 1.02
    )  # merging costs
    pairs = [(st, end) for st, end in rows if end == st + 1]
    saving = max(rows[(st, st)] + rows[(end, end)] - rows[(st, end)] for st, end in pairs)
    # plans round each conv's latency up to budget/2000 steps: a merge must save more than that
    rounding = sum(1 for st, end in rows if st == end) * singles / 2000
    if saving / 2 > rounding:  # the best pair merged fits a budget the convs alone exceed
        assert main(argv + ["--budget-ms", str(singles - saving / 2)]) == 0
        plan = json.loads(plan_path.read_text())
        assert plan["merged_segments"] and plan["predicted_latency_ms"] <= singles - saving / 2
        assert len(plan["remove_activations"]) == sum(e - s for s, e in plan["merged_segments"])
        assert "merge convs" in capsys.readouterr().out
    assert main(argv + ["--budget-ms", "0.000001"]) == 2


def test_lut_applies_and_records_the_input_shape(tmp_path, fast_profile, capsys):
    table = tmp_path / "r20-48.csv"
    argv = ["lut", "resnet20", "--device", str(fast_profile), "--max-span", "1", "-o", str(table)]
    assert main(argv + ["--input-shape", "3x48x48"]) == 0
    meta = json.loads(table.with_suffix(".json").read_text())
    assert list(meta["input_shapes"].values()) == [[1, 3, 48, 48]]
    onnx_file = tmp_path / "r20.onnx"
    assert main(["export", "resnet20", "-o", str(onnx_file)]) == 0
    capsys.readouterr()
    onnx_argv = ["lut", str(onnx_file), "-o", str(tmp_path / "t.csv"), "--input-shape", "3x48x48"]
    assert main(onnx_argv) == 2  # a static ONNX file keeps its own shapes
    assert "fixed shape 1x3x32x32; --input-shape 3x48x48 does not match" in capsys.readouterr().err
    assert not (tmp_path / "t.csv").exists()
    dynamic = conv_net(tmp_path / "dynamic.onnx", 2, 8, dynamic=True)  # its H and W are bound
    dynamic_argv = ["lut", str(dynamic), "--device", str(fast_profile), "--max-span", "1"]
    assert main(dynamic_argv + ["-o", str(tmp_path / "d.csv"), "--input-shape", "3x24x24"]) == 0
    meta = json.loads((tmp_path / "d.json").read_text())
    assert list(meta["input_shapes"].values()) == [[1, 3, 24, 24]]


@pytest.mark.parametrize(
    "rows,message",
    [
        ("2,1,0.5\n", "line 2: span (2, 1) is not 0 <= st <= end"),
        ("0,1,nan\n", "line 2: importance nan is not a finite number"),
        ("0,1,0.5\n0,1,0.7\n", "line 3: span (0, 1) is given twice"),
        ("0,x,0.5\n", "line 2: expected integers st,end and a number importance"),
        ("0,1\n", "line 2: expected integers st,end and a number importance"),
    ],
)
def test_plan_refuses_a_malformed_importance_row_naming_it(tmp_path, capsys, rows, message):
    table = tmp_path / "t.csv"
    table.write_text("id,st,end,time,stdev\n0,0,0,0.1,0\n1,1,1,0.1,0\n2,0,1,0.15,0\n")
    importance = tmp_path / "imp.csv"
    importance.write_text("st,end,importance\n" + rows)
    argv = ["plan", "lenet5", "--table", str(table), "--importance", str(importance)]
    assert main(argv + ["--budget-ms", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_plan_refuses_a_nan_budget_a_binary_table_and_warns_of_unknown_spans(tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("id,st,end,time,stdev\n0,0,0,0.1,0\n1,1,1,0.1,0\n2,0,1,0.15,0\n")
    importance = tmp_path / "imp.csv"
    importance.write_text("st,end,importance\n0,1,-0.5\n1,99,0.1\n")
    argv = ["plan", "lenet5", "--table", str(table), "--importance", str(importance)]
    assert main(argv + ["--budget-ms", "nan"]) == 2
    assert "the latency budget must be a positive number, not nan" in capsys.readouterr().err
    binary = tmp_path / "b.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" * 20)
    assert (
        main(
            [
                "plan",
                "lenet5",
                "--table",
                str(binary),
                "--importance",
                str(importance),
                "--budget-ms",
                "1",
            ]
        )
        == 2
    )
    assert "is not a valid latency table: not a text (CSV) file" in capsys.readouterr().err
    assert main(argv + ["--budget-ms", "1"]) == 0
    out, err = capsys.readouterr()
    assert "1 span(s) the latency table lacks, ignored (first (1, 99))" in err
