"""Cluster: cluster.yaml against Ray's schema, the ZeRO plan against DeepSpeed's estimators, Jobs errors, token
auth on a real local head. The job submitted through `lume-ray submit` to a real two-node cluster: test_multinode.py
(it shares that module's cluster)."""

from __future__ import annotations

import copy
import importlib.resources
import importlib.util
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lume_ray import cli
from lume_ray.cluster.auth import auth_headers
from lume_ray.cluster.jobs import build_submission
from lume_ray.cluster.plan import estimate_option, model_size, plan
from tests.local_cluster import LocalRayCluster, free_port

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"
GIB = 2**30



# -- cluster.yaml -------------------------------------------------------------------------------


def _validate(cfg: dict) -> None:
    """Ray's published cluster-config schema (the JSON file `ray up` validates against), plus the one cross-key
    rule the schema cannot state: the head node type is one of the node types."""
    import jsonschema

    schema = json.loads((importlib.resources.files("ray.autoscaler") / "ray-schema.json").read_text())
    jsonschema.validate(copy.deepcopy(cfg), schema)
    assert cfg["head_node_type"] in cfg["available_node_types"]


def test_cluster_yaml_validates_against_ray_schema() -> None:
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    _validate(cfg)
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("tune_driver", 0) >= 1 and head["resources"].get("CPU") == 0
    assert types["gpu_a100_x8"]["node_config"]["InstanceType"] == "p4d.24xlarge"
    start = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start
    setup = cfg["setup_commands"]
    torch_at = next(i for i, c in enumerate(setup) if "torch==" in c)
    lume_at = next(i for i, c in enumerate(setup) if "lume-ray[cluster]" in c)
    assert torch_at < lume_at  # torch first, or pip resolves its own build


@pytest.mark.parametrize("where", ["top", "node_type", "node_type_typo_in_resources_key"])
def test_cluster_yaml_typo_fails_validation(where: str) -> None:
    import jsonschema

    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    if where == "top":
        cfg["idle_timeout_minute"] = cfg.pop("idle_timeout_minutes")
    elif where == "node_type":
        cfg["available_node_types"]["gpu_a100_x8"]["max_worker"] = 2
    else:
        node = cfg["available_node_types"]["gpu_l40s_x1"]
        node["resource"] = node.pop("resources")
    with pytest.raises(jsonschema.ValidationError):
        _validate(cfg)


# -- plan ---------------------------------------------------------------------------------------


def test_param_counts_of_presets() -> None:
    # OLMo-1B-hf (tied) and OLMo-7B-hf published sizes; counted from a meta-device build.
    one, seven = model_size("1b"), model_size("7b")
    assert one.total_params == 1_176_764_416
    assert seven.total_params == 6_888_095_744
    assert seven.largest_layer_params == 50304 * 4096  # the embedding (and the untied lm_head)
    # LoRA r=16 on q_proj and v_proj of every layer: 16 * (4096 + 4096) * 2 * 32.
    assert seven.lora_params == 16 * 8192 * 2 * 32


def test_param_counts_of_a_model_dir_match_deepspeed(tiny_model: Path) -> None:
    import torch
    from deepspeed.runtime.zero.stage3 import model_to_params
    from transformers import AutoModelForCausalLM

    real = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    total, largest = model_to_params(real)  # DeepSpeed's own count on real tensors
    size = model_size(str(tiny_model))
    assert (size.total_params, size.largest_layer_params) == (total, largest)
    assert model_size(str(tiny_model / "config.json")).total_params == total


@pytest.mark.parametrize("model,gpus,per_node", [("1b", 1, 8), ("7b", 8, 8), ("7b", 16, 8), ("tiny", 2, 2)])
def test_plan_agrees_with_deepspeed_estimators(model: str, gpus: int, per_node: int, tiny_model: Path) -> None:
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    name = str(tiny_model) if model == "tiny" else model
    p = plan(name, gpus, per_node, gpu_mem_gib=80)
    P, L = p.size.total_params, p.size.largest_layer_params
    nodes, gpn = p.num_nodes, p.gpus_per_node
    assert nodes * gpn == gpus
    expected = {
        "zero0": estimate_zero2_model_states_mem_needs(P, 1, 1, cpu_offload=False)[1],
        "zero2": estimate_zero2_model_states_mem_needs(P, gpn, nodes, cpu_offload=False)[1],
        "zero2+offload_opt": estimate_zero2_model_states_mem_needs(P, gpn, nodes, cpu_offload=True)[1],
        "zero3": estimate_zero3_model_states_mem_needs(P, L, gpn, nodes, cpu_offload=False)[1],
        "zero3+offload_opt": estimate_zero3_model_states_mem_needs(P, L, gpn, nodes, cpu_offload=True,
                                                                   cpu_offload_params=False)[1],
        "zero3+offload_all": estimate_zero3_model_states_mem_needs(P, L, gpn, nodes, cpu_offload=True,
                                                                   cpu_offload_params=True)[1],
    }
    got = {o.name: o for o in p.options}
    assert set(got) == set(expected)
    for name_, o in got.items():
        assert o.model_states_gpu == int(expected[name_]), name_
        # The frozen bf16 reference: whole under ZeRO-0/2, sharded under ZeRO-3, on the host with param offload.
        ref = 0 if o.offload_params else (2 * P // gpus if o.zero == 3 else 2 * P)
        assert abs(o.reference_gpu - ref) <= 1, name_
        assert o.gpu_total == o.model_states_gpu + o.reference_gpu


def test_plan_recommendations() -> None:
    big = plan("7b", 8, 8, gpu_mem_gib=80)
    assert big.recommended in ("zero2", "zero3")
    assert not {o.name: o for o in big.options}["zero0"].fits  # 20 bytes/param x 6.9B does not fit 80 GB
    small = plan("7b", 1, 8, gpu_mem_gib=24)
    assert small.recommended is not None and "offload" in small.recommended
    none = plan("7b", 1, 8, gpu_mem_gib=1)
    assert none.recommended is None and none.message.startswith("nothing fits")
    lora = plan("7b", 1, 8, gpu_mem_gib=24, lora=True)
    assert lora.recommended == "zero0"  # bf16 base (12.8 GiB) + a small adapter fits one 24 GB GPU
    full = estimate_option(lora.size, 0, False, False, 1, 1, lora=False)
    assert sum(estimate_option(lora.size, 0, False, False, 1, 1, lora=True)[:2]) < sum(full[:2]) / 5


def test_plan_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", "--model", "7b", "--gpus", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["total_params"] == 6_888_095_744 and out["recommended"] in ("zero2", "zero3")
    assert cli.main(["plan", "--model", "7b", "--gpus", "1", "--gpu-mem", "1"]) == 1
    assert "nothing fits" in capsys.readouterr().out
    assert cli.main(["plan", "--model", "13x", "--gpus", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1b, 7b" in err
    assert cli.main(["plan", "--model", "1b", "--gpus", "12", "--gpus-per-node", "8"]) == 2
    assert "multiple" in capsys.readouterr().err


# -- jobs: errors without a cluster ---------------------------------------------------------------


def test_unreachable_address_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert cli.main(["jobs", "list", "--address", dead]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lume-ray: error: cannot reach the Ray dashboard at") and err.count("\n") == 1
    assert cli.main(["submit", str(QUICKSTART), "--address", dead, "--no-wait"]) == 2
    assert "cannot reach" in capsys.readouterr().err
    assert cli.main(["jobs", "list", "--address", "ray://127.0.0.1:10001"]) == 2
    assert "dashboard URL" in capsys.readouterr().err
    assert cli.main(["jobs", "status", "--address", dead]) == 2
    assert "needs a JOB id" in capsys.readouterr().err


def test_submit_rejects_a_bad_experiment_before_connecting(capsys: pytest.CaptureFixture[str]) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    assert cli.main(["submit", str(QUICKSTART), "--address", dead, "--set", "sweep.num_sample=1"]) == 2
    assert "num_sample" in capsys.readouterr().err  # the config error, not the connection error


def test_missing_ray_default_is_detected(tmp_path: Path) -> None:
    # A client without ray[default] lacks aiohttp; shadow it so that this interpreter sees it missing.
    shim = tmp_path / "shim" / "aiohttp"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('No module named aiohttp')\n")
    env = {**os.environ, "PYTHONPATH": str(shim.parent)}
    r = subprocess.run([sys.executable, "-m", "lume_ray.cli", "jobs", "list", "--address", "http://127.0.0.1:1"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 2
    assert "ray[default]" in r.stderr and "lume-ray[cluster]" in r.stderr


def test_auth_headers_follow_rays_token_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert auth_headers("127.0.0.1") == {} and auth_headers("head.example") == {}  # no token anywhere
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("home-token\n")
    # Mode unset: a token on this machine means token auth for a cluster on this machine only (as `ray start`).
    assert auth_headers("127.0.0.1") == {"Authorization": "Bearer home-token"}
    assert auth_headers("head.example") == {}
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert auth_headers("head.example") == {"Authorization": "Bearer home-token"}
    path = tmp_path / "tok"
    path.write_text("  file-token  ")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    assert auth_headers("head.example") == {"Authorization": "Bearer file-token"}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "env-token")  # highest precedence
    assert auth_headers("head.example") == {"Authorization": "Bearer env-token"}
    monkeypatch.delenv("RAY_AUTH_TOKEN")
    path.write_text("")
    with pytest.raises(ValueError, match="RAY_AUTH_TOKEN_PATH=.*cannot read a token"):
        auth_headers("head.example")
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    (tmp_path / ".ray" / "auth_token").unlink()
    with pytest.raises(ValueError, match="no token found"):
        auth_headers("head.example")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert auth_headers("127.0.0.1") == {}


def test_submission_packages_the_working_dir() -> None:
    sub = build_submission(QUICKSTART, [("sweep.num_samples", "1")])
    assert sub.runtime_env["working_dir"] == str(ROOT)
    assert {".venv", ".git", "runs"} <= set(sub.runtime_env["excludes"])
    assert sub.entrypoint.startswith("python -m lume_ray.cli sweep experiments/quickstart.yaml --address auto")
    assert "sweep.num_samples=1" in sub.entrypoint
    # quickstart's output_dir is relative: it would land in Ray's garbage-collected package dir.
    assert sub.output_dir.startswith("$HOME/lume-ray-runs/lume-quickstart-")
    assert sub.metadata["experiment"] == "quickstart" and sub.metadata["git_commit"]
    assert all(isinstance(v, str) for v in sub.metadata.values())
    assert "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S" in sub.runtime_env["env_vars"]


@pytest.mark.ray
def test_token_auth(tmp_path: Path) -> None:
    token = secrets.token_hex(32)
    token_file = tmp_path / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    cluster = LocalRayCluster(workers=0, cpus_per_node=1,
                              env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)})
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    base["HOME"] = str(tmp_path)  # no ~/.ray/auth_token to fall back on

    def jobs_list(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "lume_ray.cli", "jobs", "list", "--address", cluster.address],
                              capture_output=True, text=True, env={**base, **env}, cwd=ROOT, timeout=120)

    try:
        cluster.start()
        no_token = jobs_list()
        assert no_token.returncode == 2 and "requires token authentication" in no_token.stderr
        good = jobs_list(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file))
        assert good.returncode == 0 and "(no jobs)" in good.stdout, good.stderr[-2000:]
        wrong = jobs_list(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
        assert wrong.returncode == 2 and "rejected" in wrong.stderr
        missing = jobs_list(RAY_AUTH_MODE="token")
        assert missing.returncode == 2 and "no token found" in missing.stderr
        for r in (no_token, good, wrong, missing):
            assert token not in r.stdout + r.stderr
    finally:
        cluster.stop()
    assert cluster.alive_pids() == []

