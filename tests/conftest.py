"""Shared fixtures: one local Ray cluster per session, a tiny LUME dataset, a tiny OLMo model, the session's
two-worker job and sweep. Plain helper functions and constants are in tests/helpers.py.

Everything is real (Ray on 127.0.0.1, transformers models built from configs); nothing downloads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # never touch ~/.ray/auth_token in tests
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")  # report() latency 2 s -> 0.1 s
# Nothing is preempted on a local cluster: one process fewer per Ray Train run (~2.5 CPU-s of imports each here).
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network here: a hub lookup fails at once, not after retries
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# After the environment above: the helpers import lume_ray, which may import Ray (it reads RAY_AUTH_MODE then).
from lume_ray.testing import tiny_model as build_tiny_model  # noqa: E402
from tests.helpers import small_experiment, unlearn_job, write_tiny_lume  # noqa: E402

T = TypeVar("T")


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], T],
               load: Callable[[Path], T]) -> T:
    """A session fixture's work done once per test run, not once per pytest-xdist worker (scripts/test.sh runs two):
    the first worker to take the lock builds into a directory of the run's base temp dir, which the workers share;
    the others wait for it and ``load`` what it wrote (pytest-xdist's documented recipe for session fixtures).
    Without xdist: ``build`` into a fresh temp dir."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return build(tmp_path_factory.mktemp(name))
    import shutil

    from filelock import FileLock

    root = tmp_path_factory.getbasetemp().parent / name  # basetemp/popen-gwN -> basetemp
    with FileLock(f"{root}.lock"):
        if (root / ".built").exists():
            return load(root)
        shutil.rmtree(root, ignore_errors=True)  # what a worker whose build failed left
        root.mkdir()
        value = build(root)
        (root / ".built").touch()
        return value


@pytest.fixture(scope="session")
def tiny_lume(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hand-written LUME-format directory: 3 documents x 2 splits, 20 rows."""
    return write_tiny_lume(tmp_path_factory.mktemp("tiny_lume"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tiny_lume: Path) -> Path:
    """A randomly initialized tiny OLMo + BPE tokenizer trained on ``tiny_lume``, saved as an HF dir."""
    from lume_ray.data import load_lume

    out = tmp_path_factory.mktemp("tiny_model")
    build_tiny_model(load_lume(tiny_lume), out, seed=0)
    return out


@pytest.fixture(scope="module")
def one_torch_thread() -> Any:
    """Tiny models gain nothing from threads, and on a shared 2-core box two OpenMP threads were measured
    20-80x slower than one (spinning against other processes); Ray's actors get one thread anyway."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# The fixtures that start (or need) the session's local Ray cluster: a test using any of them is marked ``ray``,
# so ``pytest -m "not ray"`` (``bash scripts/test.sh --fast``) never starts Ray.
RAY_FIXTURES = {"ray_local", "two_worker_run", "finished_sweep"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def ray_local():
    """One real local Ray cluster (127.0.0.1 only) shared by the whole session."""
    import ray

    from lume_ray.local_ray import start_local, stop_local

    if not ray.is_initialized():
        start_local(num_cpus=4, object_store_mb=200)
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
    stop_local()


@pytest.fixture(scope="module")
def unlearning_setup(tiny_model: Path, tiny_lume: Path, one_torch_thread: Any) -> dict[str, Any]:
    """A tiny OLMo that memorized the rows a little (so unlearning has something to undo), forget/retain batches of
    four rows, every encoded row and the pad id: what the algorithm tests (hand-checked and contract) run on."""
    from lume_ray.data import load_lume
    from lume_ray.model import load_model
    from lume_ray.testing import unlearning_setup as setup

    model, tok = load_model(tiny_model)
    return setup(model, tok, load_lume(tiny_lume))


@pytest.fixture
def no_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands run in-process without their quiet console (lume_ray.console, tested in test_console.py): it points
    this process's file descriptors 1 and 2 at a pipe for the command's duration, and under pytest's own capture
    the output of later tests was lost. The command's own lines and its one-line errors stay on sys.stdout/stderr."""
    from contextlib import nullcontext

    import lume_ray.cli

    monkeypatch.setattr(lume_ray.cli, "_quiet", lambda *args, **kw: nullcontext())


@pytest.fixture
def no_input_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests of the CLI's flag plumbing with the stage stubbed and made-up paths ("m", "d"): skip the commands'
    up-front data/model checks (tested on their own in test_config.py and test_train.py)."""
    import lume_ray.cli

    monkeypatch.setattr(lume_ray.cli, "check_job_inputs", lambda job, **kw: None)
    monkeypatch.setattr(lume_ray.cli, "check_eval_inputs", lambda model, data, utility, **kw: utility)


@pytest.fixture(scope="session")
def two_worker_run(ray_local: Any, tiny_model: Path, tiny_lume: Path, tmp_path_factory: pytest.TempPathFactory
                   ) -> tuple[Any, Any]:
    """One two-worker ZeRO-3 npo job per test run (4 steps, points at 2 and 4): read by test_train.py, and by
    test_multinode.py as the one-node reference for the same job across two nodes."""
    from lume_ray.config import UnlearnJob
    from lume_ray.train import run_unlearning

    def build(root: Path) -> tuple[Any, Any]:
        cfg = unlearn_job(root, tiny_model, tiny_lume, "zero3x2")
        return cfg, run_unlearning(cfg)

    def load(root: Path) -> tuple[Any, Any]:  # a finished job's out: run_unlearning returns its stored result
        cfg = UnlearnJob.model_validate_json((root / "zero3x2" / "config.json").read_text())
        return cfg, run_unlearning(cfg)

    return built_once(tmp_path_factory, "two_worker_run", build, load)


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory: pytest.TempPathFactory, tiny_lume: Path, tiny_model: Path, ray_local: Any) -> Path:
    """One real sweep per test run (ga and npo, one trial each, run side by side, 2 points per trial, MLflow
    tracking on a local store), read by test_sweep.py and test_tracking.py: a sweep is a minute or two here.
    Several trials per algorithm, sampler proposals after the initial design: test_search.py's Tune run."""
    from lume_ray.config import experiment_from_dict
    from lume_ray.search.sweep import run_sweep

    def build(root: Path) -> Path:
        raw = small_experiment(root, tiny_lume, tiny_model, num_samples=1, max_concurrent=2)
        raw["tracking"] = {"mlflow": {}}
        return run_sweep(experiment_from_dict(raw)).root

    return built_once(tmp_path_factory, "finished_sweep", build, lambda root: root / "run")
