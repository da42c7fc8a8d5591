"""[3 evaluate] The sweep's evaluation pool: model directories -> metrics, by model actors that live for a whole sweep.

Input:  the sweep's LUME inputs, :class:`~lume_ray.config.EvalConfig` and plugins (once), then model directories (every
        trial's evaluation points, the base model first) with the directory each point's outputs go to.
Output: per model, the metrics dict, ``rows.parquet`` and ``metrics.json``: the same records and aggregation as
        :func:`lume_ray.evaluate.runner.evaluate_many` (shared :class:`~lume_ray.evaluate.scoring.Scorer` and
        :func:`~lume_ray.evaluate.runner.finish`).

Why not a Ray Data pipeline per point: a pipeline starts its actor pool on every call (~6 s here: a process,
torch, transformers, the weights), more than a memorized model's whole evaluation, and each trial paid it
again. Here one async dispatcher actor owns ``workers`` Scorer actors for the sweep's lifetime and feeds them
batches from every trial as they arrive (oldest first, preferring a batch of the model an actor already holds,
so actors rarely reload). ``lume-ray eval`` keeps Ray Data: a single evaluation has nothing to share.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lume_ray.config import EvalConfig


class EvalPool:
    """A Ray actor (``ray.remote(EvalPool)``, async): ``await pool.evaluate.remote(model, out_dir, ref)``."""

    def __init__(self, *, data: str, settings: dict[str, Any], base_model: str, members: Any = None,
                 nonmembers: Any = None, utility: Any = None, trust_remote_code: bool = False,
                 plugins: Sequence[str] = ()) -> None:
        import ray  # heavy: ray

        from lume_ray.plugins import load_plugins  # heavy: torch

        load_plugins(plugins)  # their metrics are computed here (finish -> run_metrics)

        from lume_ray.evaluate.inputs import plan  # heavy: torch (lume_ray.model)
        from lume_ray.evaluate.runner import actor_resources, scorer_kwargs  # heavy: torch (lume_ray.model)
        from lume_ray.evaluate.scoring import Scorer  # heavy: torch (lume_ray.model)

        self.settings = EvalConfig.model_validate(settings)
        # The inputs are the same for every point of the sweep: resolved and checked once.
        self.inputs = plan([base_model], data, self.settings, members, nonmembers, utility, trust_remote_code)[0].inputs
        cpus, gpus = actor_resources(self.settings)
        actor = ray.remote(Scorer).options(num_cpus=cpus, num_gpus=gpus)
        kwargs = scorer_kwargs(self.settings, trust_remote_code, bool(gpus))
        self.scorers = [actor.remote(**kwargs) for _ in range(self.settings.workers)]
        self.queue: list[tuple[str, list[dict[str, Any]], asyncio.Future[Any]]] = []
        self.ready: asyncio.Condition | None = None
        self.jobs = itertools.count()
        self.tasks: list[asyncio.Task[None]] = []
        self.busy_s = 0.0

    def describe(self) -> str:
        return (f"{len(self.scorers)} model actor(s), {len(self.inputs.items)} items per model, "
                f"batches of {self.settings.batch_size}{' (exact)' if self.settings.exact else ''}")

    async def _start(self) -> None:
        if self.ready is None:
            self.ready = asyncio.Condition()
            self.tasks = [asyncio.get_running_loop().create_task(self._serve(s)) for s in self.scorers]

    async def _serve(self, scorer: Any) -> None:
        """One actor's loop: take a batch (of the model it holds, else the oldest), score it, hand it back."""
        assert self.ready is not None
        loaded: str | None = None
        while True:
            async with self.ready:
                await self.ready.wait_for(lambda: bool(self.queue))
                pick = next((i for i, (model, _, _) in enumerate(self.queue) if model == loaded), 0)
                model, batch, future = self.queue.pop(pick)
            loaded = model
            t0 = time.perf_counter()
            try:
                future.set_result(await scorer.score.remote(batch))
            except Exception as e:  # the caller's evaluate() raises it
                future.set_exception(e)
            self.busy_s += time.perf_counter() - t0

    async def evaluate(self, model: str, out_dir: str | None, reference_utility: float | None) -> dict[str, Any]:
        """Evaluate one model directory; writes ``out_dir``'s rows.parquet and metrics.json."""
        from lume_ray.evaluate.inputs import Plan  # heavy: torch (lume_ray.model)
        from lume_ray.evaluate.runner import finish, job_items  # heavy: torch (lume_ray.model)

        await self._start()
        assert self.ready is not None
        start = time.perf_counter()
        plan = Plan(str(model), self.inputs)
        job = next(self.jobs)
        items = [{**it, "job": job} for it in job_items([plan])]
        size = self.settings.batch_size
        loop = asyncio.get_running_loop()
        futures = []
        async with self.ready:
            for i in range(0, len(items), size):
                future: asyncio.Future[Any] = loop.create_future()
                self.queue.append((plan.model, items[i : i + size], future))
                futures.append(future)
            self.ready.notify_all()
        batches = await asyncio.gather(*futures)
        results = [{k: v for k, v in rec.items() if k != "job"} for batch in batches for rec in batch]
        return finish(plan, results, self.settings, reference_utility, None if out_dir is None else Path(out_dir),
                      time.perf_counter() - start, "pool")

    def stats(self) -> dict[str, Any]:
        return {"actors": len(self.scorers), "queued_batches": len(self.queue), "busy_s": round(self.busy_s, 1)}


def start_pool(*, data: str, settings: EvalConfig, base_model: str, members: Any = None, nonmembers: Any = None,
               utility: Any = None, trust_remote_code: bool = False, name: str | None = None,
               plugins: Sequence[str] = ()) -> Any:
    """Start the pool actor (its own CPUs are tiny: it only dispatches) and return its handle."""
    import ray  # heavy: ray

    return ray.remote(EvalPool).options(num_cpus=0, name=name, max_concurrency=1000).remote(
        data=data, settings=settings.model_dump(mode="json"), base_model=base_model, members=members,
        nonmembers=nonmembers, utility=utility, trust_remote_code=trust_remote_code, plugins=list(plugins))


@contextlib.contextmanager
def evaluation_pool(**kwargs: Any) -> Iterator[Any]:
    """:func:`start_pool` for a ``with`` block; the pool (and the model actors it owns) is killed at its end, so
    its CPUs go back to the cluster (a session that runs several sweeps would otherwise run out of them)."""
    import ray  # heavy: ray

    pool = start_pool(**kwargs)
    try:
        yield pool
    finally:
        ray.kill(pool)


def evaluate_points(pool: Any, models: Sequence[str], out_dirs: Sequence[str], reference_utility: float | None) -> list[Any]:
    """Submit several models; returns their ObjectRefs (``ray.get`` for the metrics dicts)."""
    return [pool.evaluate.remote(str(m), str(d), reference_utility) for m, d in zip(models, out_dirs, strict=True)]
