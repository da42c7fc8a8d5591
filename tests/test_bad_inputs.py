"""Bad input, as a user types it, to every command: exit 2, one line ``lume-ray: error: ...`` naming the key or flag
(or the file) the user wrote, and nothing written.

Each case runs ``lume_ray.cli.main`` in-process from an empty working directory (``tmp_path``), with whatever bad
file it needs made first; the directory is listed before and after, and must not change. Ray must not start: a
local head started by a case fails it. The cases are grouped by the rule they test (one test per rule):

1. every input checkable without Ray is checked before anything is written (paths, model, tokenizer, data);
2. values that cannot work are refused (resources this machine lacks, non-finite numbers, out-of-range fractions,
   rows longer than the model's context);
3. a key given twice in a YAML mapping is an error naming file, line and key;
4. every message is one line naming the file or flag (undecodable bytes, corrupt files, arithmetic in validators);
5. an address where no Ray cluster answers is one line within seconds (and, as a user sees it, in a subprocess).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from lume_ray.cli import main

RESULTS: dict[str, bool] = {}  # case id -> met the promise (the summary test counts them)
LINES: dict[str, str] = {}  # case id -> its error line (printed by the summary test)


@dataclass(frozen=True)
class World:
    tmp: Path
    lume: Path
    model: Path


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[World], list[str]]  # writes what the case needs under tmp, returns argv
    names: tuple[str, ...]  # what the error line must contain (the key, flag or file)


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        raw = raw.setdefault(p, {})
    raw[leaf] = value


def exp(w: World, name: str = "exp.yaml", **values: Any) -> str:
    """An experiment file that passes every check (tiny model and data) but for ``values`` (dotted keys, ``__``)."""
    raw: dict[str, Any] = {
        "name": "t", "output_dir": "run", "data": {"path": str(w.lume), "utility": None},
        "target": {"model": str(w.model)}, "train": {"workers": 1, "batch_size": 4, "max_length": 64},
        "eval": {"max_new_tokens": 4, "cpus_per_actor": 0.5}, "sweep": {"num_samples": 1, "sampler": "random"},
        "algorithms": {"ga": {"lr": 1e-3, "steps": {"max": 2}}}}
    for key, value in values.items():
        _set(raw, key.replace("__", "."), value)
    (w.tmp / name).write_text(yaml.safe_dump(raw, sort_keys=False))
    return name


def sweep(w: World, *extra: str, **values: Any) -> list[str]:
    return ["sweep", exp(w, **values), *extra]


def unlearn(w: World, *extra: str, model: str | None = None, data: str | None = None,
            algorithm: str = "ga") -> list[str]:
    return ["unlearn", "--model", model or str(w.model), "--data", data or str(w.lume), "--algorithm", algorithm,
            "--out", "out", *extra]


def evaluate(w: World, *extra: str, model: str | None = None, data: str | None = None) -> list[str]:
    return ["eval", "--model", model or str(w.model), "--data", data or str(w.lume), "--out", "out", *extra]


def model_copy(w: World, edit: Callable[[Path], None], name: str = "m") -> str:
    out = w.tmp / name
    shutil.copytree(w.model, out)
    edit(out)
    return name


def data_copy(w: World, line: bytes | str, name: str = "d", split: str = "forget") -> str:
    out = w.tmp / name
    shutil.copytree(w.lume, out)
    with (out / f"{split}.jsonl").open("ab") as f:
        f.write(line if isinstance(line, bytes) else line.encode())
    return name


def row(text_in: str, suffix: str = "sc9") -> str:
    return json.dumps({"id": f"z9{suffix}", "input": text_in, "output": "x", "task": "Task1"}) + "\n"


def write(w: World, name: str, content: str | bytes) -> str:
    path = w.tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return name


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # closed again: nothing listens there


def run_dir(w: World, study: bytes) -> str:
    write(w, "rd/study.json", study)
    return "rd"


def bad_config(text: str) -> Callable[[Path], None]:
    return lambda m: (m / "config.json").write_text(text)


def no_tokenizer(m: Path) -> None:
    for f in m.glob("tokenizer*"):
        f.unlink()


LONG_ROW = row("word " * 8000)  # 40 000 characters: far beyond the tiny model's 512-token context
TOKENS_ROW = row(" ".join(f"w{i}" for i in range(700)))  # beyond 512 tokens, not far beyond in characters


# -- 1. checked before anything is written ------------------------------------------------------------------------
PREFLIGHT = [
    Case("sweep-model-missing", lambda w: sweep(w, target__model="nomodel"), ("target.model", "nomodel")),
    Case("sweep-data-missing", lambda w: sweep(w, data__path="nodata"), ("data.path", "nodata")),
    Case("sweep-data-relative-slash", lambda w: sweep(w, data__path="data/lume"), ("data.path", "data/lume")),
    Case("sweep-model-hub-typo", lambda w: sweep(w, target__model="allenai/OLMo-1B-hf-typo"),
         ("target.model", "allenai/OLMo-1B-hf-typo")),
    Case("sweep-model-corrupt-config", lambda w: sweep(w, target__model=model_copy(w, bad_config('{"a":'))),
         ("target.model", "config.json")),
    Case("sweep-model-config-not-object", lambda w: sweep(w, target__model=model_copy(w, bad_config("[1]"))),
         ("target.model", "config.json")),
    Case("sweep-model-no-config", lambda w: sweep(w, target__model=model_copy(w, lambda m: (m / "config.json").unlink())),
         ("target.model", "config.json")),
    Case("sweep-model-no-tokenizer", lambda w: sweep(w, target__model=model_copy(w, no_tokenizer)),
         ("target.model", "tokenizer")),
    Case("sweep-model-unknown-type", lambda w: sweep(w, target__model=model_copy(w, bad_config('{"model_type": "nope"}'))),
         ("target.model", "config.json")),
    Case("sweep-data-is-a-file", lambda w: sweep(w, data__path=write(w, "f.txt", "x")), ("data.path", "f.txt")),
    Case("sweep-data-bad-row", lambda w: sweep(w, data__path=data_copy(w, '{"id": "x"}\n')), ("data.path", "forget.jsonl:11")),
    Case("sweep-member-missing", lambda w: sweep(w, data__member="members.jsonl"), ("data.member", "members.jsonl")),
    Case("sweep-utility-malformed", lambda w: sweep(w, data__utility=write(w, "u.jsonl", '{"question": "q"}\n')),
         ("data.utility", "u.jsonl:1")),
    Case("sweep-set-model-missing", lambda w: ["sweep", exp(w), "--set", "target.model=./gone"], ("target.model", "./gone")),
    Case("sweep-resume-nothing", lambda w: sweep(w, "--resume"), ("--resume", "no sweep to resume")),
    Case("sweep-output-under-a-file", lambda w: sweep(w, output_dir=write(w, "f", "x") + "/run"), ("output_dir", "f/run")),
    Case("unlearn-out-under-a-file", lambda w: unlearn(w, "--out", write(w, "f", "x") + "/o"), ("--out", "f/o")),
    Case("eval-out-is-a-file", lambda w: evaluate(w, "--out", write(w, "f", "x")), ("--out", "f")),
    Case("quickstart-model-missing", lambda w: ["quickstart", "--experiment", exp(w, target__model="nomodel")],
         ("target.model", "nomodel")),
    Case("unlearn-model-missing", lambda w: unlearn(w, model="nomodel"), ("--model", "nomodel")),
    Case("unlearn-model-corrupt", lambda w: unlearn(w, model=model_copy(w, bad_config("{"))), ("--model", "config.json")),
    Case("unlearn-model-hub-typo", lambda w: unlearn(w, model="olmo/not-cached-here"), ("--model", "olmo/not-cached-here")),
    Case("unlearn-model-not-an-id", lambda w: unlearn(w, model="a/b/c"), ("--model", "a/b/c")),
    Case("unlearn-data-missing", lambda w: unlearn(w, data="nodata"), ("--data", "nodata")),
    Case("unlearn-data-relative-slash", lambda w: unlearn(w, data="data/lume"), ("--data", "data/lume")),
    Case("unlearn-data-empty-split", lambda w: unlearn(w, data=write(w, "e/forget.jsonl", "") and "e"),
         ("--data", "e")),
    Case("eval-model-corrupt", lambda w: evaluate(w, model=model_copy(w, bad_config('{"a":'))), ("--model", "config.json")),
    Case("eval-data-missing", lambda w: evaluate(w, data="nodata"), ("--data", "nodata")),
    Case("eval-member-missing", lambda w: evaluate(w, "--member", "mem.jsonl"), ("--member", "mem.jsonl")),
    Case("eval-nonmember-malformed", lambda w: evaluate(w, "--nonmember", write(w, "n.jsonl", "{oops\n")),
         ("--nonmember", "n.jsonl:1")),
    Case("eval-utility-missing", lambda w: evaluate(w, "--utility", "u.jsonl"), ("--utility", "u.jsonl")),
    Case("target-build-data-missing", lambda w: ["target", "build", "tgt", "--data", "nodata"], ("--data", "nodata")),
    Case("data-inspect-relative-slash", lambda w: ["data", "inspect", "data/lume"], ("PATH", "data/lume")),
]

# -- 2. values that cannot work ------------------------------------------------------------------------------------
VALUES = [
    Case("sweep-gpus-this-machine-lacks", lambda w: sweep(w, train__gpus_per_worker=1, train__workers=16,
                                                          train__batch_size=16), ("train.gpus_per_worker", "GPU")),
    Case("unlearn-gpus-this-machine-lacks", lambda w: unlearn(w, "--gpus-per-worker", "1", "--workers", "16",
                                                              "--batch-size", "16"), ("--gpus-per-worker", "GPU")),
    Case("sweep-cpus-inf", lambda w: sweep(w, train__cpus_per_worker=float("inf")), ("train.cpus_per_worker", "finite")),
    Case("unlearn-cpus-inf", lambda w: unlearn(w, "--cpus-per-worker", "inf"), ("--cpus-per-worker", "finite")),
    Case("unlearn-lr-nan", lambda w: unlearn(w, "--lr", "nan"), ("--lr",)),
    Case("sweep-lr-nan", lambda w: sweep(w, algorithms__ga__lr=float("nan")), ("algorithms.ga.lr",)),
    Case("sweep-mia-k-nan", lambda w: ["sweep", exp(w), "--set", "eval.mia_k=.nan"], ("eval.mia_k",)),
    Case("sweep-cpus-more-than-machine", lambda w: sweep(w, train__cpus_per_worker=4096), ("train.cpus_per_worker", "CPU")),
    Case("sweep-eval-gpus-more-than-machine", lambda w: sweep(w, eval__gpus_per_actor=64), ("eval.gpus_per_actor", "GPU")),
    Case("eval-gpus-more-than-machine", lambda w: evaluate(w, "--gpus-per-actor", "64"), ("--gpus-per-actor", "GPU")),
    Case("eval-cpus-more-than-machine", lambda w: evaluate(w, "--cpus-per-actor", "4096"), ("--cpus-per-actor", "CPU")),
    Case("sweep-relative-floor-above-one", lambda w: sweep(w, eval__utility_floor={"relative": 5}),
         ("utility_floor", "(0, 1]")),
    Case("eval-relative-floor-above-one", lambda w: evaluate(w, "--utility-floor", "5"), ("--utility-floor",)),
    Case("report-floor-above-one", lambda w: ["report", "rd", "--floor", "utility=5"], ("--floor",)),
    Case("sweep-keep-inf", lambda w: ["sweep", exp(w), "--set", "sweep.early_stop={rungs: [1], keep: .inf}"],
         ("sweep.early_stop.keep",)),
    Case("sweep-row-far-too-long", lambda w: sweep(w, data__path=data_copy(w, LONG_ROW)),
         ("data.path", "forget.jsonl:11", "context")),
    Case("unlearn-row-longer-than-context", lambda w: unlearn(w, data=data_copy(w, TOKENS_ROW)),
         ("--data", "forget.jsonl:11", "tokens")),
    Case("eval-row-longer-than-context", lambda w: evaluate(w, data=data_copy(w, TOKENS_ROW, split="retain")),
         ("--data", "retain.jsonl:11")),
    Case("plan-gpu-mem-nan", lambda w: ["plan", "--model", "7b", "--gpus", "8", "--gpu-mem", "nan"], ("--gpu-mem",)),
    Case("eval-reference-utility-nan", lambda w: evaluate(w, "--reference-utility", "nan"), ("--reference-utility",)),
    Case("plan-gpus-zero", lambda w: ["plan", "--model", "7b", "--gpus", "0"], ("--gpus",)),
    Case("synth-docs-too-few", lambda w: ["data", "synth", "ds", "--docs-per-task", "1"], ("--docs-per-task",)),
    Case("target-build-epochs-zero", lambda w: ["target", "build", "tgt", "--data", str(w.lume), "--epochs", "0"],
         ("--epochs",)),
    Case("target-build-preset-typo", lambda w: ["target", "build", "tgt", "--data", str(w.lume), "--preset", "huge"],
         ("--preset", "huge")),
    Case("sweep-algorithm-check-against-the-model",
         lambda w: sweep(w, algorithms__rmu={"lr": 1e-3, "steps": {"max": 2}, "layer": 7}), ("algorithms.rmu", "layer")),
    Case("sweep-sampler-typo", lambda w: sweep(w, "--sampler", "gpp"), ("sampler", "gpp")),
]

# -- 3. a key given twice --------------------------------------------------------------------------------------------
TWICE = "name: t\nalgorithms:\n  ga: {lr: 0.001, steps: {max: 2}}\n"
DUPLICATES = [
    Case("sweep-top-level-twice", lambda w: ["sweep", write(w, "e.yaml", TWICE + "name: u\n")], ("e.yaml", "line 4", "'name'")),
    Case("sweep-nested-twice", lambda w: ["sweep", write(w, "e.yaml", TWICE + "train:\n  workers: 1\n  workers: 2\n")],
         ("e.yaml", "line 6", "'workers'")),
    Case("sweep-flow-mapping-twice", lambda w: ["sweep", write(w, "e.yaml", "name: t\nalgorithms: {ga: {lr: 1, lr: 2}}\n")],
         ("e.yaml", "'lr'")),
    Case("sweep-set-value-twice", lambda w: ["sweep", exp(w), "--set", "sweep={num_samples: 1, num_samples: 2}"],
         ("--set", "'num_samples'")),
    Case("quickstart-twice", lambda w: ["quickstart", "--experiment", write(w, "e.yaml", TWICE + "seed: 1\nseed: 2\n")],
         ("e.yaml", "'seed'")),
    Case("submit-twice", lambda w: ["submit", write(w, "e.yaml", TWICE + "name: u\n"), "--address", "http://127.0.0.1:1"],
         ("e.yaml", "'name'")),
    Case("eval-flag-value-twice", lambda w: evaluate(w, "--utility-floor", "{relative: 0.5, relative: 0.6}"),
         ("--utility-floor", "'relative'")),
]

# -- 4. one line, naming the file or flag ---------------------------------------------------------------------------
MESSAGES = [
    Case("sweep-keep-divided-by-zero", lambda w: ["sweep", exp(w), "--set", "sweep.early_stop={rungs: [1], keep: 1/0}"],
         ("sweep.early_stop.keep", "1/0")),
    Case("sweep-yaml-not-utf8", lambda w: ["sweep", write(w, "e.yaml", b"name: t\xff\n")], ("e.yaml",)),
    Case("sweep-yaml-syntax", lambda w: ["sweep", write(w, "e.yaml", "name: [t\n")], ("e.yaml", "line")),
    Case("sweep-yaml-not-a-mapping", lambda w: ["sweep", write(w, "e.yaml", "- a\n")], ("e.yaml",)),
    Case("sweep-experiment-is-a-directory", lambda w: ["sweep", (w.tmp / "expdir").mkdir() or "expdir"], ("expdir",)),
    Case("sweep-experiment-missing", lambda w: ["sweep", "missing.yaml"], ("missing.yaml",)),
    Case("data-inspect-not-utf8", lambda w: ["data", "inspect", data_copy(w, b"\xff\xfe\n")], ("forget.jsonl:11",)),
    Case("data-inspect-malformed-json", lambda w: ["data", "inspect", data_copy(w, "{nope\n")], ("forget.jsonl:11",)),
    Case("eval-data-not-utf8", lambda w: evaluate(w, data=data_copy(w, b'{"id": "\xff"}\n')), ("--data", "forget.jsonl:11")),
    Case("unlearn-data-not-utf8", lambda w: unlearn(w, data=data_copy(w, b"\xc3\x28\n", split="retain")),
         ("--data", "retain.jsonl:11")),
    Case("status-corrupt-study", lambda w: ["status", run_dir(w, b'{"name": ')], ("study.json",)),
    Case("status-study-not-utf8", lambda w: ["status", run_dir(w, b'{"name": "\xff"}')], ("study.json",)),
    Case("status-study-not-an-object", lambda w: ["status", run_dir(w, b"[1, 2]")], ("study.json",)),
    Case("status-on-a-file", lambda w: ["status", write(w, "notes.txt", "x")], ("notes.txt",)),
    Case("report-on-a-file", lambda w: ["report", write(w, "notes.txt", "x")], ("notes.txt", "file")),
    Case("report-on-an-empty-dir", lambda w: ["report", str(w.tmp)], ("results.parquet",)),
    Case("unlearn-steps-not-a-number", lambda w: unlearn(w, "--steps", "abc"), ("--steps", "abc")),
    Case("unlearn-eval-every-zero", lambda w: unlearn(w, "--eval-every", "0"), ("--eval-every",)),
    Case("unlearn-param-beyond-the-model", lambda w: unlearn(w, "--set", "layer=9", algorithm="rmu"),
         ("--set", "layer=9")),
    Case("unlearn-unknown-param", lambda w: unlearn(w, "--set", "gamma=1"), ("--set", "gamma")),
    Case("data-synth-onto-a-file", lambda w: ["data", "synth", write(w, "taken", "x")], ("taken",)),
    Case("plan-model-missing", lambda w: ["plan", "--model", "nope", "--gpus", "8"], ("--model", "nope")),
    Case("plan-model-corrupt", lambda w: ["plan", "--model", model_copy(w, bad_config("{")), "--gpus", "8"],
         ("--model", "config.json")),
    Case("jobs-status-without-id", lambda w: ["jobs", "status", "--address", "http://127.0.0.1:1"], ("JOB",)),
    Case("jobs-unknown-action", lambda w: ["jobs", "restart"], ("restart",)),
    Case("report-compare-without-out", lambda w: ["report", str(w.tmp), str(w.tmp)], ("--out",)),
]

# -- 5. an address where no Ray cluster answers ---------------------------------------------------------------------
ADDRESSES = [
    Case("unlearn-address-closed", lambda w: unlearn(w, "--address", closed_port()), ("--address", "127.0.0.1")),
    Case("eval-address-closed", lambda w: evaluate(w, "--address", closed_port()), ("--address", "127.0.0.1")),
    Case("sweep-address-closed", lambda w: sweep(w, "--address", closed_port()), ("--address", "127.0.0.1")),
    Case("unlearn-address-malformed", lambda w: unlearn(w, "--address", "head:port"), ("--address", "head:port")),
    Case("jobs-address-closed", lambda w: ["jobs", "list", "--address", "http://127.0.0.1:1"], ("127.0.0.1:1",)),
    Case("submit-address-closed", lambda w: ["submit", exp(w), "--address", "http://127.0.0.1:1"], ("127.0.0.1:1",)),
]

ALL = PREFLIGHT + VALUES + DUPLICATES + MESSAGES + ADDRESSES


@pytest.fixture
def world(tmp_path: Path, tiny_lume: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """An empty working directory; Ray must not start (a case that gets that far has failed its promise)."""
    import lume_ray.local_ray

    def no_ray(*args: Any, **kw: Any) -> Any:
        raise AssertionError("a local Ray head was started")

    monkeypatch.setattr(lume_ray.local_ray, "start_head", no_ray)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    yield World(tmp_path, tiny_lume, tiny_model)


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def check(case: Case, w: World, capsys: pytest.CaptureFixture[str]) -> None:
    """The promise, for one case: exit 2, exactly one stderr line ``lume-ray: error: ...`` naming what the case
    names, and no file or directory created."""
    argv = case.make(w)
    before = _listing(w.tmp)
    capsys.readouterr()
    RESULTS[case.id] = False
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors (lume_ray.cli_options.Parser: one line too)
        code = e.code if isinstance(e.code, int) else 1
    err = capsys.readouterr().err
    lines = err.splitlines()
    LINES[case.id] = lines[0] if lines else ""
    assert code == 2, f"{case.id}: exit {code}: {err}"
    assert len(lines) == 1 and lines[0].startswith("lume-ray: error: "), f"{case.id}: {err!r}"
    for name in case.names:
        assert name in lines[0], f"{case.id}: {name!r} not in {lines[0]!r}"
    assert _listing(w.tmp) == before, f"{case.id}: wrote {sorted(_listing(w.tmp) - before)}"
    RESULTS[case.id] = True


def _ids(cases: list[Case]) -> list[str]:
    return [c.id for c in cases]


@pytest.mark.parametrize("case", PREFLIGHT, ids=_ids(PREFLIGHT))
def test_inputs_are_checked_before_anything_is_written(case: Case, world: World, capsys: Any) -> None:
    check(case, world, capsys)


@pytest.mark.parametrize("case", VALUES, ids=_ids(VALUES))
def test_values_that_cannot_work_are_refused(case: Case, world: World, capsys: Any) -> None:
    check(case, world, capsys)


@pytest.mark.parametrize("case", DUPLICATES, ids=_ids(DUPLICATES))
def test_a_yaml_key_given_twice_is_refused(case: Case, world: World, capsys: Any) -> None:
    check(case, world, capsys)


@pytest.mark.parametrize("case", MESSAGES, ids=_ids(MESSAGES))
def test_every_message_is_one_line_naming_the_file_or_flag(case: Case, world: World, capsys: Any) -> None:
    check(case, world, capsys)


@pytest.mark.parametrize("case", ADDRESSES, ids=_ids(ADDRESSES))
def test_an_address_without_a_cluster_is_refused(case: Case, world: World, capsys: Any) -> None:
    check(case, world, capsys)


def test_a_silent_address_as_a_user_sees_it(tmp_path: Path, tiny_lume: Path, tiny_model: Path) -> None:
    """The installed command against an address that accepts connections and never answers (what ray.init waits
    on): one line naming the address, exit 2, within the probe's seconds plus start-up; nothing written."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # connections complete in the kernel's backlog; nothing is ever read or answered
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "lume_ray.cli", "eval", "--model", str(tiny_model), "--data",
                               str(tiny_lume), "--out", "out", "--address", address],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
        elapsed = time.monotonic() - t0
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("lume-ray: error: ") and "--address" in lines[0] and address in lines[0], lines[0]
    assert not (tmp_path / "out").exists()
    print(f"silent address refused in {elapsed:.1f} s (the probe waits at most 5 s)")


def test_summary_every_bad_input_met_the_promise() -> None:
    """How many bad inputs met the promise (runs last; needs the whole module)."""
    if len(RESULTS) < len(ALL):
        pytest.skip(f"only {len(RESULTS)} of {len(ALL)} cases ran")
    met = sum(RESULTS.values())
    for case_id, line in LINES.items():
        print(f"{case_id:<40} {line}")
    print(f"bad inputs: {met}/{len(ALL)} met the promise (exit 2, one line naming the key, nothing written)")
    assert len(ALL) >= 60
    assert met == len(ALL), sorted(k for k, v in RESULTS.items() if not v)
