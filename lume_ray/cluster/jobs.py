"""Cluster: an experiment YAML -> a Ray job on a cluster; Ray Jobs status/logs/stop; a ZeRO memory plan.

Input:  ``lume-ray submit EXPERIMENT --address http://HEAD:8265``, ``lume-ray jobs ACTION [JOB]``,
        ``lume-ray plan --model 1b|7b|DIR --gpus N``; a running Ray cluster with ``ray[default]``.
Output: a submitted job (its id and how to follow it), job tables and logs, and a per-GPU memory
        table of every ZeRO stage with a recommendation.

Three parts, top to bottom:
1. Jobs: the Ray Jobs SDK (``JobSubmissionClient``) behind one-line errors. Token auth follows Ray
   2.60: the SDK sends ``Authorization: Bearer <token>`` only when ``RAY_AUTH_MODE=token``, reading
   the token from ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``. We never read,
   print or store the token ourselves; we only switch the SDK's mode on (and only for a cluster on
   this machine when the mode is unset, as ``ray start`` itself does).
2. Plan: DeepSpeed's own estimators (ZeRO-2 and ZeRO-3 model states) on parameter counts taken from a
   model built on the meta device, plus the frozen bf16 reference model.
3. LocalRayCluster: a real multi-node Ray cluster on 127.0.0.1 made of ``ray start --block``
   processes we own by pid, for tests and benchmarks (never ``ray stop``: it kills every Ray here).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


class ClusterError(ValueError):
    """A user-facing cluster problem (bad address, unreachable cluster, auth, unknown job)."""


TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
DEFAULT_DASHBOARD_PORT = 8265

# Never shipped to the cluster: environments, VCS data, run outputs, caches.
WORKING_DIR_EXCLUDES = [
    ".venv", "venv", ".git", "runs", "__pycache__", "*.pyc", "*.egg-info", ".mypy_cache",
    ".ruff_cache", ".pytest_cache", ".ipynb_checkpoints", "*.safetensors", "*.bin", "*.pt", "*.ckpt",
]
LARGE_FILE_BYTES = 20 * 2**20  # Ray's package upload limit is 512 MiB; anything this big is data, not code.

# Passed to the job's driver (and, through Train's propagation list, to its workers).
JOB_ENV_DEFAULTS = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",  # report() latency: default poll 2 s (RAY_NOTES 1)
    "PYTHONUNBUFFERED": "1",  # logs reach `jobs logs --follow` as they are written
    "TOKENIZERS_PARALLELISM": "false",
}
# Forwarded from the submitting shell when set there (no secrets: job env vars are visible in the dashboard).
JOB_ENV_FORWARD = ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "DS_ACCELERATOR", "TORCH_EXTENSIONS_DIR", "LUME_RAY_DEBUG")


# ---------------------------------------------------------------------------------------------
# 1. Jobs


def normalize_address(address: str | None) -> str:
    """``HEAD``, ``HEAD:8265`` or ``http(s)://HEAD:PORT`` -> ``http(s)://HEAD:PORT``."""
    if not address:
        raise ClusterError("no cluster address: pass --address http://HEAD:8265 (or set RAY_API_SERVER_ADDRESS)")
    text = address.strip().rstrip("/")
    if "://" not in text:
        text = "http://" + text
    url = urlparse(text)
    if url.scheme not in ("http", "https"):
        raise ClusterError(f"--address {address!r}: expected the dashboard URL http://HEAD:8265 "
                           f"(scheme {url.scheme!r} is not a Jobs API address)")
    if not url.hostname:
        raise ClusterError(f"--address {address!r}: no host name")
    try:
        port = url.port or DEFAULT_DASHBOARD_PORT
    except ValueError:
        raise ClusterError(f"--address {address!r}: bad port") from None
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    return f"{url.scheme}://{host}:{port}{url.path}"


def _is_local(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host == socket.gethostname()


def _setup_auth(host: str) -> None:
    """Put the SDK in token mode when the user asked for it (or, unset, for a local token-auth cluster).

    The SDK decides from its C++ config, which read ``RAY_AUTH_MODE`` when ``ray._raylet`` was first
    imported; a mode set in-process after that needs ``Config.initialize`` to be seen.
    """
    from ray._raylet import (  # type: ignore[attr-defined]
        AuthenticationMode,
        AuthenticationTokenLoader,
        Config,
        get_authentication_mode,
    )

    mode = os.environ.get("RAY_AUTH_MODE", "").strip().lower()
    loader = AuthenticationTokenLoader.instance()
    if not mode and _is_local(host) and loader.has_token(ignore_auth_mode=True):
        # Same rule as `ray start --head` / local `ray.init()`: a token on this machine means token auth.
        mode = "token"
        os.environ["RAY_AUTH_MODE"] = "token"
    if mode == "token":
        if not loader.has_token(ignore_auth_mode=True):
            raise ClusterError("RAY_AUTH_MODE=token but no token found: put the cluster's token in "
                               "~/.ray/auth_token, a file named by RAY_AUTH_TOKEN_PATH, or RAY_AUTH_TOKEN")
        if get_authentication_mode() != AuthenticationMode.TOKEN:
            Config.initialize("")


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    # requests has no default timeout: a black-holed host would hang the SDK for minutes.
    url = urlparse(address)
    host, port = url.hostname or "", url.port or DEFAULT_DASHBOARD_PORT
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError | socket.timeout) else (e.strerror or str(e))
        raise ClusterError(f"cannot reach the Ray dashboard at {address} ({reason}); is the cluster up, "
                           f"and is the dashboard port right (default {DEFAULT_DASHBOARD_PORT}; "
                           "`ray dashboard cluster.yaml` forwards it from an AWS head)?") from None


def connect(address: str | None) -> Any:
    """A ``JobSubmissionClient`` for ``address``, or a one-line :class:`ClusterError`."""
    url = normalize_address(address)
    try:  # exactly what the Jobs SDK checks before raising its RuntimeError
        import aiohttp  # noqa: F401
        import requests  # noqa: F401
    except ImportError as e:
        raise ClusterError(f"the Ray Jobs SDK needs ray[default] on this machine ({e}); "
                           "install it with: pip install 'lume-ray[cluster]'") from None
    _setup_auth(urlparse(url).hostname or "")
    _check_reachable(url)
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(url)
    except AuthenticationError as e:
        raise _auth_error(url, e) from None
    except ConnectionError:
        raise ClusterError(f"cannot reach the Ray dashboard at {url}; is the cluster up?") from None
    except RuntimeError as e:
        if "ray[default]" in str(e):
            raise ClusterError("the Ray Jobs SDK needs ray[default] on this machine; "
                               "install it with: pip install 'lume-ray[cluster]'") from None
        raise ClusterError(f"{url} does not answer like a Ray dashboard: {_first_line(e)}") from None


def _auth_error(url: str, e: Exception) -> ClusterError:
    if "Authentication failed" in str(e) or "invalid" in str(e).lower():
        return ClusterError(f"the cluster at {url} rejected the auth token; use the token of that cluster "
                            "(~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN)")
    return ClusterError(f"the cluster at {url} requires token authentication: set RAY_AUTH_MODE=token and "
                        "provide its token in ~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _call(client: Any, what: str, fn: Any, *args: Any) -> Any:
    """An SDK call with its errors turned into one line (unknown job ids, auth, lost connection)."""
    from ray.exceptions import AuthenticationError

    try:
        return fn(*args)
    except AuthenticationError as e:
        raise _auth_error(client._address, e) from None
    except ConnectionError:
        raise ClusterError(f"lost the connection to {client._address} while trying to {what}") from None
    except RuntimeError as e:
        msg = str(e)
        if "404" in msg or "does not exist" in msg:
            job = args[0] if args else "?"
            raise ClusterError(f"no job {job!r} on {client._address}; "
                               f"`lume-ray jobs list --address {client._address}` lists them") from None
        raise ClusterError(f"could not {what}: {_first_line(e)}") from None


@dataclass(frozen=True)
class Submission:
    """Everything ``submit_job`` gets: what runs, with which files and environment, under which id."""

    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str]
    submission_id: str
    output_dir: str  # where the sweep writes RUN_DIR on the cluster (may contain $HOME)


def find_root(start: Path) -> Path:
    """The project directory holding ``start``: the nearest ancestor with pyproject.toml or .git."""
    start = start.resolve()
    for d in [start, *start.parents] if start.is_dir() else list(start.parents):
        if (d / "pyproject.toml").is_file() or (d / ".git").exists():
            return d
    return Path.cwd().resolve()


def _git_commit(root: Path) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("-dirty" if dirty else "")) if sha else "unknown"


def large_files(root: Path, excludes: list[str], limit: int = LARGE_FILE_BYTES) -> list[str]:
    """Paths (relative to ``root``) of files over ``limit`` bytes outside the excluded directories."""
    skip_dirs = {e for e in excludes if "*" not in e}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip_dirs and not d.endswith(".egg-info")]
        for name in filenames:
            p = Path(dirpath) / name
            try:
                if p.is_file() and not p.is_symlink() and p.stat().st_size > limit:
                    found.append(p.relative_to(root).as_posix())
            except OSError:
                continue
    return sorted(found)


def job_env() -> dict[str, str]:
    env = dict(JOB_ENV_DEFAULTS)
    env.update({k: os.environ[k] for k in JOB_ENV_FORWARD if os.environ.get(k)})
    return env


def build_submission(experiment: str | Path, overrides: list[tuple[str, str]] | None = None,
                     root: str | Path | None = None) -> Submission:
    """Validate the experiment here (so a typo fails now, not on the cluster) and package the sweep job."""
    from lume_ray.config import load_experiment

    overrides = list(overrides or [])
    exp_path = Path(experiment)
    exp = load_experiment(exp_path, overrides)  # ConfigError (a ValueError) on any bad key or value
    root_dir = Path(root).resolve() if root else find_root(exp_path)
    try:
        rel = exp_path.resolve().relative_to(root_dir).as_posix()
    except ValueError:
        raise ClusterError(f"{experiment}: the experiment must live inside the working directory "
                           f"{root_dir} that is shipped to the cluster") from None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", exp.name).strip("-") or "sweep"
    submission_id = f"lume-{slug}-{stamp}-{secrets.token_hex(2)}"
    user_set_output = any(k == "output_dir" for k, _ in overrides)
    output_dir = exp.output_dir
    if not user_set_output and not os.path.isabs(exp.output_dir):
        # A relative RUN_DIR would land in the job's unpacked working dir, which Ray garbage-collects.
        output_dir = f"$HOME/lume-ray-runs/{submission_id}"
    parts = ["python", "-m", "lume_ray.cli", "sweep", shlex.quote(rel),
             "--address", "auto"]  # `auto`: join the job's cluster instead of starting a local one
    sets = [shlex.quote(f"{k}={v}") for k, v in overrides]
    if output_dir != exp.output_dir:
        sets.append(f'"output_dir={output_dir}"')  # double quotes: $HOME expands on the cluster
    if sets:
        parts += ["--set", *sets]
    excludes = WORKING_DIR_EXCLUDES + large_files(root_dir, WORKING_DIR_EXCLUDES)
    runtime_env = {"working_dir": str(root_dir), "excludes": excludes, "env_vars": job_env()}
    metadata = {
        "submitted_by": "lume-ray", "experiment": exp.name, "experiment_path": rel,
        "overrides": json.dumps([f"{k}={v}" for k, v in overrides]), "git_commit": _git_commit(root_dir),
        "output_dir": output_dir,
    }
    return Submission(" ".join(parts), runtime_env, metadata, submission_id, output_dir)


def submit(client: Any, sub: Submission) -> str:
    """Upload the working dir and start the job; returns its submission id."""
    return str(_call(client, "submit the job", lambda: client.submit_job(
        entrypoint=sub.entrypoint, runtime_env=sub.runtime_env, metadata=sub.metadata,
        submission_id=sub.submission_id)))


def status(client: Any, job_id: str) -> str:
    return str(_call(client, "read the job status", client.get_job_status, job_id).value)


def logs(client: Any, job_id: str) -> str:
    return str(_call(client, "read the job logs", client.get_job_logs, job_id))


def follow(client: Any, job_id: str, out: Any = None, poll_s: float = 1.0) -> str:
    """Stream the job's logs to ``out`` until it ends; returns its final status."""
    out = out or sys.stdout

    async def stream() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    _call(client, "read the job status", client.get_job_status, job_id)  # unknown id -> one line
    # The log websocket can drop (head restart, proxy); polling the status below still ends it.
    with contextlib.suppress(Exception):
        asyncio.run(stream())
    while (state := status(client, job_id)) not in TERMINAL:
        time.sleep(poll_s)
    return state


def wait(client: Any, job_id: str, timeout_s: float | None = None, poll_s: float = 1.0) -> str:
    """Poll until the job ends (or ``timeout_s`` passes); returns the last status."""
    t0 = time.monotonic()
    while (state := status(client, job_id)) not in TERMINAL:
        if timeout_s is not None and time.monotonic() - t0 > timeout_s:
            return state
        time.sleep(poll_s)
    return state


def log_tail(client: Any, job_id: str, lines: int = 30) -> str:
    return "\n".join(logs(client, job_id).rstrip().splitlines()[-lines:])


def _report_end(client: Any, job_id: str, state: str, show_tail: bool) -> int:
    if state == "SUCCEEDED":
        print(f"[submit] job {job_id} SUCCEEDED")
        return 0
    info = _call(client, "read the job info", client.get_job_info, job_id)
    if show_tail:
        print(f"--- last lines of {job_id} ---", file=sys.stderr)
        print(log_tail(client, job_id), file=sys.stderr)
    code = f", driver exit code {info.driver_exit_code}" if info.driver_exit_code is not None else ""
    msg = f": {_first_line(Exception(info.message))}" if info.message else ""
    print(f"lume-ray: error: job {job_id} {state}{code}{msg}", file=sys.stderr)
    return 1


def cli_submit(args: Any) -> int:
    """`lume-ray submit EXPERIMENT --address URL [--set k=v ...] [--no-wait]`."""
    sub = build_submission(args.experiment, list(args.overrides))
    client = connect(args.address)
    address = client._address
    big = [e for e in sub.runtime_env["excludes"] if e not in WORKING_DIR_EXCLUDES]
    if big:
        print(f"[submit] not shipping {len(big)} large file(s): {', '.join(big[:3])}{' ...' if len(big) > 3 else ''}")
    print(f"[submit] uploading {sub.runtime_env['working_dir']} and submitting {sub.metadata['experiment_path']}")
    job_id = submit(client, sub)
    print(f"[submit] job {job_id} submitted to {address}; RUN_DIR on the cluster: {sub.output_dir}")
    print(f"[submit] follow it: lume-ray jobs logs {job_id} --follow --address {address}")
    print(f"[submit] stop it:   lume-ray jobs stop {job_id} --address {address}")
    if args.no_wait:
        return 0
    try:
        state = follow(client, job_id)
    except KeyboardInterrupt:
        print(f"\n[submit] stopped following; job {job_id} keeps running on the cluster", file=sys.stderr)
        return 130
    # follow() already printed every log line; the tail is only repeated for failures.
    return _report_end(client, job_id, state, show_tail=True)


def _fmt_time(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"


def cli_jobs(args: Any) -> int:
    """`lume-ray jobs list|status|logs [--follow]|stop [JOB] --address URL`."""
    if args.action != "list" and not args.job_id:
        raise ClusterError(f"`lume-ray jobs {args.action}` needs a JOB id (`lume-ray jobs list` shows them)")
    client = connect(args.address)
    if args.action == "list":
        jobs = _call(client, "list the jobs", client.list_jobs)
        jobs = sorted(jobs, key=lambda j: j.start_time or 0)
        print(f"{'JOB':<44} {'STATUS':<10} {'STARTED':<19} {'EXPERIMENT':<16} ENTRYPOINT")
        for j in jobs:
            exp = (j.metadata or {}).get("experiment", "-")
            entry = j.entrypoint if len(j.entrypoint) <= 60 else j.entrypoint[:57] + "..."
            print(f"{(j.submission_id or j.job_id or '-'):<44} {j.status.value:<10} {_fmt_time(j.start_time):<19} "
                  f"{exp:<16} {entry}")
        if not jobs:
            print("(no jobs)")
        return 0
    job_id = args.job_id
    if args.action == "status":
        info = _call(client, "read the job info", client.get_job_info, job_id)
        print(f"job:        {job_id}")
        print(f"status:     {info.status.value}")
        print(f"entrypoint: {info.entrypoint}")
        print(f"started:    {_fmt_time(info.start_time)}")
        print(f"ended:      {_fmt_time(info.end_time)}")
        if info.driver_exit_code is not None:
            print(f"exit code:  {info.driver_exit_code}")
        if info.message:
            print(f"message:    {_first_line(Exception(info.message))}")
        for k, v in sorted((info.metadata or {}).items()):
            print(f"{k + ':':<11} {v}")
        return 0 if info.status.value != "FAILED" else 1
    if args.action == "logs":
        if args.follow:
            state = follow(client, job_id)
            return 0 if state == "SUCCEEDED" else _report_end(client, job_id, state, show_tail=False)
        sys.stdout.write(logs(client, job_id))
        return 0
    # stop
    stopped = _call(client, "stop the job", client.stop_job, job_id)
    state = wait(client, job_id, timeout_s=30)
    print(f"[jobs] {job_id}: {'stop requested' if stopped else 'already finished'}; status {state}")
    return 0


# ---------------------------------------------------------------------------------------------
# 2. Plan: per-GPU memory of each ZeRO stage (DeepSpeed's estimators + the frozen reference)

OLMO_PRESETS: dict[str, dict[str, Any]] = {
    # OLMo-1B(-0724)-hf shape; weights tied as in OLMo-1B-hf (1,176,764,416 parameters).
    "1b": dict(vocab_size=50304, hidden_size=2048, num_hidden_layers=16, num_attention_heads=16,
               intermediate_size=8192, max_position_embeddings=4096, tie_word_embeddings=True),
    # OLMo-7B(-0724-Instruct)-hf shape, untied (6,888,095,744 parameters).
    "7b": dict(vocab_size=50304, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
               intermediate_size=11008, max_position_embeddings=4096, tie_word_embeddings=False),
}
LORA_RANK = 16
GIB = 2**30
HEADROOM = 0.25  # of GPU memory kept for activations, CUDA context, fragmentation (estimators cover model states only)


@dataclass(frozen=True)
class ModelSize:
    name: str
    total_params: int  # unique parameters (tied weights counted once), as DeepSpeed's model_to_params
    largest_layer_params: int  # most parameters owned directly by one module (ZeRO-3 gathers one at a time)
    lora_params: int  # trainable parameters of a rank-LORA_RANK adapter on PEFT's default target modules


def _count(model: Any) -> tuple[int, int]:
    # DeepSpeed's model_to_params dedups by data_ptr, which is 0 for every meta tensor; parameters()
    # already yields a tied Parameter once, which is the same count on a real model.
    total = sum(p.numel() for p in model.parameters())
    largest = max((sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules()), default=0)
    return int(total), int(largest)


def _lora_params(model: Any, model_type: str, rank: int) -> int:
    import torch
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as TARGETS

    targets = set(TARGETS.get(model_type) or ("q_proj", "v_proj"))
    n = 0
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets:
            n += rank * (m.in_features + m.out_features)  # A: (r, in), B: (out, r)
    return n


def model_size(model: str, lora_rank: int = LORA_RANK) -> ModelSize:
    """Parameter counts of ``1b``, ``7b`` or a model directory / config.json, from a meta-device build."""
    import torch
    import transformers

    key = model.lower()
    if key in OLMO_PRESETS:
        config: Any = transformers.OlmoConfig(**OLMO_PRESETS[key], pad_token_id=1, eos_token_id=50279)
        name = f"OLMo-{key.upper()}"
    else:
        path = Path(model)
        cfg_dir = path.parent if path.name == "config.json" else path
        if not (cfg_dir / "config.json").is_file():
            raise ClusterError(f"--model {model!r}: expected 1b, 7b, or a model directory with config.json "
                               f"(valid presets: {', '.join(OLMO_PRESETS)})")
        try:
            config = transformers.AutoConfig.from_pretrained(str(cfg_dir), local_files_only=True)
        except (ValueError, OSError, KeyError) as e:
            raise ClusterError(f"{cfg_dir / 'config.json'}: cannot read the model config ({_first_line(e)})") from None
        name = str(cfg_dir)
    try:
        with torch.device("meta"):  # shapes only: a 7B model costs no memory and under a second
            net = transformers.AutoModelForCausalLM.from_config(config)
    except ValueError as e:
        raise ClusterError(f"--model {model!r}: transformers cannot build a causal LM from this config "
                           f"({_first_line(e)})") from None
    total, largest = _count(net)
    return ModelSize(name, total, largest, _lora_params(net, config.model_type, lora_rank))


@dataclass(frozen=True)
class PlanOption:
    name: str
    zero: int
    offload_optimizer: bool
    offload_params: bool
    model_states_gpu: int  # bytes per GPU: DeepSpeed's estimate for the trained model
    reference_gpu: int  # bytes per GPU of the frozen bf16 reference model
    cpu_per_node: int  # bytes of host memory per node (DeepSpeed's estimate + offloaded reference)
    fits: bool

    @property
    def gpu_total(self) -> int:
        return self.model_states_gpu + self.reference_gpu


@dataclass(frozen=True)
class Plan:
    size: ModelSize
    gpus: int
    gpus_per_node: int
    num_nodes: int
    gpu_mem_gib: float
    lora: bool
    options: list[PlanOption] = field(default_factory=list)
    recommended: str | None = None
    message: str = ""


# Cheapest first: sharding costs communication, offload costs PCIe traffic and CPU Adam steps.
OPTION_ORDER = [
    ("zero0", 0, False, False), ("zero2", 2, False, False), ("zero3", 3, False, False),
    ("zero2+offload_opt", 2, True, False), ("zero3+offload_opt", 3, True, False),
    ("zero3+offload_all", 3, True, True),
]


def _topology(gpus: int, gpus_per_node: int) -> tuple[int, int]:
    if gpus < 1:
        raise ClusterError(f"--gpus {gpus}: need at least 1")
    if gpus_per_node < 1:
        raise ClusterError(f"--gpus-per-node {gpus_per_node}: need at least 1")
    per_node = min(gpus, gpus_per_node)
    if gpus % per_node:
        raise ClusterError(f"--gpus {gpus} is not a multiple of --gpus-per-node {gpus_per_node}")
    return per_node, gpus // per_node


def estimate_option(size: ModelSize, zero: int, offload_optimizer: bool, offload_params: bool,
                    gpus_per_node: int, num_nodes: int, lora: bool = False) -> tuple[int, int, int]:
    """(model-state bytes per GPU, reference bytes per GPU, host bytes per node) of one setup.

    Full fine-tuning uses DeepSpeed's estimators verbatim (ZeRO-0 = the ZeRO-2 formula on one GPU:
    nothing is sharded). The reference is a frozen bf16 copy: whole on every GPU under ZeRO-0/2,
    sharded under ZeRO-3, on the host when ZeRO-3 offloads parameters. With LoRA the frozen base
    doubles as the reference (adapter disabled) and only the adapter has gradients and Adam state.
    """
    import torch

    if not torch.cuda.is_available():  # else DeepSpeed's import logs an accelerator warning; pure arithmetic here
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs
    from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

    n_gpus = gpus_per_node * num_nodes
    P, L = size.total_params, size.largest_layer_params
    trained = size.lora_params if lora else P
    if zero == 0:
        cpu, gpu = estimate_zero2_model_states_mem_needs(trained, 1, 1, cpu_offload=False)
    elif zero == 2:
        cpu, gpu = estimate_zero2_model_states_mem_needs(trained, gpus_per_node, num_nodes,
                                                         cpu_offload=offload_optimizer)
    elif zero == 3:
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(trained, L, gpus_per_node, num_nodes,
                                                            cpu_offload=offload_optimizer,
                                                            cpu_offload_params=offload_params)
    else:
        raise ClusterError(f"ZeRO stage {zero}: valid stages are 0, 2, 3")
    frozen = 2 * P  # bf16 weights: the reference (full) or the frozen base (LoRA)
    if zero == 3 and offload_params:
        ref_gpu, cpu = 0, cpu + int(frozen / num_nodes)
    elif zero == 3:
        ref_gpu = int(frozen / n_gpus)
    else:
        ref_gpu = frozen
    return int(gpu), int(ref_gpu), int(cpu)


def plan(model: str, gpus: int, gpus_per_node: int = 8, gpu_mem_gib: float = 80.0, lora: bool = False,
         headroom: float = HEADROOM, cpu_mem_gib: float | None = None) -> Plan:
    """Every ZeRO option's per-GPU memory and the cheapest one that fits in ``(1 - headroom) * gpu_mem``."""
    if gpu_mem_gib <= 0:
        raise ClusterError(f"--gpu-mem {gpu_mem_gib}: must be positive (GiB per GPU)")
    per_node, nodes = _topology(gpus, gpus_per_node)
    size = model_size(model)
    budget = (1 - headroom) * gpu_mem_gib * GIB
    options = []
    for name, zero, off_opt, off_par in OPTION_ORDER:
        gpu, ref, cpu = estimate_option(size, zero, off_opt, off_par, per_node, nodes, lora)
        fits = gpu + ref <= budget and (cpu_mem_gib is None or cpu <= cpu_mem_gib * GIB)
        options.append(PlanOption(name, zero, off_opt, off_par, gpu, ref, cpu, fits))
    best = next((o for o in options if o.fits), None)
    if best:
        message = (f"recommended: {best.name} ({best.gpu_total / GIB:.1f} GiB per GPU of {gpu_mem_gib:g}, "
                   f"{headroom:.0%} kept for activations; host RAM per node >= {best.cpu_per_node / GIB:.0f} GiB)")
    else:
        least = min(options, key=lambda o: o.gpu_total)
        message = (f"nothing fits: even {least.name} needs {least.gpu_total / GIB:.1f} GiB per GPU of "
                   f"{gpu_mem_gib:g} with {headroom:.0%} headroom; use more or larger GPUs"
                   f"{'' if lora else ', or --lora'}")
    return Plan(size, gpus, per_node, nodes, gpu_mem_gib, lora, options, best.name if best else None, message)


def plan_dict(p: Plan) -> dict[str, Any]:
    return {
        "model": p.size.name, "total_params": p.size.total_params,
        "largest_layer_params": p.size.largest_layer_params,
        "trainable_params": p.size.lora_params if p.lora else p.size.total_params, "lora": p.lora,
        "gpus": p.gpus, "gpus_per_node": p.gpus_per_node, "num_nodes": p.num_nodes, "gpu_mem_gib": p.gpu_mem_gib,
        "options": [{"name": o.name, "zero": o.zero, "offload_optimizer": o.offload_optimizer,
                     "offload_params": o.offload_params, "gpu_gib": round(o.gpu_total / GIB, 3),
                     "model_states_gpu_bytes": o.model_states_gpu, "reference_gpu_bytes": o.reference_gpu,
                     "cpu_per_node_gib": round(o.cpu_per_node / GIB, 3), "fits": o.fits} for o in p.options],
        "recommended": p.recommended, "message": p.message,
    }


def cli_plan(args: Any) -> int:
    """`lume-ray plan --model 1b|7b|PATH --gpus N [--gpus-per-node 8] [--gpu-mem 80] [--lora] [--json]`."""
    p = plan(args.model, args.gpus, args.gpus_per_node, args.gpu_mem, args.lora)
    if args.json:
        print(json.dumps(plan_dict(p), indent=2))
        return 0 if p.recommended else 1
    s = p.size
    trained = f"LoRA r={LORA_RANK}: {s.lora_params / 1e6:.1f}M trainable" if p.lora else "full fine-tuning"
    print(f"{s.name}: {s.total_params / 1e9:.3f}B parameters (largest layer {s.largest_layer_params / 1e6:.1f}M), "
          f"{trained}; {p.gpus} GPU(s) = {p.num_nodes} node(s) x {p.gpus_per_node}, {p.gpu_mem_gib:g} GiB each")
    ref = "frozen base = reference" if p.lora else "bf16 reference (kl, npo, rmu need it)"
    print(f"{'option':<19} {'GPU GiB':>8} {'model':>8} {'ref':>7} {'host GiB/node':>14}  fits")
    for o in p.options:
        print(f"{o.name:<19} {o.gpu_total / GIB:>8.1f} {o.model_states_gpu / GIB:>8.1f} {o.reference_gpu / GIB:>7.1f} "
              f"{o.cpu_per_node / GIB:>14.1f}  {'yes' if o.fits else 'no'}")
    print(f"(model = DeepSpeed's model-state estimate; ref = {ref}; activations not included)")
    print(p.message)
    return 0 if p.recommended else 1


# ---------------------------------------------------------------------------------------------
# 3. A local multi-node Ray cluster we own by pid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _node_ports() -> list[str]:
    # Every listening port explicit: defaults (10001, 52365, 8076 ...) collide between two nodes on one
    # machine and with other people's clusters on it.
    flags = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-grpc-port",
             "--dashboard-agent-listen-port", "--metrics-export-port", "--runtime-env-agent-port")
    return [f"{f}={free_port()}" for f in flags]


class LocalRayCluster:
    """``ray start --head`` + ``workers`` x ``ray start --address`` on 127.0.0.1, each a process we hold.

    Dashboard and job server listen on 127.0.0.1 only. ``stop()`` ends exactly the processes started
    here: the ``ray start --block`` processes, their process groups, their descendants, and any
    daemon that names our private temp dir (agents that re-parent themselves), never ``ray stop``.
    """

    def __init__(self, workers: int = 1, cpus_per_node: int = 2, env: dict[str, str] | None = None,
                 head_resources: dict[str, float] | None = None, object_store_mib: int = 256,
                 timeout_s: float = 90.0) -> None:
        self.workers, self.cpus, self.timeout_s = workers, cpus_per_node, timeout_s
        self.head_resources = head_resources or {}
        self.object_store_bytes = object_store_mib * 2**20  # default is 30 % of RAM per node
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
        self.env.setdefault("RAY_AUTH_MODE", "disabled")
        # A raylet waits this long for its dashboard agent to start; the default (20 s) was measured to run
        # out on a loaded 2-core machine (the node then dies with "timed out during startup").
        self.env.setdefault("RAY_agent_register_timeout_ms", "120000")
        self.procs: list[subprocess.Popen[bytes]] = []
        # Short path: Ray's unix sockets live under it and must stay below ~107 characters.
        self.temp_dir = tempfile.mkdtemp(prefix="lr", dir="/tmp")
        self.port = free_port()
        self.dashboard_port = free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.gcs_address = f"127.0.0.1:{self.port}"
        self._pids: set[int] = set()

    def _start(self, args: list[str], tag: str) -> subprocess.Popen[bytes]:
        log = open(Path(self.temp_dir) / f"{tag}.out", "wb")  # noqa: SIM115 (lives as long as the process)
        proc = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", *args, "--block"],
                                stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.procs.append(proc)
        return proc

    def _wait_started(self, proc: subprocess.Popen[bytes], tag: str) -> None:
        out = Path(self.temp_dir) / f"{tag}.out"
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.timeout_s:
            text = out.read_text(errors="replace")
            if "Ray runtime started" in text:
                return
            if proc.poll() is not None:
                raise RuntimeError(f"ray start ({tag}) exited {proc.returncode}: {text[-2000:]}")
            time.sleep(0.3)
        raise RuntimeError(f"ray start ({tag}) did not come up in {self.timeout_s:.0f} s")

    def start(self) -> LocalRayCluster:
        common = ["--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}", "--num-gpus=0",
                  f"--object-store-memory={self.object_store_bytes}",
                  "--disable-usage-stats", f"--temp-dir={self.temp_dir}"]
        head_args = [f"--port={self.port}", "--head", "--dashboard-host=127.0.0.1",
                     f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={free_port()}",
                     *common, *_node_ports()]
        if self.head_resources:
            head_args.append(f"--resources={json.dumps(self.head_resources)}")
        try:
            self._wait_started(self._start(head_args, "head"), "head")
            for i in range(self.workers):
                tag = f"worker{i}"
                # Each node its own temp root, as on real machines: a shared one lets a node's runtime-env
                # agent garbage-collect the unpacked working dir another node's job driver runs in.
                own = [a for a in common if not a.startswith("--temp-dir=")] + [f"--temp-dir={self.temp_dir}/{tag}"]
                self._wait_started(self._start([f"--address={self.gcs_address}", *own, *_node_ports()], tag), tag)
            self._wait_nodes(1 + self.workers)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_nodes(self, n: int) -> None:
        import requests

        t0 = time.monotonic()
        alive = 0
        while time.monotonic() - t0 < self.timeout_s:
            try:
                r = requests.get(f"{self.address}/nodes?view=summary", timeout=5)
                if r.status_code in (401, 403):
                    return  # token auth: every `ray start` already said it joined; we never handle the token
                nodes = r.json()["data"]["summary"]
                alive = sum(1 for x in nodes if x.get("raylet", {}).get("state") == "ALIVE")
                if alive >= n:
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"only {alive} of {n} Ray nodes alive after {self.timeout_s:.0f} s")

    def _ours(self) -> set[int]:
        import psutil

        pids = set(self._pids)
        for proc in self.procs:
            pids.add(proc.pid)
            with contextlib.suppress(psutil.Error):
                pids.update(c.pid for c in psutil.Process(proc.pid).children(recursive=True))
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if self.temp_dir in " ".join(p.info["cmdline"] or []):
                    pids.add(p.info["pid"])
                    pids.update(c.pid for c in p.children(recursive=True))
            except psutil.Error:
                continue
        pids.discard(os.getpid())
        return pids

    def stop(self, grace_s: float = 15.0, keep_temp: bool = False) -> None:
        import psutil

        self._pids = self._ours()
        # Workers first, then the head: `ray start --block` shuts its node down on SIGTERM.
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        self._pids |= self._ours()
        for proc in self.procs:  # each node's whole process group (raylet, gcs, workers, agents)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        victims = []
        for pid in self._pids:
            with contextlib.suppress(psutil.Error):
                victim = psutil.Process(pid)
                victim.kill()
                victims.append(victim)
        psutil.wait_procs(victims, timeout=10)  # so alive_pids() is empty once stop() returns
        for proc in self.procs:
            if proc.poll() is None:
                proc.wait(timeout=10)
        self.procs = []
        if not keep_temp:  # session logs, sockets, spilled objects: ours alone, by construction
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def alive_pids(self) -> list[int]:
        """Processes started by this cluster that still run (empty after ``stop``)."""
        import psutil

        return sorted(p for p in self._pids | self._ours() if psutil.pid_exists(p)
                      and psutil.Process(p).status() != psutil.STATUS_ZOMBIE)

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = [
    "ClusterError", "Submission", "build_submission", "connect", "submit", "status", "logs", "follow", "wait",
    "log_tail", "cli_submit", "cli_jobs", "plan", "Plan", "PlanOption", "ModelSize", "model_size",
    "estimate_option", "plan_dict", "cli_plan", "LocalRayCluster", "free_port", "normalize_address",
]
