"""The latency history: SQLite store (keys, schema, transactions, two writers), step detection on
noisy series built from real sampled latencies, `history show`, and `compare --against-history`."""

from __future__ import annotations

import dataclasses
import multiprocessing
import sqlite3
from pathlib import Path
from typing import List

import numpy as np
import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.history import History, detect_steps, series_of
from harness.results import new_results, read_results, write_results
from harness.timing import summarize

GRAPHS = [("resnet20", "baseline"), ("resnet20", "dc-1x1")]


def _run(path: Path, day: int, levels: dict, rng, device: str = "xavier", threads: int = 2) -> Path:
    """One bench run: 300 log-normal samples per graph (3% spread) around its level, with 1.5%
    run-to-run drift that a single run's interval cannot see."""
    results = new_results(["test"], {"name": device}, {"cpu": {"model": "test cpu"}})
    results["created"] = f"2026-01-01T{day // 60:02d}:{day % 60:02d}:00+00:00"
    results["complete"] = True
    for (model, variant), level in levels.items():
        drift = float(np.exp(rng.normal(0.0, 0.015)))
        samples = list(level * drift * rng.lognormal(0.0, 0.03, 300))
        results["runs"].append(
            {
                "id": f"{model}/{variant}",
                "model": model,
                "variant": variant,
                "folded": False,
                "backend": {"backend": "onnxruntime", "intra_op_threads": threads},
                "precision": "fp32",
                "batch": 1,
                "input_shape": [1, 3, 32, 32],
                "series_ms": {"latency_ms": samples},
                "stats": dataclasses.asdict(summarize(samples)),
            }
        )
    write_results(results, path)
    return path


def _series(
    folder: Path, n: int, seed: int, step_at: int = -1, step: float = 1.0, start: int = 0
) -> List[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(exist_ok=True)
    return [
        _run(
            folder / f"run{start + i}.json",
            start + i,
            {GRAPHS[0]: 2.0, GRAPHS[1]: 1.0 * (step if 0 <= step_at <= i else 1.0)},
            rng,
        )
        for i in range(n)
    ]


def _add(db: Path, paths: List[Path]) -> None:
    with History(db) as history:
        for i, path in enumerate(paths):
            history.add(read_results(path), f"commit{i:03d}")


def test_an_injected_regression_is_found_where_it_was_injected(tmp_path):
    db = tmp_path / "h.sqlite"
    _add(db, _series(tmp_path / "runs", 24, seed=3, step_at=15, step=1.08))
    with History(db, create=False) as history:
        groups = series_of(history.points("xavier", "resnet20"))
    by_variant = {key[2]: points for key, points in groups.items()}
    (step,) = detect_steps(by_variant["dc-1x1"])
    assert step.index == 15 and step.kind == "regression"
    assert 0.05 < step.change < 0.11  # the 8% injected, measured through the noise
    assert detect_steps(by_variant["baseline"]) == []


@pytest.mark.parametrize("seed", range(6))
def test_a_noise_only_series_raises_no_alarm(tmp_path, seed):
    db = tmp_path / "h.sqlite"
    _add(db, _series(tmp_path / "runs", 24, seed=100 + seed))
    with History(db, create=False) as history:
        for points in series_of(history.points("xavier")).values():
            assert detect_steps(points) == []


def test_each_point_is_weighed_by_its_own_interval(tmp_path):
    """A jump made by points with huge intervals is not a step; the same jump made by points with
    tight intervals is."""
    db = tmp_path / "h.sqlite"
    _add(db, _series(tmp_path / "runs", 16, seed=7))
    with History(db, create=False) as history:
        (points,) = [p for k, p in series_of(history.points("xavier")).items() if k[2] == "dc-1x1"]
    jumped = [
        dataclasses.replace(
            p,
            median_ms=p.median_ms * 1.06,
            ci_low_ms=p.ci_low_ms * 1.06,
            ci_high_ms=p.ci_high_ms * 1.06,
        )
        for p in points[10:]
    ]
    assert [s.index for s in detect_steps(points[:10] + jumped)] == [10]
    vague = [
        dataclasses.replace(p, ci_low_ms=p.median_ms * 0.5, ci_high_ms=p.median_ms * 1.5)
        for p in points[:10] + jumped
    ]
    assert detect_steps(vague) == []


def test_add_is_keyed_and_idempotent_and_show_plots(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GITHUB_SHA", raising=False)
    db, plot = tmp_path / "h.sqlite", tmp_path / "trend.png"
    paths = _series(tmp_path / "runs", 12, seed=1, step_at=8, step=1.15)
    argv = ["history", "add", *map(str, paths[:10]), "--history", str(db), "--commit", "abc123"]
    assert main(argv) == 0
    assert main(argv) == 0  # the same files again: nothing added
    assert main(["history", "add", *map(str, paths[10:]), "--history", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.count(": 2 point(s) added to") == 12 and out.count(": 0 point(s) added to") == 10
    assert out.count("commit abc123, 2 already there)") == 10
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM points").fetchone()[0] == 24
        assert con.execute("PRAGMA user_version").fetchone()[0] == 2
        commits = {r[0] for r in con.execute("SELECT DISTINCT git_commit FROM points")}
    assert commits == {"abc123", "unknown"}  # the rest: no --commit, $GITHUB_SHA or git_sha
    summary = tmp_path / "summary.md"
    assert (
        main(
            [
                "history",
                "show",
                "--device",
                "xavier",
                "--model",
                "resnet20",
                "--history",
                str(db),
                "--plot",
                str(plot),
                "--markdown",
                str(summary),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "xavier resnet20/dc-1x1 (fp32, batch 1)" in out and "<- regression of +1" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = summary.read_text()
    assert markdown.count("```mermaid\nxychart-beta") == 2 and "- regression of +1" in markdown
    assert markdown.count("| 2026-01-01T") == 24


def test_another_environment_starts_another_series(tmp_path):
    db = tmp_path / "h.sqlite"
    rng = np.random.default_rng(0)
    _add(
        db,
        [
            _run(tmp_path / "a.json", 0, {GRAPHS[0]: 1.0}, rng, threads=2),
            _run(tmp_path / "b.json", 1, {GRAPHS[0]: 1.0}, rng, threads=4),
        ],
    )
    with History(db, create=False) as history:
        assert len(series_of(history.points("xavier"))) == 2


def test_a_failed_add_adds_nothing(tmp_path):
    db = tmp_path / "h.sqlite"
    (path,) = _series(tmp_path / "runs", 1, seed=0)
    results = read_results(path)
    # NOT NULL: the second row fails
    broken_stats = dataclasses.replace(results.runs[1].stats, median=None)
    broken = dataclasses.replace(results.runs[1], stats=broken_stats)
    with History(db) as history:
        with pytest.raises(HarnessError, match="nothing was added"):
            history.add(dataclasses.replace(results, runs=[results.runs[0], broken]), "c1")
        assert history.points() == []
        assert history.add(results, "c1") == (2, 0)


def _writer(db: str, paths: List[str], commit: str) -> None:
    with History(Path(db)) as history:
        for path in paths:
            history.add(read_results(path), commit)


def test_two_writer_processes_lose_nothing(tmp_path):
    db = tmp_path / "h.sqlite"
    first = _series(tmp_path / "a", 15, seed=1)
    second = _series(tmp_path / "b", 15, seed=2, start=100)
    context = multiprocessing.get_context("spawn")
    writers = [
        context.Process(target=_writer, args=(str(db), list(map(str, paths)), commit))
        for paths, commit in ((first, "a"), (second, "b"))
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
        assert writer.exitcode == 0
    with History(db, create=False) as history:
        points = history.points()
    assert len(points) == 60
    assert {p.git_commit for p in points} == {"a", "b"}


@pytest.mark.parametrize(
    "content,message",
    [
        (b"this is not a database at all" * 100, "is not a usable harness history"),
        (None, "has history schema 99, this harness reads schema 2"),
    ],
)
def test_corrupt_or_newer_store_is_refused_untouched(tmp_path, capsys, content, message):
    db = tmp_path / "h.sqlite"
    if content is None:
        with sqlite3.connect(db) as con:
            con.execute("CREATE TABLE points (x)")
            con.execute("PRAGMA user_version = 99")
    else:
        db.write_bytes(content)
    before = db.read_bytes()
    (path,) = _series(tmp_path / "runs", 1, seed=0)
    assert main(["history", "add", str(path), "--history", str(db)]) == 2
    assert message in capsys.readouterr().err
    assert db.read_bytes() == before


def test_compare_against_history_gates_on_a_step(tmp_path, capsys):
    db = tmp_path / "h.sqlite"
    _add(db, _series(tmp_path / "runs", 14, seed=5))
    rng = np.random.default_rng(99)
    same = _run(tmp_path / "same.json", 500, {GRAPHS[0]: 2.0, GRAPHS[1]: 1.0}, rng)
    slower = _run(tmp_path / "slower.json", 501, {GRAPHS[0]: 2.0, GRAPHS[1]: 1.15}, rng)
    junit = tmp_path / "junit.xml"
    assert main(["compare", str(same), "--against-history", "--history", str(db)]) == 0
    capsys.readouterr()
    threshold = [
        "compare",
        str(same),
        "--against-history",
        "--history",
        str(db),
        "--threshold",
        "5",
    ]
    assert main(threshold) == 2  # a step has no threshold: refused, not ignored
    assert "--threshold applies to BASE NEW" in capsys.readouterr().err
    assert main(["compare", str(same), str(slower), "--history", str(db)]) == 2
    assert "--history is read with --against-history only" in capsys.readouterr().err
    assert (
        main(
            [
                "compare",
                str(slower),
                "--against-history",
                "--history",
                str(db),
                "--junit",
                str(junit),
            ]
        )
        == 1
    )
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "| dc-1x1 |" in line and "slower" in line)
    assert "+1" in row  # about +15%
    assert 'failures="1"' in junit.read_text()
    assert (
        main(
            [
                "compare",
                str(slower),
                "--against-history",
                "--history",
                str(tmp_path / "none.sqlite"),
            ]
        )
        == 2
    )


def test_reading_commands_refuse_an_empty_file_and_leave_it_empty(tmp_path, capsys):
    db = tmp_path / "empty.json"
    db.write_bytes(b"")
    (path,) = _series(tmp_path / "runs", 1, seed=0)
    compare = ["compare", str(path), "--against-history", "--history", str(db)]
    show = ["history", "show", "--history", str(db), "--device", "xavier"]
    for argv in (compare, show + ["--plot", str(tmp_path / "p.png")]):
        assert main(argv) == 2
        assert "holds no history" in capsys.readouterr().err
        assert db.read_bytes() == b""
    assert main(["history", "add", str(path), "--history", str(db)]) == 0  # adding makes one
    assert main(show + ["--plot", str(db)]) == 2  # the plot would overwrite the history
    assert "is also an input" in capsys.readouterr().err
    with History(db, create=False) as history:
        assert len(history.points()) == 2


def test_a_run_is_judged_against_the_runs_before_it_only(tmp_path, capsys):
    db = tmp_path / "h.sqlite"
    paths = _series(tmp_path / "runs", 6, seed=7)
    _add(db, paths)
    capsys.readouterr()
    assert main(["compare", str(paths[0]), "--against-history", "--history", str(db)]) == 0
    assert "0 earlier run(s) of this graph" in capsys.readouterr().err  # later ones do not count
    assert main(["compare", str(paths[-1]), "--against-history", "--history", str(db)]) == 0
    assert "earlier run(s)" not in capsys.readouterr().err  # five before it: judged


def _busy(path: Path, load: float = 3.7) -> Path:
    data = read_results(path).to_dict()
    data["device"]["environment_before"]["cpu"].update(loadavg=[load] * 3, available_cores=2)
    write_results(data, path)
    return path


def test_against_history_a_change_inside_the_series_scatter_is_said_so(tmp_path, capsys):
    """Runs that scatter by 10% beyond their intervals: a new run 12% up is outside its own
    interval but not a step; the verdict says what was tested instead of "same"."""
    rng = np.random.default_rng(4)
    folder = tmp_path / "runs"
    folder.mkdir()
    paths = [
        _run(folder / f"r{i}.json", i, {GRAPHS[1]: 1.0 * f}, rng)
        for i, f in enumerate([1.0, 1.1, 0.95, 1.08, 0.93, 1.05, 1.0, 0.9])
    ]
    db = tmp_path / "h.sqlite"
    _add(db, paths)
    new = _run(tmp_path / "new.json", 100, {GRAPHS[1]: 1.12}, rng)
    assert main(["compare", str(new), "--against-history", "--history", str(db)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "| dc-1x1 |" in line)
    assert "within scatter" in row and "run-to-run scatter" in row and "z = " in row
    assert "| same |" not in row


def test_against_history_a_loaded_run_is_not_judged(tmp_path, capsys):
    db = tmp_path / "h.sqlite"
    _add(db, _series(tmp_path / "runs", 6, seed=5))
    rng = np.random.default_rng(8)
    slower = _busy(_run(tmp_path / "busy.json", 500, {GRAPHS[0]: 2.0, GRAPHS[1]: 1.9}, rng))
    assert main(["compare", str(slower), "--against-history", "--history", str(db)]) == 0
    captured = capsys.readouterr()
    row = next(line for line in captured.out.splitlines() if "| dc-1x1 |" in line)
    assert "not judged" in row and "load average 3.7 on 2 cores" in row
    assert "loaded machine" in captured.err


def test_a_loaded_run_in_the_history_is_marked_and_starts_no_step(tmp_path, capsys):
    paths = _series(tmp_path / "runs", 10, seed=2)
    rng = np.random.default_rng(3)
    paths[5] = _busy(_run(paths[5], 5, {GRAPHS[0]: 2.0, GRAPHS[1]: 1.9}, rng))
    db = tmp_path / "h.sqlite"
    _add(db, paths)
    with History(db, create=False) as history:
        (points,) = [p for k, p in series_of(history.points("xavier")).items() if k[2] == "dc-1x1"]
    assert [p.loaded for p in points].count("load average 3.7 on 2 cores") == 1
    assert detect_steps(points) == []


def test_a_schema_1_store_is_upgraded_in_place(tmp_path):
    db = tmp_path / "h.sqlite"
    (first, second) = _series(tmp_path / "runs", 2, seed=0)
    with History(db) as history:
        history.add(read_results(first), "c1")
    with sqlite3.connect(db) as con:  # back to schema 1: its table had none of the new columns
        for column in ("loaded", "flops", "graph", "commit_date", "commit_message", "metrics_json"):
            con.execute(f"ALTER TABLE points DROP COLUMN {column}")
        con.execute("PRAGMA user_version = 1")
    with History(db) as history:
        history.add(read_results(second), "c2", ("2026-01-02T00:00:00+00:00", "second"))
        points = history.points()
    assert len(points) == 4 and {p.commit_message for p in points} == {"", "second"}
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA user_version").fetchone()[0] == 2


def test_history_add_records_the_commits_date_and_subject_from_git(tmp_path, monkeypatch):
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "speed up the stem"], check=True)
    sha = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    (path,) = _series(tmp_path / "runs", 1, seed=0)
    db = tmp_path / "h.sqlite"
    monkeypatch.chdir(repo)
    assert main(["history", "add", str(path), "--history", str(db), "--commit", sha]) == 0
    assert main(["history", "add", str(path), "--history", str(db), "--commit=--output=x"]) == 0
    assert not (repo / "x").exists()  # a "commit" that is not a hash never reaches git
    with History(db, create=False) as history:
        points = history.points()
    dated = [p for p in points if p.git_commit == sha]
    assert {p.commit_message for p in dated} == {"speed up the stem"}
    assert all(p.commit_date.startswith("20") for p in dated)
