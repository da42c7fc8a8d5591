"""`lume-ray export`: a point of the session's tiny sweep (conftest's ``finished_sweep``) as a standalone model.

Real parts: the sweep's run directory; for a deleted point, the trial re-run to its step by Ray Train + DeepSpeed
and scored by the sweep's evaluation pool; the exported directory loaded by transformers. The kept-point test
puts a model directory where a sweep with ``keep_models: true`` leaves it, in a copy of the run directory.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from lume_ray.cli import main
from lume_ray.evaluate.metrics import METRICS
from lume_ray.evaluate.protocol import TASK_SCORE_NAMES
from lume_ray.export import Exported, export_point, select
from lume_ray.run_dir import STEP_DIR
from tests.helpers import TF4_PYTHON


def _points(run: Path) -> pd.DataFrame:
    frame = pd.read_parquet(run / "results.parquet")
    return frame[frame["status"] == "ok"].sort_values(["algorithm", "trial_id", "step"]).reset_index(drop=True)


def _front_matter(text: str) -> dict[str, Any]:
    assert text.startswith("---\n"), text[:80]
    meta, _, _ = text[4:].partition("\n---\n")
    out = yaml.safe_load(meta)
    assert isinstance(out, dict)
    return out


@pytest.fixture(scope="module")
def rerun_export(finished_sweep: Path, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """The npo trial's first point (deleted by the sweep, keep_models: false), exported by re-running it."""
    row = _points(finished_sweep).query("algorithm == 'npo'").iloc[0]
    out = tmp_path_factory.mktemp("export") / "npo-model"
    return export_point(finished_sweep, out, point=f"{row['trial_id']}@{int(row['step'])}")


@pytest.mark.ray
def test_deleted_point_is_rerun_and_scores_identically_on_cpu(rerun_export: Exported, finished_sweep: Path) -> None:
    done = rerun_export
    p = done.point
    assert not p.kept and not p.model_dir.exists()  # the sweep deleted it
    assert done.rerun is not None and done.rerun.tolerance == 0.0
    recorded = json.loads((finished_sweep / "trials" / p.trial_id / STEP_DIR.format(p.step) / "metrics.json").read_text())
    for name in METRICS:  # every registered metric, exactly (CPU, float32)
        assert done.rerun.metrics.get(name) == recorded.get(name), name
    assert done.rerun.compared == sum(recorded.get(n) is not None for n in METRICS) >= len(TASK_SCORE_NAMES)
    assert done.rerun.sentence(p) == (f"re-ran trial {p.trial_id} to step {p.step}: {done.rerun.compared} metrics "
                                      "equal the recorded ones")
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "README.md"} <= set(done.files)
    assert sorted(x.name for x in done.out.parent.iterdir()) == [done.out.name]  # no temporary left beside it


@pytest.mark.ray
def test_exported_model_loads_and_its_card_parses(rerun_export: Exported, finished_sweep: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    done, p = rerun_export, rerun_export.point
    model = AutoModelForCausalLM.from_pretrained(done.out)
    tok = AutoTokenizer.from_pretrained(done.out)
    ids = tok("In the town of Velmor,", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape[-1] == model.config.vocab_size
    if TF4_PYTHON.is_file():  # the challenge's pin loads it too, to the same token ids and logits
        script = ("import json, sys, torch; from transformers import AutoModelForCausalLM, AutoTokenizer, __version__;"
                  "m = AutoModelForCausalLM.from_pretrained(sys.argv[1]); t = AutoTokenizer.from_pretrained(sys.argv[1]);"
                  "ids = t(sys.argv[2], return_tensors='pt')['input_ids'];"
                  "print(json.dumps([__version__, ids.tolist(), m(input_ids=ids).logits.sum().item()]))")
        proc = subprocess.run([str(TF4_PYTHON), "-c", script, str(done.out), "In the town of Velmor,"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        version, ids4, total = json.loads(proc.stdout.strip().splitlines()[-1])
        assert version.startswith("4.45") and ids4 == ids.tolist()
        assert total == pytest.approx(float(logits.sum()), abs=1e-4)

    text = (done.out / "README.md").read_text()
    meta = _front_matter(text)
    study = json.loads((finished_sweep / "study.json").read_text())
    assert meta["base_model"] == study["model"] and meta["library_name"] == "transformers"
    assert meta["tags"] == ["unlearning", "lume", "npo"] and meta["datasets"] == [study["data"]]
    [entry] = meta["model-index"]
    values = {r["metrics"][0]["name"].split(" ")[0]: r["metrics"][0]["value"] for r in entry["results"]}
    for r in entry["results"]:
        assert set(r) == {"task", "dataset", "metrics"} and r["task"]["type"] and r["dataset"]["name"]
    recorded = p.metrics
    for name in TASK_SCORE_NAMES:
        assert values[name] == pytest.approx(recorded[name], abs=1e-6)
    for name in ("mia_score", "utility", "final_score"):  # the tiny data has neither non-members nor a utility set
        assert (name in values) == (recorded.get(name) is not None)
    for section in ("## What was forgotten", "## Setting", "## Scores against the model before unlearning",
                    "## Provenance", "## Reproduce"):
        assert section in text
    hp = p.hp
    assert f"| learning rate | {hp['lr']:g} (constant) |" in text and f"| parameter beta | {hp['beta']} |" in text
    assert "| ZeRO stage | 0 |" in text and "| workers (DeepSpeed ranks) | 1 |" in text
    assert f"re-ran trial {p.trial_id} to step {p.step}" in text
    assert study["git_commit"] in text and "forget.jsonl" in text and "model.safetensors" in text
    assert f"lume-ray unlearn --model {study['model']}" in text and f"--steps {p.step}" in text


@pytest.mark.ray
def test_kept_point_is_copied_bit_for_bit(rerun_export: Exported, finished_sweep: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A run whose point model is on disk (sweep.keep_models: true): its files are copied, tensors unchanged."""
    from safetensors.torch import load_file

    run = tmp_path / "run"
    shutil.copytree(finished_sweep, run, ignore=shutil.ignore_patterns("tune", "ray", "mlruns"))
    p = rerun_export.point
    kept = run / "trials" / p.trial_id / "train" / "points" / STEP_DIR.format(p.step)
    shutil.copytree(rerun_export.out, kept, ignore=shutil.ignore_patterns("README.md"))
    out = tmp_path / "exported"
    assert main(["export", str(run), "--point", p.label, "--out", str(out)]) == 0
    assert f"exported {p.label} (npo) to {out}" in capsys.readouterr().out
    for f in kept.iterdir():
        assert (out / f.name).read_bytes() == f.read_bytes(), f.name
    a, b = load_file(kept / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].equal(b[k]) for k in a)
    assert "copied from the kept point" in (out / "README.md").read_text()


@pytest.mark.ray
def test_best_is_the_reports_answer(finished_sweep: Path) -> None:
    from lume_ray.report import analyze, load_run

    run = load_run(finished_sweep)
    a = analyze(run)
    for algorithm in ("ga", "npo"):
        row = a.table.loc[a.best[algorithm]]
        chosen = select(finished_sweep, best=algorithm)
        assert (chosen.trial_id, chosen.step) == (row["trial_id"], int(row["step"]))
        assert a.rank_metric in chosen.how
    points = _points(finished_sweep).query("algorithm == 'ga'")
    by = select(finished_sweep, best="ga", by="forget_nll")  # "max": the most forgotten
    top = points.loc[points["forget_nll"].idxmax()]
    assert (by.trial_id, by.step) == (top["trial_id"], int(top["step"]))


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("lume-ray: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.ray
def test_bad_input_is_one_line_and_writes_nothing(finished_sweep: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    points = _points(finished_sweep)
    trial = str(points["trial_id"].iloc[0])
    steps = ", ".join(str(s) for s in points.loc[points["trial_id"] == trial, "step"])
    out = tmp_path / "out"
    run = str(finished_sweep)

    err = _error(["export", run, "--point", "nosuch@2", "--out", str(out)], capsys)
    assert "no trial 'nosuch'" in err and all(f"{t}@" in err for t in points["trial_id"])
    err = _error(["export", run, "--point", f"{trial}@3", "--out", str(out)], capsys)
    assert f"trial {trial} was not evaluated at step 3 (its evaluated steps: {steps})" in err
    assert "expected TRIAL_ID@STEP" in _error(["export", run, "--point", trial, "--out", str(out)], capsys)
    assert "results.parquet not found" in _error(["export", str(tmp_path), "--point", "x@1", "--out", str(out)],
                                                 capsys)
    err = _error(["export", run, "--best", "npo", "--floor", "forget_nll=100", "--out", str(out)], capsys)
    assert "--best npo: no feasible point (floor: forget_nll ≥ 100 × base" in err and "--point" in err
    assert "no trial of 'rmu'" in _error(["export", run, "--best", "rmu", "--out", str(out)], capsys)
    assert "unknown metric 'nosuch'" in _error(["export", run, "--best", "ga", "--by", "nosuch", "--out", str(out)],
                                               capsys)
    assert "--point names it already" in _error(["export", run, "--point", f"{trial}@2", "--by", "utility",
                                                 "--out", str(out)], capsys)
    assert not out.exists()
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    assert "exists and is not an empty directory" in _error(["export", run, "--point", f"{trial}@2", "--out", str(full)], capsys)
    assert [x.name for x in full.iterdir()] == ["keep.txt"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["full"]


def test_compare_names_every_differing_metric() -> None:
    from lume_ray.export.rerun import compare

    recorded = {"forget/Task1/sc": 0.5, "forget_nll": 2.0, "utility": None, "utility_floor_met": True}
    assert compare(recorded, dict(recorded), 0.0) == (3, [])
    rerun = {**recorded, "forget/Task1/sc": 0.25, "forget_nll": 2.0005, "utility_floor_met": False}
    assert compare(recorded, rerun, 0.0) == (0, ["forget/Task1/sc recorded 0.5, re-run 0.25",
                                                 "forget_nll recorded 2.0, re-run 2.0005",
                                                 "utility_floor_met recorded True, re-run False"])
    assert compare(recorded, rerun, 1e-3)[1] == ["forget/Task1/sc recorded 0.5, re-run 0.25",
                                                 "utility_floor_met recorded True, re-run False"]


@pytest.mark.ray
def test_a_rerun_that_differs_fails_in_one_line_and_writes_nothing(
        finished_sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from contextlib import nullcontext

    import lume_ray.console
    import lume_ray.export
    from lume_ray.export import RerunMismatch

    seen: list[Path] = []

    def differs(point: Any, work: Path, **kw: Any) -> Any:
        seen.append(work)
        assert work.is_dir() and work.parent == tmp_path
        raise RerunMismatch(f"re-run of trial {point.trial_id} to step {point.step} differs from the recorded "
                            "metrics (tolerance 0): forget_nll recorded 6.1, re-run 6.2")

    monkeypatch.setattr(lume_ray.export, "rerun_point", differs)
    # The quiet console repoints file descriptors 1 and 2, which pytest's capture does not survive (conftest).
    monkeypatch.setattr(lume_ray.console, "quiet", lambda *args, **kw: nullcontext())
    row = _points(finished_sweep).iloc[0]
    out = tmp_path / "out"
    argv = ["export", str(finished_sweep), "--point", f"{row['trial_id']}@{int(row['step'])}", "--out", str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("lume-ray: error: re-run of trial") and "forget_nll recorded 6.1, re-run 6.2" in err, err
    assert list(tmp_path.iterdir()) == [] and len(seen) == 1  # neither DIR nor the re-run's directory is left


def test_a_mistyped_trial_id_names_the_nearest_ones() -> None:
    from lume_ray.config import ConfigError
    from lume_ray.export.select import edit_distance, parse_point

    assert edit_distance("kitten", "sitting") == 3 and edit_distance("", "abc") == 3 and edit_distance("ab", "ab") == 0
    points = {f"{i:02d}aa{i:04d}": [10, 20] for i in range(12)}
    assert parse_point("03aa0003@20", points) == ("03aa0003", 20)
    with pytest.raises(ConfigError, match=r"no trial '03aa003' in this run \(12 trials; nearest: 03aa0003 "
                                          r"\(steps 10, 20\), "):
        parse_point("03aa003@20", points)
