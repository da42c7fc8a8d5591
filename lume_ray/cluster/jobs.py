"""Ray Jobs: an experiment YAML -> a sweep job on a Ray cluster; job status, logs and stop.

Input:  ``lume-ray submit EXPERIMENT --address http://HEAD:8265 [--set k=v ...]``, ``lume-ray jobs
        list|status|logs|stop [JOB] --address URL``; a running Ray cluster with ``ray[default]``.
Output: a submitted job (its id and how to follow it), job tables, logs, the job's exit status.

What is uploaded (the job's ``working_dir``, never a secret) and how plugins travel: :mod:`lume_ray.cluster.upload`.
A ``--set`` value holding a credential (a URL's password, a ``?token=``) never enters the entrypoint or the
metadata (:mod:`lume_ray.redact`): the job gets it in its environment.
The job's command line names the plugins as the cluster sees them (``--set plugins=[...]``).

The Ray Jobs SDK (``JobSubmissionClient``) behind one-line errors. Token auth follows Ray's documented
sources (:mod:`lume_ray.cluster.auth`); the token goes to the SDK through its public ``headers`` argument
only: never printed, logged or stored. What ``lume-ray submit`` and ``lume-ray jobs`` print is made here
(:func:`jobs_table`, :func:`info_lines`) and printed by :mod:`lume_ray.cli`.
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
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lume_ray.cluster import ClusterError, first_line
from lume_ray.cluster.auth import headers_for
from lume_ray.cluster.upload import (
    SECRET_PATTERNS,
    WORKING_DIR_EXCLUDES,
    Upload,
    find_project,
    find_root,
    git_commit,
    plan_upload,
    ship_plugins,
    stage,
)
from lume_ray.config import load_experiment
from lume_ray.redact import redact_secrets, userinfo

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
DEFAULT_DASHBOARD_PORT = 8265

# Never shipped to the cluster: environments, VCS data, run outputs, caches.
SECRET_ENV = "LUME_RAY_SECRET_{}"  # a --set value holding a credential reaches the job in this variable

# Passed to the job's driver (and, through Train's propagation list, to its workers).
JOB_ENV_DEFAULTS = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",  # report() latency: default poll 2 s (docs/ray.md section 1)
    "PYTHONUNBUFFERED": "1",  # logs reach `jobs logs --follow` as they are written
    "TOKENIZERS_PARALLELISM": "false",
}
# Forwarded from the submitting shell when set there (no secrets: job env vars are visible in the dashboard).
JOB_ENV_FORWARD = ("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "DS_ACCELERATOR", "TORCH_EXTENSIONS_DIR", "LUME_RAY_DEBUG")


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
    headers = headers_for(url)  # https, or plain http to a loopback address only
    _check_reachable(url)
    from ray.exceptions import AuthenticationError  # heavy: Ray, only to connect
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(url, headers=headers)
    except AuthenticationError as e:
        raise _auth_error(url, e) from None
    except ConnectionError:
        raise ClusterError(f"cannot reach the Ray dashboard at {url}; is the cluster up?") from None
    except RuntimeError as e:
        if "ray[default]" in str(e):
            raise ClusterError("the Ray Jobs SDK needs ray[default] on this machine; "
                               "install it with: pip install 'lume-ray[cluster]'") from None
        raise ClusterError(f"{url} does not answer like a Ray dashboard: {first_line(e)}") from None


def _auth_error(url: str, e: Exception) -> ClusterError:
    if "Authentication failed" in str(e) or "invalid" in str(e).lower():
        return ClusterError(f"the cluster at {url} rejected the auth token; use the token of that cluster "
                            "(~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN)")
    return ClusterError(f"the cluster at {url} requires token authentication: set RAY_AUTH_MODE=token and "
                        "provide its token in ~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN")


def _call(client: Any, what: str, fn: Any, *args: Any) -> Any:
    """An SDK call with its errors turned into one line (unknown job ids, auth, lost connection)."""
    from ray.exceptions import AuthenticationError  # heavy: Ray, only for SDK calls

    try:
        return fn(*args)
    except AuthenticationError as e:
        raise _auth_error(client.get_address(), e) from None
    except ConnectionError:
        raise ClusterError(f"lost the connection to {client.get_address()} while trying to {what}") from None
    except RuntimeError as e:
        msg = str(e)
        if "404" in msg or "does not exist" in msg:
            job = args[0] if args else "?"
            raise ClusterError(f"no job {job!r} on {client.get_address()}; "
                               f"`lume-ray jobs list --address {client.get_address()}` lists them") from None
        raise ClusterError(f"could not {what}: {first_line(e)}") from None


@dataclass(frozen=True)
class Submission:
    """Everything ``submit_job`` gets: what runs, with which files and environment, under which id."""

    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str]
    submission_id: str
    output_dir: str  # where the sweep writes RUN_DIR on the cluster (may contain $HOME)
    upload: Upload | None = None  # what working_dir holds (files, bytes, what was left out)

    def cleanup(self) -> None:
        """Remove the private copy of the selected files, once the upload is done (a no-op otherwise)."""
        if self.upload is not None and self.upload.staged:
            shutil.rmtree(self.upload.root, ignore_errors=True)


def _secret_sets(overrides: list[tuple[str, str]]) -> tuple[list[str], dict[str, str]]:
    """The entrypoint's ``--set`` arguments and the job's extra environment: a value holding a credential is
    passed in the environment (a tracking URI's ``user:password@`` as MLflow's MLFLOW_TRACKING_USERNAME /
    MLFLOW_TRACKING_PASSWORD, anything else as LUME_RAY_SECRET_<n>, expanded by the job's shell), never in the
    entrypoint, which the dashboard and ``lume-ray jobs`` show."""
    sets, env = [], {}
    for k, v in overrides:
        if redact_secrets(v) == v:
            sets.append(shlex.quote(f"{k}={v}"))
            continue
        split = userinfo(v) if k == "tracking.mlflow.uri" else None
        if split is not None and redact_secrets(split[0]) == split[0]:
            sets.append(shlex.quote(f"{k}={split[0]}"))
            env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"] = split[1], split[2]
            continue
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", k):
            raise ClusterError(f"--set {k}=...: a key of letters, digits, '.', '_' and '-' expected")
        var = SECRET_ENV.format(sum(name.startswith("LUME_RAY_SECRET_") for name in env) + 1)
        env[var] = v
        sets.append(f'"{k}=${{{var}}}"')  # double quotes: the job's shell expands it, the entrypoint holds no secret
    return sets, env


def job_env() -> dict[str, str]:
    env = dict(JOB_ENV_DEFAULTS)
    env.update({k: os.environ[k] for k in JOB_ENV_FORWARD if os.environ.get(k)})
    return env


def build_submission(experiment: str | Path, overrides: list[tuple[str, str]] | None = None,
                     root: str | Path | None = None) -> Submission:
    """Validate the experiment here (so a typo fails now, not on the cluster) and package the sweep job.
    ``root``: the directory to upload (``--working-dir``); default: see :func:`plan_upload`."""
    overrides = list(overrides or [])
    exp_path = Path(experiment)
    exp = load_experiment(exp_path, overrides)  # ConfigError (a ValueError) on any bad key or value
    upload, rel = plan_upload(exp, exp_path, root)
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
    sets, secret_env = _secret_sets(overrides)
    if output_dir != exp.output_dir:
        sets.append(f'"output_dir={output_dir}"')  # double quotes: $HOME expands on the cluster
    plugins, py_modules = ship_plugins(exp.plugins, upload.root, exp_path.resolve().parent)
    if exp.plugins:
        sets.append(shlex.quote(f"plugins=[{', '.join(plugins)}]"))
    if sets:
        parts += ["--set", *sets]
    if upload.mode == "selected":  # only the selected files, in a private copy
        upload.root, upload.staged = stage(upload.root, upload.files), True
    excludes = SECRET_PATTERNS + WORKING_DIR_EXCLUDES + upload.large
    runtime_env = {"working_dir": str(upload.root), "excludes": excludes, "env_vars": {**job_env(), **secret_env},
                   **({"py_modules": py_modules} if py_modules else {})}
    metadata = {
        "submitted_by": "lume-ray", "experiment": exp.name, "experiment_path": rel,
        "overrides": json.dumps([redact_secrets(f"{k}={v}") for k, v in overrides]),
        "git_commit": git_commit(find_project(exp_path) or find_root(exp_path)), "output_dir": output_dir,
    }
    return Submission(" ".join(parts), runtime_env, metadata, submission_id, output_dir, upload)


def submit(client: Any, sub: Submission) -> str:
    """Upload the working dir and start the job; returns its submission id. A private copy of the selected files
    is removed once uploaded."""
    try:
        return str(_call(client, "submit the job", lambda: client.submit_job(
            entrypoint=sub.entrypoint, runtime_env=sub.runtime_env, metadata=sub.metadata,
            submission_id=sub.submission_id)))
    finally:
        sub.cleanup()


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




def list_jobs(client: Any) -> list[Any]:
    """The cluster's jobs (the SDK's ``JobDetails``), oldest first."""
    return sorted(_call(client, "list the jobs", client.list_jobs), key=lambda j: j.start_time or 0)


def job_info(client: Any, job_id: str) -> Any:
    """The SDK's ``JobDetails`` of one job (status, entrypoint, times, exit code, message, metadata)."""
    return _call(client, "read the job info", client.get_job_info, job_id)


def stop(client: Any, job_id: str) -> bool:
    """Ask the job to stop; False when it had already finished."""
    return bool(_call(client, "stop the job", client.stop_job, job_id))


def skipped_files(sub: Submission) -> list[str]:
    """The large files the submission leaves out of the working directory (beyond the standard excludes)."""
    return [e for e in sub.runtime_env["excludes"] if e not in WORKING_DIR_EXCLUDES and e not in SECRET_PATTERNS]


def _fmt_time(ms: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"


def jobs_table(jobs: list[Any]) -> list[str]:
    """The lines of ``lume-ray jobs list``: a header, one line per job, or ``(no jobs)``."""
    lines = [f"{'JOB':<44} {'STATUS':<10} {'STARTED':<19} {'EXPERIMENT':<16} ENTRYPOINT"]
    for j in jobs:
        exp = (j.metadata or {}).get("experiment", "-")
        entry = j.entrypoint if len(j.entrypoint) <= 60 else j.entrypoint[:57] + "..."
        lines.append(f"{(j.submission_id or j.job_id or '-'):<44} {j.status.value:<10} "
                     f"{_fmt_time(j.start_time):<19} {exp:<16} {entry}")
    if not jobs:
        lines.append("(no jobs)")
    return lines


def info_lines(job_id: str, info: Any) -> list[str]:
    """The lines of ``lume-ray jobs status JOB``."""
    lines = [f"job:        {job_id}", f"status:     {info.status.value}", f"entrypoint: {info.entrypoint}",
             f"started:    {_fmt_time(info.start_time)}", f"ended:      {_fmt_time(info.end_time)}"]
    if info.driver_exit_code is not None:
        lines.append(f"exit code:  {info.driver_exit_code}")
    if info.message:
        lines.append(f"message:    {first_line(Exception(info.message))}")
    lines += [f"{k + ':':<11} {v}" for k, v in sorted((info.metadata or {}).items())]
    return lines


__all__ = [
    "Submission", "TERMINAL", "build_submission", "connect", "follow", "info_lines", "job_env", "job_info",
    "jobs_table", "list_jobs", "log_tail", "logs", "normalize_address", "skipped_files", "status",
    "stop", "submit", "wait",
]
