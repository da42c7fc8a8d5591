"""What a submitted job uploads: an experiment -> its working directory (only the files the job needs, never a
secret) and how its plugins travel.

Input:  the experiment (its file and the paths it names), ``--working-dir`` when given.
Output: :class:`Upload` (root, files, size, what was left out), :func:`ship_plugins` (the plugins as the cluster
        names them, and the package directories Ray ships as ``py_modules``).

From a lume-ray checkout (the experiment inside a directory whose pyproject.toml names lume-ray), the checkout;
else only the experiment file and the files it names (data, member / non-member / utility files, the target,
plugins), copied into a private temporary directory; ``--working-dir DIR``: that directory. Always left out:
:data:`SECRET_PATTERNS` at any depth, environments, VCS data, run outputs, caches and weights. More than
:data:`MAX_UPLOAD_BYTES` is refused unless the directory was named explicitly.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from lume_ray.cluster import ClusterError
from lume_ray.plugins import is_path, module_name

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


def git_commit(root: Path) -> str:
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


def stage(root: Path, files: list[str]) -> Path:
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


