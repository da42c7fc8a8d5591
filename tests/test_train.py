"""Unlearning jobs: the job model, DeepSpeed template validation, seeded batches, the LoRA merge (fast, no Ray);
then real Ray Train + DeepSpeed runs of the tiny OLMo on the local cluster (marked ``ray``): a 2-worker ZeRO-3
job, LoRA under ZeRO-3, divergence, and the same job on 1 worker killed mid-run (failed with its reason, then
resumed with more steps from its checkpoint: the 2-worker job's losses).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
import torch

from lume_ray.cli import main
from lume_ray.config import ConfigError, LoraConfig, UnlearnJob, validate
from lume_ray.train import UnlearnResult, read_points, run_unlearning
from lume_ray.train.batches import batch_indices, worker_slice
from lume_ray.train.ds_config import DeepSpeedConfigError, ds_template_path, load_ds_config
from lume_ray.train.loop import go_path, truncate_jsonl
from lume_ray.train.lora import merged_state_dict, peft_config
from tests.helpers import unlearn_job


def _cfg(tmp_path: Path, train: dict[str, Any] | None = None, **kw: Any) -> UnlearnJob:
    base: dict[str, Any] = {"model": "m", "data": "d", "algorithm": "npo", "out": str(tmp_path / "out")}
    return UnlearnJob.model_validate({**base, **kw, "train": train or {}})


# -- the job ------------------------------------------------------------------------------------


def test_job_fills_params_and_checks_every_key(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, {"batch_size": 8, "workers": 2}, params={"beta": "0.2"}, steps=10, eval_steps=[8, 4])
    assert cfg.params == {"beta": 0.2, "alpha": 1.0, "retain_loss": "nll"}
    assert cfg.train.micro_batch == 4 and cfg.train.resolved_precision == "fp32"
    assert cfg.eval_steps == (4, 8, 10)  # sorted, the last step always a point
    assert _cfg(tmp_path, steps=5).eval_steps == (5,)
    assert _cfg(tmp_path, {"gpus_per_worker": 1}).train.resolved_precision == "bf16"
    assert UnlearnJob.model_validate(cfg.model_dump(mode="json")) == cfg  # what the workers receive
    with pytest.raises(Exception, match="frozen"):
        cfg.lr = 1.0  # type: ignore[misc]
    base = {"model": "m", "data": "d", "algorithm": "npo", "out": "o"}
    bad = [
        ({"algorithm": "sgd"}, r"algorithm: unknown algorithm 'sgd' \(valid: "),
        ({"params": {"gamma": 1}}, r"params: npo: unknown parameter 'gamma'"),
        ({"train": {"batch_size": 6, "workers": 4}}, r"train\.batch_size: 6 is not a multiple of workers=4"),
        ({"train": {"zero": 1}}, r"train\.zero: Input should be 0, 2 or 3 \(got 1\)"),
        ({"train": {"offload": True, "zero": 2}}, r"train\.offload: CPU offload needs zero: 3"),
        ({"train": {"precision": "fp16"}}, r"train\.precision: Input should be 'auto', 'fp32' or 'bf16'"),
        ({"lr": 0}, r"lr: Input should be greater than 0 \(got 0\)"),
        ({"steps": 0}, r"steps: Input should be greater than or equal to 1 \(got 0\)"),
        ({"steps": 4, "eval_steps": [2], "wait_steps": [3]},
         r"wait_steps: 3 is not an evaluation point \(eval_steps: \[2, 4\]\)"),
        ({"train": {"lora": {"rank": 8}}}, r"train\.lora\.rank: unknown key \(valid: r, alpha, dropout, target_modules\)"),
        ({"train": {"lora": {"r": 0}}}, r"train\.lora\.r: Input should be greater than or equal to 1 \(got 0\)"),
        ({"beta": 1}, r"beta: unknown key \(valid: model, data, algorithm, params"),
    ]
    for kw, message in bad:
        with pytest.raises(ConfigError, match=rf"^job: {message}"):
            validate(UnlearnJob, {**base, **kw}, "job")


@pytest.mark.usefixtures("no_console")
@pytest.mark.usefixtures("no_input_checks")
def test_job_from_cli_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    """`lume-ray unlearn` builds the job from its generated flags and hands it to run_unlearning as it is."""
    import lume_ray.train

    jobs: list[UnlearnJob] = []

    def fake_run(job: UnlearnJob) -> UnlearnResult:
        jobs.append(job)
        return UnlearnResult("completed", "", [], str(tmp_path / "log"), 0.0, job.steps)

    monkeypatch.setattr(lume_ray.train, "run_unlearning", fake_run)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["unlearn", "--model", "m", "--data", "d", "--algorithm", "npo", "--out", str(tmp_path),
                 "--set", "beta=0.5", "retain_loss=kl", "--lora", "r=4", "--workers", "2", "--batch-size", "4",
                 "--zero", "3", "--precision", "bf16", "--eval-every", "5", "--steps", "20", "--no-trust-remote-code"]) == 0
    job = jobs[-1]
    assert job.params == {"beta": 0.5, "alpha": 1.0, "retain_loss": "kl"}
    assert job.train.lora == LoraConfig(r=4, alpha=16.0, dropout=0.0, target_modules="all-linear")
    assert (job.train.workers, job.train.zero, job.train.precision, job.eval_steps) == (2, 3, "bf16", (5, 10, 15, 20))
    assert (job.steps, job.train.batch_size, job.trust_remote_code) == (20, 4, False)
    out = str(tmp_path / "o")
    assert main(["unlearn", "--model", "m", "--data", "d", "--algorithm", "ga", "--out", out]) == 0
    assert jobs[-1].train.lora is None and jobs[-1] == UnlearnJob(model="m", data="d", algorithm="ga", out=out)
    assert "[unlearn] completed after 60 steps" in capsys.readouterr().out


@pytest.mark.usefixtures("no_console")
def test_cli_rejects_bad_input_before_starting_ray(tmp_path: Path, tiny_lume: Path, capsys: Any,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import lume_ray.local_ray

    def no_ray(**kw: Any) -> Any:
        raise AssertionError("Ray was started")

    monkeypatch.setattr(lume_ray.local_ray, "ray_session", no_ray)
    monkeypatch.setattr(lume_ray.local_ray, "start_local", no_ray)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    common = ["unlearn", "--model", str(tmp_path / "missing"), "--data", str(tiny_lume), "--out", str(tmp_path / "o")]
    assert main([*common, "--algorithm", "npo", "--set", "gamma=1"]) == 2
    assert "lume-ray: error: lume-ray unlearn: --set: npo: unknown parameter 'gamma' (valid: beta, alpha, retain_loss)" \
        in capsys.readouterr().err
    import ray

    if ray.is_initialized():  # another test module's session: run_unlearning would use it, never start one
        pytest.skip("Ray is already running in this process")
    assert main([*common, "--algorithm", "ga"]) == 2
    assert "model path does not exist" in capsys.readouterr().err
    assert main(["unlearn", "--model", str(tmp_path), "--data", str(tmp_path / "nodata"), "--algorithm", "ga",
                 "--out", str(tmp_path / "o")]) == 2
    assert "nodata" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_bad_model_path_as_a_user_sees_it(tmp_path: Path, tiny_lume: Path) -> None:
    """The installed command, console and all: exit 2, one error line naming the path (and the log), no job."""
    import subprocess
    import sys

    out = tmp_path / "o"
    proc = subprocess.run([sys.executable, "-m", "lume_ray.cli", "unlearn", "--model", str(tmp_path / "missing"),
                           "--data", str(tiny_lume), "--algorithm", "ga", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("lume-ray: error:")]
    assert len(errors) == 1 and f"{tmp_path / 'missing'}: model path does not exist" in errors[0], proc.stderr
    assert not (out / "ray").exists() and not (out / "config.json").exists()  # no Ray Train run, no job recorded


def test_preflight_runs_the_algorithms_own_check(tmp_path: Path, tiny_model: Path, tiny_lume: Path) -> None:
    """Before any worker starts, the algorithm's registered check sees the model's config: rmu's layer must exist."""
    from transformers import AutoConfig

    from lume_ray.train.job import preflight

    layers = AutoConfig.from_pretrained(tiny_model).num_hidden_layers
    job = UnlearnJob(model=str(tiny_model), data=str(tiny_lume), algorithm="rmu", params={"layer": layers + 1},
                     out=str(tmp_path / "o"))
    with pytest.raises(ConfigError, match=rf"rmu parameter layer={layers + 1}: the model has {layers} layers "
                       rf"\(valid: 0\.\.{layers}\)"):
        preflight(job)
    preflight(job.model_copy(update={"params": {**job.params, "layer": layers}}))
    preflight(job.model_copy(update={"algorithm": "ga", "params": {}}))  # no check registered: nothing to refuse


# -- DeepSpeed templates --------------------------------------------------------------------------


@pytest.mark.parametrize("zero,offload", [(0, False), (2, False), (3, False), (3, True)])
def test_ds_templates_load_and_fill(tmp_path: Path, zero: int, offload: bool) -> None:
    train = {"zero": zero, "offload": offload, "batch_size": 8, "workers": 2, "precision": "bf16"}
    ds = load_ds_config(_cfg(tmp_path, train, lr=3e-5))
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"]) == (8, 4)
    assert ds["optimizer"]["params"]["lr"] == 3e-5 and ds["optimizer"]["params"]["torch_adam"] is True
    assert ds["bf16"]["enabled"] is True and ds["zero_optimization"]["stage"] == zero
    assert "auto" not in json.dumps(ds)
    if zero == 3:
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    if offload:
        assert ds["zero_optimization"]["offload_param"] == {"device": "cpu", "pin_memory": False}
    gpu = load_ds_config(_cfg(tmp_path, {"zero": zero, "offload": offload, "gpus_per_worker": 1}))
    assert gpu["optimizer"]["params"]["torch_adam"] is (not offload) and gpu["bf16"]["enabled"] is True


def test_ds_template_validation(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, {"zero": 3})
    template = json.loads(ds_template_path(3, False).read_text())

    def check(mutate: Any, message: str) -> None:
        t = copy.deepcopy(template)
        mutate(t)
        path = tmp_path / "ds.json"
        path.write_text(json.dumps(t))
        with pytest.raises(DeepSpeedConfigError, match=message):
            load_ds_config(cfg, path)

    check(lambda t: t.update(gradient_clippin=1.0), r"unknown key 'gradient_clippin' \(valid: ")
    check(lambda t: t["zero_optimization"].update(stage3_bogus=1), "zero_optimization: stage3_bogus")
    check(lambda t: t.update(steps_per_print="auto"), "steps_per_print='auto' has no value")
    check(lambda t: t["zero_optimization"].update(stage=2), "stage=2 but zero=3")
    check(lambda t: t.update(train_batch_size=64), "batch sizes must be 'auto'")
    check(lambda t: t.update(fp16={"enabled": True}), "fp16 is not supported")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(DeepSpeedConfigError, match="malformed JSON"):
        load_ds_config(cfg, tmp_path / "bad.json")
    assert issubclass(DeepSpeedConfigError, ConfigError)  # a one-line CLI error, exit 2


# -- seeded, paired batches ----------------------------------------------------------------------


def test_batches_are_seeded_epochs_and_split_evenly_over_workers() -> None:
    first = [batch_indices(10, 4, step, seed=0, stream=0) for step in (1, 2, 3, 4, 5)]
    assert first == [batch_indices(10, 4, step, seed=0, stream=0) for step in (1, 2, 3, 4, 5)]
    flat = [i for b in first for i in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))  # epochs
    assert flat != [i for s in range(1, 6) for i in batch_indices(10, 4, s, seed=1, stream=0)]
    assert batch_indices(10, 4, 1, seed=0, stream=0) != batch_indices(10, 4, 1, seed=0, stream=1)
    glob = batch_indices(7, 6, 3, seed=2, stream=1)
    assert worker_slice(glob, 0, 2) + worker_slice(glob, 1, 2) == glob
    assert worker_slice(glob, 0, 1) == glob


def test_jsonl_truncate_keeps_steps_up_to_the_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3, 4)))
    truncate_jsonl(path, 2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    truncate_jsonl(tmp_path / "missing.jsonl", 2)  # nothing to truncate: no error, no file
    assert not (tmp_path / "missing.jsonl").exists()


def test_merged_lora_state_dict_equals_peft_merge(tiny_model: Path) -> None:
    """The saved weights of a LoRA job: the gathered PEFT state dict merged by PEFT's own merge_and_unload."""
    from peft import get_peft_model

    from lume_ray.model import load_model

    model, _ = load_model(tiny_model)
    lora = LoraConfig(r=4, alpha=8)
    peft_model = get_peft_model(model, peft_config(lora))
    torch.manual_seed(0)
    with torch.no_grad():  # LoRA B starts at zero: give the adapter a non-trivial value
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    state = {k: v.clone() for k, v in peft_model.state_dict().items()}  # what save_16bit_model hands over
    merged = merged_state_dict(peft_model.base_model.model.config, lora, state)
    reference = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    assert set(merged) == set(reference)
    for key, value in reference.items():
        torch.testing.assert_close(merged[key], value)
    assert any(not torch.equal(merged[k], v) for k, v in load_model(tiny_model)[0].state_dict().items())
    with pytest.raises(RuntimeError, match="does not fit the PEFT model"):
        merged_state_dict(peft_model.base_model.model.config, LoraConfig(r=4, target_modules="q_proj"), state)


# -- real jobs on the local Ray cluster ------------------------------------------------------------


def _log(result: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(result.log_path).read_text().splitlines()]


def _with(job: UnlearnJob, train: dict[str, Any] | None = None, **kw: Any) -> UnlearnJob:
    """``job`` with some fields changed, validated again."""
    return UnlearnJob.model_validate({**job.model_dump(), **kw, "train": {**job.train.model_dump(), **(train or {})}})


@pytest.mark.ray
def test_two_worker_zero3_job_writes_points_logs_and_loadable_models(
        two_worker_run: tuple[UnlearnJob, Any], tiny_model: Path, tiny_lume: Path) -> None:
    from lume_ray.algorithms import mean_nll
    from lume_ray.data import load_lume
    from lume_ray.model import collate, encode_pair, load_model

    cfg, res = two_worker_run
    assert (res.status, res.reason, res.steps_done, res.resumed_from) == ("completed", "", 4, 0)
    assert [p.step for p in res.points] == [2, 4] and read_points(cfg.out) == res.points
    log = _log(res)
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all({"loss", "forget_loss", "retain_loss", "lr", "wall_s"} <= set(r) for r in log)
    assert log[0]["npo_forget"] == pytest.approx(2 * 0.6931471805599453 / 0.1, rel=1e-5)  # model == ref at step 1
    base, _ = load_model(tiny_model)
    forget = load_lume(tiny_lume).forget
    for point in res.points:
        assert Path(point.model_dir) == Path(cfg.out) / "points" / f"step_{point.step:06d}"
        model, tok = load_model(point.model_dir)  # gathered ZeRO-3 weights (save_16bit_model) + tokenizer
        assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), base.state_dict().values(),
                                                           strict=True))
        # The saved weights are the trained ones: their forget NLL is the loss the job reported.
        batch = collate([encode_pair(tok, r.input, r.output, add_eos=True) for r in forget], tok.pad_token_id)
        with torch.no_grad():
            assert mean_nll(model, batch).mean().item() == pytest.approx(point.forget_loss, rel=1e-5)
    assert json.loads((Path(cfg.out) / "result.json").read_text())["status"] == "completed"
    assert json.loads((Path(cfg.out) / "config.json").read_text()) == cfg.model_dump(mode="json")
    ranks = sorted(p.name for p in (Path(cfg.out) / "workers").iterdir())
    assert ranks == ["rank0.json", "rank1.json"]


@pytest.mark.ray
def test_lora_job_under_zero3_trains_the_adapter_and_saves_merged_weights(
        ray_local: Any, tiny_model: Path, tiny_lume: Path, tmp_path: Path) -> None:
    from lume_ray.model import load_model

    # ZeRO-3 on one worker: the LoRA merge runs on gathered shards; NPO's reference is the adapter switched off.
    cfg = unlearn_job(tmp_path, tiny_model, tiny_lume, "lora", {"workers": 1, "zero": 3, "lora": {"r": 4, "alpha": 8}},
               steps=2, eval_steps=[1], lr=1e-2)
    res = run_unlearning(cfg)
    assert (res.status, [p.step for p in res.points]) == ("completed", [1, 2])
    assert _log(res)[0]["log_ratio"] == 0.0  # step 1: adapter off == adapter on (B starts at zero)
    base, _ = load_model(tiny_model)
    merged, _ = load_model(res.points[-1].model_dir)  # a plain model: no LoRA keys left
    assert set(merged.state_dict()) == set(base.state_dict())
    changed = {k for k, v in merged.state_dict().items() if not torch.equal(v, base.state_dict()[k])}
    assert changed and all(k.endswith("proj.weight") for k in changed)  # only LoRA-adapted linears moved
    assert "model.embed_tokens.weight" not in changed
    first, _ = load_model(res.points[0].model_dir)
    assert any(not torch.equal(v, merged.state_dict()[k]) for k, v in first.state_dict().items())  # step 2 moved on


@pytest.mark.usefixtures("no_console")
@pytest.mark.ray
def test_divergence_stops_every_rank_with_a_status(
        ray_local: Any, tiny_model: Path, tiny_lume: Path, tmp_path: Path, capsys: Any) -> None:
    # A huge learning rate makes gradient ascent produce NaN logits at step 2.
    cfg = unlearn_job(tmp_path, tiny_model, tiny_lume, "div", {"workers": 2, "zero": 2}, algorithm="ga", lr=1e6, steps=6)
    res = run_unlearning(cfg)
    assert res.status == "diverged" and res.steps_done == 1
    assert res.reason == "non-finite loss (nan) at step 2"
    assert res.points == []
    assert _log(res)[-1] == {"step": 2, "loss": pytest.approx(float("nan"), nan_ok=True), "status": "diverged"}
    # The same command again reports the verdict without training again.
    args = ["unlearn", "--model", cfg.model, "--data", cfg.data, "--algorithm", "ga", "--lr", "1e6", "--steps", "6",
            "--batch-size", "4", "--workers", "2", "--zero", "2", "--out", cfg.out]
    capsys.readouterr()
    assert main(args) == 0
    assert "diverged: non-finite loss (nan) at step 2 after 1 steps" in capsys.readouterr().out


@pytest.mark.ray
def test_killed_worker_fails_the_job_with_its_reason_and_a_rerun_resumes(
        two_worker_run: tuple[UnlearnJob, Any], tmp_path: Path) -> None:
    """The same job on one worker, its worker SIGKILLed after its first checkpoint: the job ends "failed" with a
    reason (never "running", never an exception) and keeps the point it saved; the same job again, with more steps,
    resumes from that checkpoint, and its losses are the uninterrupted two-worker job's (optimizer state and
    sampler position came back; one worker computes what two did); once complete, a re-run is the stored result."""
    cfg2, res2 = two_worker_run
    two = [r["loss"] for r in _log(res2)]
    cfg = _with(cfg2, {"workers": 1}, steps=5000, eval_steps=[2], out=str(tmp_path / "killed"))
    out = Path(cfg.out)
    killed: list[int] = []

    def killer() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            log, pid_file = out / "train_log.jsonl", out / "workers" / "rank0.json"
            steps = [json.loads(line).get("step", 0) for line in log.read_text().splitlines()] if log.exists() else []
            if steps and max(steps) >= 4 and pid_file.is_file():
                pid = json.loads(pid_file.read_text())["pid"]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    res = run_unlearning(cfg)
    thread.join(timeout=5)
    assert killed, "the worker was never killed"
    assert res.status == "failed" and res.reason.startswith("worker rank 0 died ("), res.reason
    assert 4 <= res.steps_done < cfg.steps and [p.step for p in res.points] == [2]
    assert json.loads((out / "result.json").read_text())["status"] == "failed"
    assert [r["loss"] for r in _log(res)][:2] == pytest.approx(two[:2], rel=1e-5)  # 1 worker == 2 workers
    # The same out again (4 steps now): resumed from the step-2 checkpoint, the lost steps dropped and redone;
    # step 2 is now a point to wait at (early stopping's rung) that was never judged: the job holds there, alive,
    # until the go-ahead file appears (written here once the job says it waits, and 2 s of it saw no step 3).
    go = go_path(out, 2)
    held: list[int] = []

    def go_ahead() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and not go.with_suffix(".waiting").is_file():
            time.sleep(0.05)
        time.sleep(2)
        held.append(max(json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()))
        go.touch()

    thread = threading.Thread(target=go_ahead, daemon=True)
    thread.start()
    resumed = run_unlearning(_with(cfg, steps=4, eval_steps=[2], wait_steps=[2]))
    thread.join(timeout=5)
    assert held == [2], "the job trained past the step it was told to wait at"
    assert [r["time"] for r in _log(resumed) if r["step"] == 3][0] > go.stat().st_mtime
    assert (resumed.status, resumed.steps_done, resumed.resumed_from) == ("completed", 4, 2)
    assert [r["step"] for r in _log(resumed)] == [1, 2, 3, 4]
    assert [r["loss"] for r in _log(resumed)] == pytest.approx(two, rel=1e-5)
    assert [p.step for p in resumed.points] == [2, 4]
    assert resumed.points[-1].forget_loss == pytest.approx(res2.points[-1].forget_loss, rel=1e-5)
    again = run_unlearning(_with(cfg, steps=4, eval_steps=[2]))  # nothing more to train: no Ray Train run
    assert (again.status, again.steps_done, again.points, again.wall_s) == ("completed", 4, resumed.points, 0.0)
    with pytest.raises(ConfigError, match=r"holds a job with lr=0.001, not 0.002: use another out"):
        run_unlearning(_with(cfg, lr=2e-3))


@pytest.mark.usefixtures("no_console")
@pytest.mark.usefixtures("no_input_checks")
def test_cli_uses_a_given_cluster_address(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--address connects first (the job then runs there); without it no Ray is started by the CLI itself."""
    import lume_ray.local_ray
    import lume_ray.train

    sessions: list[dict[str, Any]] = []
    monkeypatch.setattr(lume_ray.local_ray, "ray_session", lambda **kw: sessions.append(kw) or nullcontext())
    monkeypatch.setattr(lume_ray.train, "run_unlearning",
                        lambda job: UnlearnResult("completed", "", [], "log", 0.0, job.steps))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    argv = ["unlearn", "--model", "m", "--data", "d", "--algorithm", "ga", "--out", str(tmp_path / "o")]
    assert main(argv) == 0 and sessions == []
    assert main([*argv, "--address", "ray://head:10001"]) == 0
    assert sessions == [{"address": "ray://head:10001", "log_to_driver": True}]
