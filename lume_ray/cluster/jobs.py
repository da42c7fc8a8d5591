"""Ray Jobs: an experiment YAML -> a sweep job on a Ray cluster; job status, logs and stop.

Input:  ``lume-ray submit EXPERIMENT --address http://HEAD:8265 [--set k=v ...]``, ``lume-ray jobs
        list|status|logs|stop [JOB] --address URL``; a running Ray cluster with ``ray[default]``.
Output: a submitted job (its id and how to follow it), job tables, logs, the job's exit status.

What is uploaded (the job's ``working_dir``, :func:`select_files`): from a lume-ray checkout (the experiment inside a
directory whose pyproject.toml names lume-ray), that checkout; else only the experiment file and the files it names
(data, member / non-member / utility files, the target, plugins), copied into a private temporary directory;
``--working-dir DIR``: that directory. Always left out: :data:`SECRET_PATTERNS` (``.env``, ``.ssh/``, ``.aws/``,
``.ray/``, keys, credentials) at any depth, environments, VCS data, run outputs, caches and weights. The file count
and size are shown, and more than :data:`MAX_UPLOAD_BYTES` is refused unless the directory was named explicitly.
A ``--set`` value holding a credential (a URL's password, a ``?token=``) never enters the entrypoint or the
metadata (:mod:`lume_ray.redact`): the job gets it in its environment.
Plugins travel inside the working directory, or as ``py_modules`` (:func:`ship_plugins`); the job's
command line names them as the cluster sees them (``--set plugins=[...]``).

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
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lume_ray.cluster import ClusterError, first_line
from lume_ray.cluster.auth import headers_for
from lume_ray.config import load_experiment
from lume_ray.plugins import is_path, module_name
from lume_ray.redact import redact_secrets, userinfo

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
DEFAULT_DASHBOARD_PORT = 8265

# Never shipped to the cluster: environments, VCS data, run outputs, caches.
WORKING_DIR_EXCLUDES = [
    ".venv", "venv", ".git", "runs", "__pycache__", "*.pyc", "*.egg-info", ".mypy_cache",
    ".ruff_cache", ".pytest_cache", ".ipynb_checkpoints", "*.safetensors", "*.bin", "*.pt", "*.ckpt",
]
# Never shipped, wherever they are (a name or a pattern matched against every path component, as Ray's excludes
# match a pattern without a slash at any depth): secrets of the user's home directory and of projects.
SECRET_PATTERNS = [
    ".env", ".env.*", "*.env", ".envrc", ".ssh", ".aws", ".azure", ".gcloud", ".kube", ".docker", ".ray", ".gnupg",
    ".netrc", "_netrc", ".git-credentials", ".pypirc", ".npmrc", ".pgpass", ".vault-token", ".terraformrc",
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore",
    "credentials", "credentials.json", "*.kdbx",
]
LARGE_FILE_BYTES = 20 * 2**20  # Ray's package upload limit is 512 MiB; anything this big is data, not code.
MAX_UPLOAD_BYTES = 100 * 2**20  # more than this is refused unless --working-dir names the directory (Ray's: 500 MiB)
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


@dataclass
class Upload:
    """The job's working directory: its root, the files Ray will ship from it, and what was left out."""

    root: Path
    files: list[str]  # relative to root
    size: int
    mode: str  # "project", "selected" (the experiment and its files, copied) or "explicit" (--working-dir)
    large: list[str] = field(default_factory=list)  # over LARGE_FILE_BYTES, left out
    staged: bool = False  # root is a private copy (removed after the upload)

    def summary(self) -> str:
        what = {"project": "the lume-ray checkout", "selected": "the experiment and the files it names",
                "explicit": "--working-dir"}[self.mode]
        source = f" {self.root}" if not self.staged else ""
        return f"{len(self.files)} file(s), {_size(self.size)}: {what}{source}"


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def find_root(start: Path) -> Path:
    """The project directory holding ``start``: the nearest ancestor with pyproject.toml or .git."""
    start = start.resolve()
    for d in [start, *start.parents] if start.is_dir() else list(start.parents):
        if (d / "pyproject.toml").is_file() or (d / ".git").exists():
            return d
    return Path.cwd().resolve()


def find_project(start: Path) -> Path | None:
    """The lume-ray checkout holding ``start``: the nearest ancestor whose pyproject.toml names lume-ray."""
    start = start.resolve()
    for d in [start, *start.parents] if start.is_dir() else list(start.parents):
        try:
            text = (d / "pyproject.toml").read_text()
        except OSError:
            continue
        if re.search(r'(?m)^\s*name\s*=\s*["\']lume[-_]ray["\']', text):
            return d
    return None


def _git_commit(root: Path) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha + ("-dirty" if dirty else "")) if sha else "unknown"


def excluded(name: str, patterns: list[str]) -> bool:
    """Whether a path component matches one of ``patterns`` (a name or a glob)."""
    return any(fnmatch(name, p) for p in patterns)


def walk_files(root: Path, patterns: list[str]) -> list[Path]:
    """Every regular file under ``root`` (``root`` itself when it is a file) whose path has no component matching
    ``patterns``; symbolic links are not followed."""
    if root.is_file() and not root.is_symlink():
        return [] if excluded(root.name, patterns) else [root]
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not excluded(d, patterns)
                             and not (Path(dirpath) / d).is_symlink())
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if not excluded(name, patterns) and p.is_file() and not p.is_symlink():
                found.append(p)
    return found


def large_files(root: Path, excludes: list[str], limit: int = LARGE_FILE_BYTES) -> list[str]:
    """Paths (relative to ``root``) of files over ``limit`` bytes outside the excluded directories."""
    found = []
    for p in walk_files(root, excludes):
        try:
            if p.stat().st_size > limit:
                found.append(p.relative_to(root).as_posix())
        except OSError:
            continue
    return sorted(found)


def named_paths(exp: Any) -> list[str]:
    """The experiment's own file paths (data, member / non-member / utility files, target, plugins), as written:
    what a job run from an upload of the experiment alone needs. A path under ``{output_dir}`` is the sweep's own
    (built on the cluster), an absolute one the cluster's: neither is uploaded."""
    d = exp.data
    paths = [d.path, d.member, d.nonmember, None if d.utility in (None, "auto", "mmlu") else d.utility,
             exp.target.model, *getattr(exp, "plugins", ())]
    return [p for p in paths if isinstance(p, str) and p and "{output_dir}" not in p and not os.path.isabs(p)]


def select_files(root: Path, entries: list[Path], patterns: list[str]) -> tuple[list[str], list[str], int]:
    """The files under ``entries`` (files or directories inside ``root``), minus ``patterns`` and files over
    :data:`LARGE_FILE_BYTES`: (shipped paths, large paths, shipped bytes), paths relative to ``root``."""
    shipped: dict[str, int] = {}
    large = []
    for entry in entries:
        for p in walk_files(entry, patterns):
            rel = p.relative_to(root)
            if any(excluded(part, patterns) for part in rel.parts):  # a component above `entry`
                continue
            size = p.stat().st_size
            if size > LARGE_FILE_BYTES:
                large.append(rel.as_posix())
            else:
                shipped[rel.as_posix()] = size
    return sorted(shipped), sorted(set(large)), sum(shipped.values())


def _stage(root: Path, files: list[str]) -> Path:
    """A private (0700) temporary copy of ``files`` (relative to ``root``), at the same relative paths."""
    staged = Path(tempfile.mkdtemp(prefix="lume-ray-submit-"))
    for rel in files:
        dest = staged / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(root / rel, dest)  # no copy where the file system allows
        except OSError:
            shutil.copy2(root / rel, dest)
    return staged


def plan_upload(exp: Any, exp_path: Path, working_dir: str | Path | None) -> tuple[Upload, str]:
    """What the job's working_dir holds, and the experiment's path inside it. One-line errors: an experiment
    outside the directory, an upload over :data:`MAX_UPLOAD_BYTES` (unless ``working_dir`` was given)."""
    patterns = SECRET_PATTERNS + WORKING_DIR_EXCLUDES
    project = find_project(exp_path) if working_dir is None else None
    if working_dir is not None or project is not None:
        root = Path(working_dir).resolve() if working_dir is not None else project
        assert root is not None
        if not root.is_dir():
            raise ClusterError(f"--working-dir {working_dir}: not a directory")
        try:
            rel = exp_path.resolve().relative_to(root).as_posix()
        except ValueError:
            raise ClusterError(f"{exp_path}: the experiment must live inside the working directory {root} that is "
                               "shipped to the cluster") from None
        files, large, size = select_files(root, [root], patterns)
        upload = Upload(root, files, size, "explicit" if working_dir is not None else "project", large)
    else:
        root = Path.cwd().resolve()
        exp_abs = exp_path.resolve()
        try:
            rel = exp_abs.relative_to(root).as_posix()
        except ValueError:
            raise ClusterError(f"{exp_path}: outside the current directory {root}; run lume-ray submit from the "
                               "directory its relative paths start from, or pass --working-dir DIR") from None
        if any(excluded(part, patterns) for part in Path(rel).parts):
            raise ClusterError(f"{exp_path}: its path matches a pattern that is never uploaded "
                               f"({', '.join(p for p in patterns if any(fnmatch(x, p) for x in Path(rel).parts))})")
        entries = [exp_abs] + [(root / p).resolve() for p in named_paths(exp) if (root / p).exists()]
        entries = [e for e in entries if e == root or root in e.parents]  # inside the current directory only
        files, large, size = select_files(root, entries, patterns)
        upload = Upload(root, files, size, "selected", large, staged=False)
    if working_dir is None and size > MAX_UPLOAD_BYTES:
        raise ClusterError(f"the upload for the job would be {_size(size)} in {len(files)} file(s) from {root}, over "
                           f"the {_size(MAX_UPLOAD_BYTES)} limit: keep data out of it (point data.path at the "
                           "cluster's copy) or name the directory to upload with --working-dir DIR")
    return upload, rel


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


def ship_plugins(specs: tuple[str, ...], root: Path, exp_dir: Path) -> tuple[list[str], list[str]]:
    """How each plugin reaches the job: (the experiment's ``plugins`` as the cluster reads them, ``py_modules``).
    A file or package inside the working directory travels with it (its path relative to the experiment file); a
    package directory outside it is a ``py_modules`` entry, imported by its name; a module name stays as given
    (installed on the cluster). A single file outside the working directory cannot travel: Ray's Jobs API ships
    ``py_modules`` directories only."""
    plugins: list[str] = []
    py_modules: list[str] = []
    for spec in specs:
        if not is_path(spec):
            plugins.append(spec)
            continue
        path = Path(spec)
        if path.is_relative_to(root):
            plugins.append(Path(os.path.relpath(path, exp_dir)).as_posix())
        elif path.is_dir():
            py_modules.append(str(path))
            plugins.append(module_name(spec))
        else:
            raise ClusterError(f"plugin {spec}: outside the working directory {root} shipped to the cluster: move "
                               "it inside, or make it a package directory (a folder with __init__.py, shipped as "
                               "the job's py_modules)")
    return plugins, py_modules


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
        upload.root, upload.staged = _stage(upload.root, upload.files), True
    excludes = SECRET_PATTERNS + WORKING_DIR_EXCLUDES + upload.large
    runtime_env = {"working_dir": str(upload.root), "excludes": excludes, "env_vars": {**job_env(), **secret_env},
                   **({"py_modules": py_modules} if py_modules else {})}
    metadata = {
        "submitted_by": "lume-ray", "experiment": exp.name, "experiment_path": rel,
        "overrides": json.dumps([redact_secrets(f"{k}={v}") for k, v in overrides]),
        "git_commit": _git_commit(find_project(exp_path) or find_root(exp_path)), "output_dir": output_dir,
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
    "MAX_UPLOAD_BYTES", "SECRET_PATTERNS", "Submission", "TERMINAL", "Upload", "build_submission", "connect", "follow", "info_lines", "job_env", "job_info",
    "jobs_table", "large_files", "list_jobs", "log_tail", "logs", "normalize_address", "plan_upload", "skipped_files", "status",
    "stop", "submit", "wait",
]
