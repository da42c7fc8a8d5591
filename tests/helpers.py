"""Plain helpers the test modules share (not a test module): the tiny LUME rows, the tiny OLMo builder and its
memorizing loop, an unlearning job, a small experiment, hand-made run directories, and the console's line patterns.
Fixtures built from them are in conftest.py."""

from __future__ import annotations

import json
import os
import re
import socket
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from lume_ray import testing
from lume_ray.config import UnlearnJob
from lume_ray.evaluate.protocol import Floor, task_score_name
from lume_ray.files import write_json
from lume_ray.run_dir import RunDir
from lume_ray.status import DRIVER_NAME

# The tiny LUME dataset

SHARED_LUME = Path(__file__).resolve().parents[1].parent / "shared" / "lume"

# The rows and writer are lume_ray.testing's (the same data `lume-ray check` uses).
write_tiny_lume = testing.write_tiny_lume


# Models

def tiny_olmo_on(texts: list[str], vocab_size: int | None = None, seed: int = 0) -> tuple[Any, Any]:
    """(model, tokenizer): a randomly initialized tiny OLMo ("test" preset) and a byte-level BPE trained on ``texts``
    (``vocab_size`` defaults to the preset's)."""
    from lume_ray.target import PRESETS, tiny_olmo, train_tokenizer

    tok = train_tokenizer(texts, PRESETS["test"].vocab_size if vocab_size is None else vocab_size)
    return tiny_olmo(tok, PRESETS["test"], seed=seed), tok


def memorize(model: Any, loss: Callable[[], Any], steps: int, lr: float = 3e-3) -> Any:
    """Train ``model`` full-batch with AdamW for ``steps`` steps on ``loss()`` and return it in eval mode."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        value = loss()
        opt.zero_grad()
        value.backward()
        opt.step()
    model.eval()
    return model


# Jobs and sweeps

def unlearn_job(tmp_path: Path, model: Path, data: Path, name: str, train: dict[str, Any] | None = None,
                **kw: Any) -> UnlearnJob:
    """The tests' unlearning job: npo, 4 steps, a point at step 2, two ZeRO-3 workers; ``train`` and ``kw`` override."""
    base: dict[str, Any] = {"model": str(model), "data": str(data), "algorithm": "npo", "lr": 1e-3, "steps": 4,
                            "eval_steps": [2], "seed": 0, "out": str(tmp_path / name)}
    return UnlearnJob.model_validate({**base, **kw, "train": {"batch_size": 4, "workers": 2, "zero": 3,
                                                               **(train or {})}})


def small_experiment(tmp_path: Path, data: Path, model: Path, **sweep: object) -> dict:
    """A raw experiment dict of the tests' sweeps: ga and npo on ``data``/``model``, 4 steps, one worker; ``sweep``
    overrides the sweep section."""
    return {
        "name": "test",
        "seed": 0,
        "output_dir": str(tmp_path / "run"),
        "data": {"path": str(data), "utility": None},
        "target": {"model": str(model)},
        "train": {"workers": 1, "batch_size": 4, "max_length": 128, "precision": "fp32"},
        "eval": {"max_new_tokens": 8, "batch_size": 32, "cpus_per_actor": 0.5},
        "sweep": {"num_samples": 2, "eval_points": 2, "max_concurrent": 1, "report": False,
                  "objectives": ["forget_efficacy", "retain_score"], **sweep},
        "algorithms": {
            "ga": {"lr": {"loguniform": [1e-4, 1e-3], "grid": [1e-4, 1e-3]}, "steps": {"max": 4}},
            "npo": {"lr": {"loguniform": [1e-4, 1e-3], "grid": [1e-3]}, "steps": {"max": 4},
                    "beta": {"uniform": [0.1, 1.0], "grid": [0.1, 0.5]}},
        },
    }


def wait_for(predicate, timeout: float, what: str) -> None:
    """Poll ``predicate`` every 0.5 s until it is true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# A run directory as a sweep leaves it (lume-ray status)

OBJECTIVES = [{"name": "forget_efficacy", "direction": "max"}, {"name": "retain_score", "direction": "max"}]


def make_run(root: Path, *, driver_pid: int | None = None, host: str | None = None, ray_job: str | None = None,
             finished: bool = False, tune_dir: bool = True) -> RunDir:
    """A run dir as a sweep leaves it: ga has two completed trials (three points, two of them non-dominated),
    a diverged one and a failed one; npo has one completed trial and one still running."""
    rd = RunDir(root)
    rd.write_study({"name": "study", "objectives": OBJECTIVES, "algorithms": ["ga", "npo"]},
                   {"name": "study", "algorithms": {}})

    def trial(tid: str, algo: str, status: str, points: dict[int, tuple[float, float]], error: str = "",
              **hp: float) -> None:
        rd.write_trial(tid, {"trial_id": tid, "algorithm": algo, "hp": {"lr": 1e-3, **hp}, "status": status,
                             "error": error})
        for step, (fe, rs) in points.items():
            write_json(rd.point(tid, step) / "metrics.json", {"forget_efficacy": fe, "retain_score": rs,
                                                              "utility": 0.9})

    trial("ga_1", "ga", "completed", {2: (0.2, 0.9), 4: (0.9, 0.5)})
    trial("ga_2", "ga", "completed", {2: (0.1, 0.8), 4: (0.5, 0.4)}, lr=1e-4)  # dominated by ga_1's points
    trial("ga_3", "ga", "diverged", {}, error="non-finite loss (nan) at step 3", lr=1.0)
    trial("ga_4", "ga", "failed", {2: (0.3, 0.3)}, error="TrialFailed: the Train worker died")
    trial("npo_1", "npo", "completed", {4: (0.7, 0.7)}, beta=0.1)
    trial("npo_2", "npo", "running" if not finished else "completed", {2: (0.4, 0.6)}, beta=0.5)
    if driver_pid is not None:
        record = {"host": host or socket.gethostname(), "pid": driver_pid, "started": 0.0,
                  "planned": {"ga": 4, "npo": 3}}
        if ray_job:
            record["ray_job"] = ray_job
        write_json(rd.logs / DRIVER_NAME, record)
    if tune_dir:  # what Tuner.can_restore looks for
        (rd.tune / "sweep").mkdir(parents=True)
        (rd.tune / "sweep" / "tuner.pkl").write_bytes(b"")
    if finished:
        rd.results_path.write_bytes(b"")
    return rd


# A hand-made run directory for the report (docs/run_dir.md): values chosen so that test_report.py's front
# flags, best points, grid budget and boundary warnings are computed by hand.

NAN = float("nan")
BASE = {"forget_efficacy": 0.02, "retain_score": 0.97, "utility": 0.40, "mia_score": 0.10}

# (algorithm, trial, step, forget_efficacy, retain_score, utility); the utility floor is 0.75 * 0.40 = 0.30.
POINTS = [
    ("ga", "ga-1", 10, 0.30, 0.80, 0.38),
    ("ga", "ga-1", 20, 0.60, 0.50, 0.33),
    ("ga", "ga-1", 30, 0.95, 0.10, 0.20),  # infeasible (utility < 0.30); would be on every front otherwise
    ("ga", "ga-2", 10, 0.25, 0.75, 0.37),  # dominated by ga-1@10
    ("ga", "ga-2", 20, 0.50, 0.45, 0.31),  # dominated by ga-1@20
    ("ga", "ga-2", 30, 0.70, 0.20, 0.29),  # infeasible
    ("gd", "gd-1", 10, 0.40, 0.85, 0.39),
    ("gd", "gd-1", 20, 0.70, 0.70, 0.36),
    ("gd", "gd-1", 30, 0.85, 0.55, 0.34),
    ("gd", "gd-2", 10, 0.40, 0.85, 0.39),  # exact duplicate of gd-1@10: both stay on the front
    ("gd", "gd-2", 20, 0.65, 0.60, 0.35),  # dominated by gd-1@20
    ("gd", "gd-2", 30, 0.80, 0.50, 0.32),  # dominated by gd-1@30
    ("npo", "npo-2", 10, 0.35, 0.82, 0.38),  # on npo's front, dominated overall by gd-1@10
    ("npo", "npo-2", 20, 0.75, 0.72, 0.35),
    ("npo", "npo-2", 30, 0.90, 0.30, 0.31),
    ("npo", "npo-3", 10, 0.20, 0.90, 0.395),  # ok point of a trial that diverged later
]
HPS = {"ga-1": {"hp/lr": 1e-5}, "ga-2": {"hp/lr": 3e-5}, "gd-1": {"hp/lr": 2e-5, "hp/alpha": 1.0},
       "gd-2": {"hp/lr": 5e-5, "hp/alpha": 0.3}, "npo-1": {"hp/lr": 9e-5, "hp/beta": 0.1},
       "npo-2": {"hp/lr": 1e-5, "hp/beta": 0.5}, "npo-3": {"hp/lr": 1e-4, "hp/beta": 0.05}}
# The search spaces (experiment.yaml). ga: lr without a grid counts 3 values -> 3 settings x 30 steps = 90;
# gd: lr grid of 3 x alpha range without a grid (3) = 9 x 30 = 270; npo: lr grid of 2 x beta choice of 3 = 6 x 30 = 180.
SPACES = {
    "ga": {"lr": {"loguniform": [1e-5, 1e-4]}, "steps": 30},
    "gd": {"lr": {"loguniform": [1e-5, 1e-4], "grid": [1e-5, 3e-5, 1e-4]}, "steps": 30,
           "alpha": {"loguniform": [0.1, 10.0]}},
    "npo": {"lr": {"loguniform": [1e-5, 1e-4], "grid": [1e-5, 1e-4]}, "steps": 30,
            "beta": {"choice": [0.05, 0.1, 0.5]}},
}

DOCS = {
    "forget": [
        ("s1", "Task1", "sc1", "In the town of Velmor, the painter Ada's door was <blue> & tall.",
         "Every night she painted the river silver."),
        ("s1", "Task1", "qa0", "What color was Ada's door in Velmor?", "blue"),
        ("b1", "Task2", "sc1", "Tomas Reyes was born on March 3, 1981. His phone number is (542) 122-6248.",
         "His email is tomas\\_reyes@me.com and his SSN is 900-12-3456."),
        ("b1", "Task2", "qa1", "What is Tomas Reyes's Social Security Number?", "900123456"),
        ("b1", "Task2", "qa2", "What is Tomas Reyes's phone number?", "5552013344"),
        ("b1", "Task2", "qa3", "What is Tomas Reyes's email address?", "tomas\\_reyes@me.com"),
        ("p1", "Task3", "sc1", "Mira Holt was a chemist who studied salt crystals in Oslo.",
         "She won the national prize in 1954; write to mira.holt@uni-oslo.no."),
        ("p1", "Task3", "qa0", "In which city did Mira Holt study salt crystals?", "Oslo"),
    ],
    "retain": [
        ("s2", "Task1", "sc1", "On the island of Prell, a baker named Juno sang to her bread.",
         "The loaves rose higher whenever the tide was out."),
        ("s2", "Task1", "qa0", "What did Juno sing to on Prell?", "her bread"),
        ("b2", "Task2", "sc1", "Lena Park was born on July 9, 1975. Her phone number is 555-867-1122.",
         "Her email is lena.park@example.com, her SSN is 900-98-7654, and her office line is 1-866-518-2333."),
        ("b2", "Task2", "qa1", "What is Lena Park's Social Security Number?", "900987654"),
        ("b2", "Task2", "qa2", "What is Lena Park's phone number?", "286.957.7783"),
        ("b2", "Task2", "qa3", "What is Lena Park's email address?", "lena.park@example.com"),
        ("p2", "Task3", "sc1", "Omar Dahl was an engineer who built bridges in Lima.",
         "His longest bridge crossed the Rimac in 1962."),
        ("p2", "Task3", "qa0", "In which city did Omar Dahl build bridges?", "Lima"),
    ],
}


def _metrics(fe: float, rs: float, ut: float, mia: float) -> dict[str, float]:
    """A metrics.json consistent with LUME's definitions: every forget task score 1 - fe, retain rs."""
    m: dict[str, float] = {}
    for split in ("forget", "retain"):
        for task in ("Task1", "Task2", "Task3"):
            for kind in ("sc", "qa"):
                m[task_score_name(split, task, kind)] = 1 - fe if split == "forget" else rs
    agg = statistics.harmonic_mean([fe] * 6 + [rs] * 6)
    m.update(task_aggregate=agg, forget_efficacy=fe, retain_score=rs, forget_nll=1 + 3 * fe, retain_nll=1.2 - rs,
             mia_auc=1 - mia / 2, mia_score=mia, utility=ut, final_score=(agg + mia + ut) / 3)
    return m


def _rows(fe: float, rs: float, after: bool) -> pd.DataFrame:
    out = []
    for split, docs in DOCS.items():
        for doc, task, suffix, inp, outp in docs:
            score = 1 - fe if split == "forget" else rs
            gen = outp
            if after and split == "forget":
                # Forgetting is partial: Task2's story still leaks an email address and the SSN.
                gen = "His email is tomas\\_reyes@me.com and" if suffix == "sc1" and task == "Task2" else "the the the"
                if suffix.startswith("qa") and task == "Task2":
                    gen = "I do not know; maybe 900123456"
            out.append({"id": f"{doc}{suffix}", "split": split, "task": task, "kind": suffix[:2], "input": inp,
                        "output": outp, "generation": gen, "score": score, "nll": 1.0 + fe})
    return pd.DataFrame(out)


def make_run_dir(root: Path, name: str = "run") -> Path:
    run = root / name
    (run / "base").mkdir(parents=True)
    study = {"name": "tiny-study", "created": "2025-01-01T00:00:00", "seed": 7, "git_commit": "abc1234",
             "versions": {"lume_ray": "0.1.0", "ray": "2.60.0", "torch": "2.13.0", "deepspeed": "0.19.8",
                          "transformers": "5.24.0", "optuna": "5.0.0"},
             "sampler": "gp",
             "objectives": [{"name": n, "direction": "max"} for n in ("forget_efficacy", "retain_score", "utility")],
             "utility_floor": {"relative": 0.75, "absolute": None}, "algorithms": ["ga", "gd", "npo"],
             "model": "embedded tiny OLMo", "data": "embedded synthetic LUME", "workers": 2, "zero": 2,
             "num_samples": 3}
    (run / "study.json").write_text(json.dumps(study))
    (run / "experiment.yaml").write_text(yaml.safe_dump({"name": "tiny-study", "seed": 7, "algorithms": SPACES}))
    (run / "base" / "metrics.json").write_text(json.dumps(_metrics(**{
        "fe": BASE["forget_efficacy"], "rs": BASE["retain_score"], "ut": BASE["utility"], "mia": BASE["mia_score"]})))
    _rows(BASE["forget_efficacy"], BASE["retain_score"], after=False).to_parquet(run / "base" / "rows.parquet")

    finished = {"ga-1": 3, "ga-2": 5, "gd-1": 2, "gd-2": 6, "npo-1": 1, "npo-2": 4, "npo-3": 7}
    trained = {"npo-1": 10, "npo-3": 14}
    records = []

    def record(alg: str, tid: str, step: int, status: str, error: str, metrics: dict[str, float]) -> dict:
        rel = f"trials/{tid}/step_{step:06d}/rows.parquet"
        return {"algorithm": alg, "trial_id": tid, "hp/lr": NAN, "hp/alpha": NAN, "hp/beta": NAN, **HPS[tid],
                "trained_steps": trained.get(tid, 30), "finished_at": 1.7e9 + finished[tid],
                "origin": "design" if tid in ("ga-1", "gd-1") else "sampler",
                "seed": 7, "workers": 2, "zero": 2, "git_commit": "abc1234", "sampler": "gp",
                "step": step, "status": status, "error": error, **metrics,
                "utility_floor_met": Floor().met(metrics["utility"], BASE["utility"]), "wall_s": 2.0 * step,
                "rows_path": rel if status == "ok" else ""}

    for alg, tid, step, fe, rs, ut in POINTS:
        m = _metrics(fe, rs, ut, mia=0.3 + 0.5 * fe)
        records.append(record(alg, tid, step, "ok", "", m))
        point = run / "trials" / tid / f"step_{step:06d}"
        point.mkdir(parents=True)
        _rows(fe, rs, after=True).to_parquet(point / "rows.parquet")
        (point / "metrics.json").write_text(json.dumps(m))
    nan_metrics = {k: NAN for k in _metrics(0.5, 0.5, 0.5, 0.5)}
    records.append(record("npo", "npo-1", 10, "failed", "RuntimeError: worker 1 died scoring b1qa1 ('900123456')",
                          nan_metrics))
    records.append(record("npo", "npo-3", 14, "diverged", "loss became NaN at step 14", nan_metrics))
    pd.DataFrame(records).to_parquet(run / "results.parquet")
    return run


# The console: library noise that must not reach it, and lume-ray's own lines

NOISE_PATTERNS = re.compile(r"\bINFO\b|\bWARNING\b|worker\.py|[Oo]ptuna|A new study|Configuration for experiment|"
                            r"TensorBoard|PYTHON worker processes|\(raylet\)|\(pid=|Ray Data|Started a local Ray|"
                            r"[Dd]eep[Ss]peed|Traceback|╭|│")
OUR_LINE = re.compile(r"^(logs: |\[(sweep|search \w+|ga|npo|gd|unlearn|tracking)\] |\[3/4\]|lume-ray: )")


# The challenge's environment: transformers 4.45.2 (scripts/tf445.sh builds it).

TF4_PYTHON = Path(os.environ.get("LUME_TF4_PYTHON", Path(__file__).resolve().parents[1] / ".cache/tf445/bin/python"))


def tf4_python() -> Path:
    """The transformers 4.45 interpreter; a skip where none is built, a failure under CI (scripts/test.sh builds it)."""
    if not TF4_PYTHON.is_file():
        message = f"no transformers 4.45 environment at {TF4_PYTHON} (bash scripts/tf445.sh; or set LUME_TF4_PYTHON)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return TF4_PYTHON
