"""Unlearning jobs: config and DeepSpeed template validation, seeded batches, LoRA merging (fast, no Ray);
then real Ray Train + DeepSpeed runs of the tiny OLMo on the local cluster (marked ``ray``): a 2-worker
ZeRO-3 job, the same job on 1 worker (same losses), resume after an interruption, LoRA, divergence.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from lume_ray.cli import build_parser, main
from lume_ray.config import ConfigError, UnlearnConfig
from lume_ray.train import (
    DeepSpeedConfigError,
    _jsonl_truncate,
    batch_indices,
    ds_template_path,
    load_ds_config,
    merge_lora_state_dict,
    run_unlearning,
    worker_slice,
)


def _cfg(tmp_path: Path, **kw: Any) -> UnlearnConfig:
    base: dict[str, Any] = {"model": "m", "data": "d", "algorithm": "npo", "out": str(tmp_path / "out")}
    return UnlearnConfig(**{**base, **kw})


# -- config -------------------------------------------------------------------------------------


def test_config_fills_params_and_checks_every_key(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, params={"beta": "0.2"}, batch_size=8, workers=2, steps=10, eval_every=4)
    assert cfg.params == {"beta": 0.2, "alpha": 1.0, "retain_loss": "nll"}
    assert cfg.micro_batch == 4 and cfg.resolved_precision == "fp32"
    assert cfg.eval_steps() == [4, 8, 10]
    assert _cfg(tmp_path, steps=5).eval_steps() == [5]
    assert _cfg(tmp_path, use_gpu=True).resolved_precision == "bf16"
    assert UnlearnConfig.from_dict(cfg.to_dict()) == cfg
    bad = [
        ({"algorithm": "sgd"}, r"unknown algorithm 'sgd' \(valid: "),
        ({"params": {"gamma": 1}}, "unknown parameter 'gamma'"),
        ({"batch_size": 6, "workers": 4}, "divisible by workers=4"),
        ({"zero": 1}, r"zero=1: valid: 0, 2, 3"),
        ({"offload": True, "zero": 2}, "offload needs zero=3"),
        ({"precision": "fp16"}, "valid: auto, fp32, bf16"),
        ({"lr": 0}, "lr=0: must be"),
        ({"steps": 0}, "steps=0: must be an integer >= 1"),
        ({"lora": {"rank": 8}}, r"lora: unknown key 'rank' \(valid: r, alpha, dropout, target_modules\)"),
        ({"lora": {"r": 0}}, "lora: r=0 must be an integer >= 1"),
    ]
    for kw, message in bad:
        with pytest.raises(ConfigError, match=message):
            _cfg(tmp_path, **kw)
    with pytest.raises(ConfigError, match="unknown unlearn key 'beta'"):
        UnlearnConfig.from_dict({**cfg.to_dict(), "beta": 1})


def test_config_from_cli_arguments(tmp_path: Path) -> None:
    args = build_parser().parse_args([
        "unlearn", "--model", "m", "--data", "d", "--algorithm", "npo", "--out", str(tmp_path),
        "--set", "beta=0.5", "retain_loss=kl", "--lora", "r=4", "--workers", "2", "--batch-size", "4",
        "--zero", "3", "--precision", "bf16", "--eval-every", "5", "--steps", "20"])
    cfg = UnlearnConfig.from_args(args)
    assert cfg.params == {"beta": 0.5, "alpha": 1.0, "retain_loss": "kl"}
    assert cfg.lora == {"r": 4, "alpha": 16.0, "dropout": 0.0, "target_modules": "all-linear"}
    assert (cfg.workers, cfg.zero, cfg.precision, cfg.eval_steps()) == (2, 3, "bf16", [5, 10, 15, 20])
    assert UnlearnConfig.from_args(build_parser().parse_args(
        ["unlearn", "--model", "m", "--data", "d", "--algorithm", "ga", "--out", "o"])).lora is None


def test_cli_rejects_bad_input_before_starting_ray(tmp_path: Path, tiny_lume: Path, capsys: Any) -> None:
    common = ["unlearn", "--model", str(tmp_path / "missing"), "--data", str(tiny_lume), "--out", str(tmp_path / "o")]
    assert main([*common, "--algorithm", "npo", "--set", "gamma=1"]) == 2
    assert "lume-ray: error: npo: unknown parameter 'gamma' (valid: beta, alpha, retain_loss)" in capsys.readouterr().err
    assert main([*common, "--algorithm", "ga"]) == 2
    assert "model path does not exist" in capsys.readouterr().err


# -- DeepSpeed templates --------------------------------------------------------------------------


@pytest.mark.parametrize("zero,offload", [(0, False), (2, False), (3, False), (3, True)])
def test_ds_templates_load_and_fill(tmp_path: Path, zero: int, offload: bool) -> None:
    cfg = _cfg(tmp_path, zero=zero, offload=offload, batch_size=8, workers=2, lr=3e-5, precision="bf16")
    ds = load_ds_config(cfg)
    assert (ds["train_batch_size"], ds["train_micro_batch_size_per_gpu"]) == (8, 4)
    assert ds["optimizer"]["params"]["lr"] == 3e-5 and ds["optimizer"]["params"]["torch_adam"] is True
    assert ds["bf16"]["enabled"] is True and ds["zero_optimization"]["stage"] == zero
    assert "auto" not in json.dumps(ds)
    if zero == 3:
        assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    if offload:
        assert ds["zero_optimization"]["offload_param"] == {"device": "cpu", "pin_memory": False}
    gpu = load_ds_config(_cfg(tmp_path, zero=zero, offload=offload, use_gpu=True))
    assert gpu["optimizer"]["params"]["torch_adam"] is (not offload) and gpu["bf16"]["enabled"] is True


def test_ds_template_validation(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, zero=3)
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
    _jsonl_truncate(path, 2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]


def test_merged_lora_state_dict_equals_peft_merge(tiny_model: Path) -> None:
    from peft import LoraConfig, get_peft_model

    from lume_ray.model import load_model

    model, _ = load_model(tiny_model)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    torch.manual_seed(0)
    with torch.no_grad():  # LoRA B starts at zero: give the adapter a non-trivial value
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    merged = merge_lora_state_dict(peft_model.state_dict(), scaling=8 / 4)
    reference = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    assert set(merged) == set(reference)
    for key, value in reference.items():
        torch.testing.assert_close(merged[key], value)


# -- real jobs on the local Ray cluster ------------------------------------------------------------


def _log(result: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(result.log_path).read_text().splitlines()]


def _job(tmp_path: Path, model: Path, data: Path, name: str, **kw: Any) -> UnlearnConfig:
    base: dict[str, Any] = {"model": str(model), "data": str(data), "algorithm": "npo", "lr": 1e-3, "steps": 4,
                            "eval_every": 2, "batch_size": 4, "workers": 2, "zero": 3, "seed": 0,
                            "out": str(tmp_path / name)}
    return UnlearnConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def two_worker_run(ray_local: Any, tiny_model: Path, tiny_lume: Path, tmp_path_factory: pytest.TempPathFactory
                   ) -> tuple[UnlearnConfig, Any]:
    cfg = _job(tmp_path_factory.mktemp("unlearn"), tiny_model, tiny_lume, "zero3x2")
    return cfg, run_unlearning(cfg)


@pytest.mark.ray
def test_two_worker_zero3_job_writes_points_logs_and_loadable_models(
        two_worker_run: tuple[UnlearnConfig, Any], tiny_model: Path, tiny_lume: Path) -> None:
    from lume_ray.algorithms import mean_nll
    from lume_ray.data import load_lume
    from lume_ray.model import collate, encode_pair, load_model

    cfg, res = two_worker_run
    assert (res.status, res.reason, res.steps_done, res.resumed_from) == ("completed", "", 4, 0)
    assert [p.step for p in res.points] == [2, 4]
    log = _log(res)
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    assert all({"loss", "forget_loss", "retain_loss", "lr", "wall_s"} <= set(r) for r in log)
    assert log[0]["npo_forget"] == pytest.approx(2 * 0.6931471805599453 / 0.1, rel=1e-5)  # model == ref at step 1
    base, _ = load_model(tiny_model)
    forget = load_lume(tiny_lume).forget
    for point in res.points:
        assert Path(point.model_dir) == Path(cfg.out) / "points" / f"step_{point.step:06d}"
        model, tok = load_model(point.model_dir)  # gathered ZeRO-3 weights + tokenizer
        assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), base.state_dict().values(),
                                                           strict=True))
        # The saved weights are the trained ones: their forget NLL is the loss the job reported.
        batch = collate([encode_pair(tok, r.input, r.output, add_eos=True) for r in forget], tok.pad_token_id)
        with torch.no_grad():
            assert mean_nll(model, batch).mean().item() == pytest.approx(point.forget_loss, rel=1e-5)
    assert json.loads((Path(cfg.out) / "result.json").read_text())["status"] == "completed"


@pytest.mark.ray
def test_one_worker_gives_the_same_losses_and_resumes_where_it_stopped(
        two_worker_run: tuple[UnlearnConfig, Any], tmp_path: Path) -> None:
    cfg2, res2 = two_worker_run
    two = [r["loss"] for r in _log(res2)]
    cfg1 = UnlearnConfig.from_dict({**cfg2.to_dict(), "workers": 1, "steps": 2, "out": str(tmp_path / "one")})
    first = run_unlearning(cfg1)  # "interrupted" after step 2 (its last checkpoint)
    assert (first.status, first.steps_done) == ("completed", 2)
    assert [r["loss"] for r in _log(first)] == pytest.approx(two[:2], rel=1e-5)
    resumed = run_unlearning(UnlearnConfig.from_dict({**cfg1.to_dict(), "steps": 4}))
    assert (resumed.status, resumed.steps_done, resumed.resumed_from) == ("completed", 4, 2)
    log = _log(resumed)
    assert [r["step"] for r in log] == [1, 2, 3, 4]  # steps 1-2 from the first run, 3-4 appended
    # Optimizer state and sampler position came back: steps 3-4 match the uninterrupted 2-worker job.
    assert [r["loss"] for r in log] == pytest.approx(two, rel=1e-5)
    assert [p.step for p in resumed.points] == [2, 4]
    assert resumed.points[-1].forget_loss == pytest.approx(res2.points[-1].forget_loss, rel=1e-5)
    with pytest.raises(ConfigError, match=r"holds a job with lr=0.001, not 0.002: use another out"):
        run_unlearning(UnlearnConfig.from_dict({**cfg1.to_dict(), "lr": 2e-3}))


@pytest.mark.ray
def test_lora_job_trains_the_adapter_and_saves_merged_weights(
        ray_local: Any, tiny_model: Path, tiny_lume: Path, tmp_path: Path) -> None:
    from lume_ray.model import load_model

    # ZeRO-3 on one worker: the LoRA merge runs on gathered shards; NPO's reference is the adapter switched off.
    cfg = _job(tmp_path, tiny_model, tiny_lume, "lora", workers=1, zero=3, steps=2, eval_every=1, lr=1e-2,
               lora={"r": 4, "alpha": 8})
    res = run_unlearning(cfg)
    assert (res.status, [p.step for p in res.points]) == ("completed", [1, 2])
    assert _log(res)[0]["log_ratio"] == 0.0  # step 1: adapter off == adapter on (B starts at zero)
    base, _ = load_model(tiny_model)
    merged, _ = load_model(res.points[-1].model_dir)  # a plain model: no LoRA keys left
    assert set(merged.state_dict()) == set(base.state_dict())
    changed = {k for k, v in merged.state_dict().items() if not torch.equal(v, base.state_dict()[k])}
    assert changed and all(k.endswith("proj.weight") for k in changed)  # only LoRA-adapted linears moved
    assert "model.embed_tokens.weight" not in changed


@pytest.mark.ray
def test_divergence_stops_every_rank_with_a_status(
        ray_local: Any, tiny_model: Path, tiny_lume: Path, tmp_path: Path, capsys: Any) -> None:
    # A huge learning rate makes gradient ascent produce NaN logits at step 2.
    cfg = _job(tmp_path, tiny_model, tiny_lume, "div", algorithm="ga", lr=1e6, steps=6, workers=2, zero=2)
    res = run_unlearning(cfg)
    assert res.status == "diverged" and res.steps_done == 1
    assert res.reason == "non-finite loss (nan) at step 2"
    assert res.points == []
    assert _log(res)[-1] == {"step": 2, "loss": pytest.approx(float("nan"), nan_ok=True), "status": "diverged"}
    # The same command again reports the verdict without training again (no Ray needed for that).
    args = ["unlearn", "--model", cfg.model, "--data", cfg.data, "--algorithm", "ga", "--lr", "1e6", "--steps", "6",
            "--batch-size", "4", "--workers", "2", "--zero", "2", "--out", cfg.out]
    capsys.readouterr()
    assert main(args) == 0
    assert "diverged: non-finite loss (nan) at step 2 after 1 steps" in capsys.readouterr().out
