"""[3 evaluate] Evaluation runners: models + LUME inputs -> per-row scores (rows.parquet) and metrics.json.

Input:  model directories or hub ids, a LUME dataset, MIA documents, a utility set, :class:`EvalConfig`.
Output: the metrics dict (what ``metrics.json`` holds) per model and, with ``out_dirs``, ``rows.parquet``
        (id, split, task, kind, input, output, generation, score, nll) and ``metrics.json``.

:func:`evaluate_many` runs a Ray Data pipeline: items (rows, documents, options) sorted by token length ->
``map_batches(Scorer, ActorPoolStrategy)``: each actor loads a model once, generates a batch greedily with
left padding, scores it, and takes the losses in a second batched pass -> aggregation
(:func:`lume_ray.evaluate.metrics.run_metrics`). Several models (a trial's evaluation points) share one
pipeline, so the actor pool's start-up is paid once. :func:`evaluate_reference` is the plain loop the
challenge ran (one prompt at a time, in process); the tests and ``benchmarks/bench_eval.py`` check that both
give the same numbers. Batched float math is not bit-identical to unbatched: an exact near-tie of two logits
can flip one greedy token (measured: 1 of 400 rows of a random-weight model, ~190 tokens into a repetitive
babble; scores unchanged); in bfloat16 such flips are common. ``EvalConfig.exact`` makes every actor score one
item at a time, unpadded (generation, losses, MMLU answers), the challenge's procedure in any dtype, while the
items still spread over the actor pool.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Generator, Iterable, Sequence
from pathlib import Path
from typing import Any

from lume_ray.config import EvalConfig
from lume_ray.data import KINDS, LumeData
from lume_ray.evaluate.inputs import DocsArg, EvalError, Plan, UtilityArg, plan, resolve_inputs
from lume_ray.evaluate.metrics import METRICS, MetricInputs, run_metrics
from lume_ray.evaluate.prompts import pick_option
from lume_ray.evaluate.protocol import TASK_SCORE_NAMES, task_score_name
from lume_ray.evaluate.scoring import Scorer, score_model
from lume_ray.files import atomic_file, write_json
from lume_ray.local_ray import ray_session
from lume_ray.model import load_model

MAX_PIPELINE_ITEMS = 200_000  # items (x models) one evaluate_many pipeline holds at most
DEFAULT = EvalConfig()  # the challenge's settings
ROW_COLUMNS = ("id", "split", "task", "kind", "input", "output", "generation", "score", "nll")


class Progress:
    """Log lines and a progress bar on stderr, or nothing."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def log(self, msg: str) -> None:
        if self.enabled:
            print(f"eval: {msg}", file=sys.stderr, flush=True)


def actor_resources(settings: EvalConfig) -> tuple[float, float]:
    """(CPUs, GPUs) per actor, keeping at least one CPU (or half the node) free for Ray Data's tasks."""
    import ray  # heavy: ray

    resources = ray.cluster_resources()
    total = float(resources.get("CPU", 1.0))
    gpus = settings.gpus_per_actor
    if gpus is None:
        gpus = 1.0 if resources.get("GPU", 0.0) >= 1 else 0.0
    cpus = settings.cpus_per_actor
    if cpus is None:
        spare = total - 1.0 if total > 1.0 else total / 2
        cpus = min(1.0, spare / settings.workers)
    if cpus * settings.workers >= total:
        raise EvalError(f"eval setting cpus_per_actor={cpus} x workers={settings.workers} takes all {total:g} "
                        "cluster CPUs; Ray Data would hang (leave some free: fewer workers or fewer CPUs each)")
    return cpus, float(gpus)


def scorer_kwargs(settings: EvalConfig, trust_remote_code: bool, use_gpu: bool) -> dict[str, Any]:
    """The model actor's constructor arguments (the same for Ray Data and the sweep's pool)."""
    return {"dtype": settings.dtype, "trust_remote_code": trust_remote_code, "use_gpu": use_gpu,
            "max_new_tokens": settings.max_new_tokens, "batch_size": settings.batch_size, "mia_k": settings.mia_k,
            "exact": settings.exact}


def job_items(plans: Sequence[Plan]) -> list[dict[str, Any]]:
    """Every plan's items tagged with the plan's index (``job``) and model, in plan order."""
    return [{**it, "job": j, "model": p.model} for j, p in enumerate(plans) for it in p.inputs.items]


def _run_ray(plans: Sequence[Plan], settings: EvalConfig, trust_remote_code: bool,
             progress: Progress) -> Generator[tuple[int, list[dict[str, Any]]]]:
    """Stream every plan's items through one actor pool; yields (plan index, its results) as soon as the
    last item of that plan is back, so the first model's metrics are written while later ones run."""
    import ray  # heavy: ray
    import ray.data  # heavy: ray

    cpus, gpus = actor_resources(settings)
    items = job_items(plans)
    models = f"{len(plans)} models, " if len(plans) > 1 else ""
    progress.log(f"{models}{len(items)} items -> {settings.workers} model actor(s) x {cpus:g} CPU"
                 f"{' + 1 GPU' if gpus else ''}, batches of {settings.batch_size}{' (exact)' if settings.exact else ''}")
    # About one block per batch; Ray Data bundles consecutive blocks, so batches keep the (model, stage,
    # length) order.
    blocks = max(1, math.ceil(len(items) / settings.batch_size))
    ds = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        Scorer,
        fn_constructor_kwargs=scorer_kwargs(settings, trust_remote_code, bool(gpus)),
        batch_size=settings.batch_size, batch_format="pandas",
        # One batch in flight per actor: with Ray Data's default (4), the first actor to finish loading
        # takes the first 4 batches, i.e. all the generation work, and the others idle (measured).
        compute=ray.data.ActorPoolStrategy(size=settings.workers, max_tasks_in_flight_per_actor=1),
        num_cpus=cpus, num_gpus=gpus,
    )
    from tqdm import tqdm  # heavy: tqdm

    pending = {j: len(p.inputs.items) for j, p in enumerate(plans)}
    results: dict[int, list[dict[str, Any]]] = {j: [] for j in pending}
    # Consumed once, streaming: each finished batch arrives as soon as an actor returns it.
    with tqdm(total=len(items), desc="eval", unit="item", disable=not progress.enabled, file=sys.stderr) as bar:
        frame: Any
        for frame in ds.iter_batches(batch_size=None, batch_format="pandas"):
            for rec in frame.to_dict(orient="records"):
                j = int(rec.pop("job"))
                results[j].append(rec)
                pending[j] -= 1
                if pending[j] == 0:
                    yield j, results.pop(j)
            bar.update(len(frame))
    if results:
        raise RuntimeError(f"evaluation lost items of {len(results)} model(s): {sorted(pending.items())}")


# ---------------------------------------------------------------------------------------------
# Aggregation and output.


def _nan_to_none(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def finish(
    plan: Plan, results: Iterable[dict[str, Any]], settings: EvalConfig, reference_utility: float | None,
    out_dir: str | os.PathLike[str] | None, seconds: float, runner: str,
) -> dict[str, Any]:
    """One model's result records -> its metrics dict; with ``out_dir``, rows.parquet and metrics.json."""
    inputs = plan.inputs
    by_key = {r["key"]: r for r in results}
    if len(by_key) != len(inputs.items):
        raise RuntimeError(f"evaluation returned {len(by_key)} results for {len(inputs.items)} items")
    rows = []
    for r in inputs.rows:
        res = by_key[f"{r.split}:{r.id}"]
        rows.append({"id": r.id, "split": r.split, "task": r.task, "kind": r.kind, "input": r.input,
                     "output": r.output, "generation": res["generation"], "score": float(res["score"]),
                     "nll": float(res["nll"])})
    correct = []
    for q, c in enumerate(inputs.utility):
        if inputs.utility_style == "open-instruct":  # the answer token picked after the k-shot prompt
            pick = int(by_key[f"mc:{q}"]["pick"])
        else:  # the option whose continuation is most likely
            pick = pick_option([-float(by_key[f"mc:{q}:{j}"]["nll_sum"]) for j in range(len(c.choices))])
        correct.append(pick == c.answer)
    out = run_metrics(MetricInputs(
        rows=rows, members=[by_key[f"member:{d.id}"] for d in inputs.members],
        nonmembers=[by_key[f"nonmember:{d.id}"] for d in inputs.nonmembers], utility_correct=correct,
        reference_utility=reference_utility, floor=settings.utility_floor, notes=list(inputs.notes)))
    out["settings"] = {**settings.model_dump(mode="json"), "utility_style": inputs.utility_style,
                       "utility": inputs.utility_source, "model": plan.model, "data": inputs.source, "runner": runner}
    out["seconds"] = round(seconds, 3)
    out = _nan_to_none(out)
    if out_dir is not None:
        _write(Path(out_dir), rows, out)
    return out


def _write(out_dir: Path, rows: list[dict[str, Any]], result: dict[str, Any]) -> None:
    import pandas as pd  # heavy: pandas

    out_dir.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    with atomic_file(out_dir / "rows.parquet") as tmp:
        frame.to_parquet(tmp, index=False)
    write_json(out_dir / "metrics.json", result)


def evaluate(
    model: str | os.PathLike[str],
    data: LumeData | str | os.PathLike[str],
    settings: EvalConfig = DEFAULT,
    *,
    members: DocsArg = None,
    nonmembers: DocsArg = None,
    utility: UtilityArg = None,
    reference_utility: float | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``data`` with the LUME protocol through a Ray Data actor pool.

    Defaults when the data lives in a directory: members = DATA/mia/member.jsonl or DATA/member.jsonl, else
    the forget documents rebuilt from sc rows; non-members = DATA/mia/nonmember.jsonl or DATA/nonmember.jsonl,
    else none (MIA metrics null); utility = DATA/utility.jsonl, else none. ``utility="mmlu"`` loads MMLU through
    ``datasets``, a directory is read as MMLU (csv or cais/mmlu layout), a file as a multiple-choice jsonl.
    An empty sequence turns a part off. Uses the connected Ray cluster, or starts (and stops) a local one.
    """
    return evaluate_many([model], data, settings, members=members, nonmembers=nonmembers, utility=utility,
                         reference_utility=reference_utility, out_dirs=None if out_dir is None else [out_dir],
                         trust_remote_code=trust_remote_code, progress=progress)[0]


def evaluate_many(
    models: Sequence[str | os.PathLike[str]],
    data: LumeData | str | os.PathLike[str],
    settings: EvalConfig = DEFAULT,
    *,
    members: DocsArg = None,
    nonmembers: DocsArg = None,
    utility: UtilityArg = None,
    reference_utility: float | None = None,
    out_dirs: Sequence[str | os.PathLike[str]] | None = None,
    trust_remote_code: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """:func:`evaluate` for several models (a run's evaluation points) in one Ray Data pipeline: the
    actor pool starts once, and each model's outputs are written as soon as its last item is back.
    Returns the metrics dicts in the order of ``models``; each dict's ``seconds`` is the time from the
    start of this call until that model was done."""
    start = time.perf_counter()
    if not models:
        raise EvalError("evaluate_many: no models given")
    if out_dirs is not None and len(out_dirs) != len(models):
        raise EvalError(f"evaluate_many: {len(models)} models but {len(out_dirs)} out_dirs")
    plans = plan(models, data, settings, members, nonmembers, utility, trust_remote_code)
    log = Progress(progress)
    # A pipeline holds (models x items) items; past MAX_PIPELINE_ITEMS (e.g. the full MMLU for many
    # points) the models go through consecutive pipelines, each starting its own actors.
    per_pipeline = max(1, MAX_PIPELINE_ITEMS // len(plans[0].inputs.items))
    out: dict[int, dict[str, Any]] = {}
    with ray_session(configure_logging=False) as started:
        if started:
            log.log("started a local Ray cluster (127.0.0.1 only)")
        for first in range(0, len(plans), per_pipeline):
            chunk = plans[first : first + per_pipeline]
            with contextlib.closing(_run_ray(chunk, settings, trust_remote_code, log)) as stream:
                for j, results in stream:
                    k = first + j
                    out[k] = finish(plans[k], results, settings, reference_utility,
                                    None if out_dirs is None else out_dirs[k], time.perf_counter() - start, "ray")
    return [out[k] for k in range(len(models))]


def evaluate_reference(
    model: str | os.PathLike[str],
    data: LumeData | str | os.PathLike[str],
    settings: EvalConfig = DEFAULT,
    *,
    members: DocsArg = None,
    nonmembers: DocsArg = None,
    utility: UtilityArg = None,
    reference_utility: float | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """Same inputs and outputs as :func:`evaluate`, computed in this process one prompt at a time (the
    challenge's scorer); ``workers``, ``batch_size`` and ``cpus_per_actor`` are ignored."""
    start = time.perf_counter()
    p = plan([model], data, settings, members, nonmembers, utility, trust_remote_code)[0]
    device = "cuda" if settings.gpus_per_actor else "cpu"
    loaded, tok = load_model(p.model, dtype=settings.dtype, trust_remote_code=trust_remote_code, device=device)
    results = score_model(loaded, tok, p.inputs.items, max_new_tokens=settings.max_new_tokens, batch_size=1,
                          mia_k=settings.mia_k, exact=True)
    return finish(p, results, settings, reference_utility, out_dir, time.perf_counter() - start, "reference")


def evaluate_loaded(
    model: Any, tokenizer: Any, data: LumeData, settings: EvalConfig = DEFAULT, *, members: DocsArg = None,
    nonmembers: DocsArg = None, utility: UtilityArg = None,
) -> dict[str, Any]:
    """The metrics of a model already in memory, computed in this process (batched unless ``exact``): how
    the target build measures what it memorized, with the same items, scorers and metrics as everything else."""
    start = time.perf_counter()
    inputs = resolve_inputs(data, settings, members, nonmembers, utility, tokenizer)
    results = score_model(model, tokenizer, inputs.items, max_new_tokens=settings.max_new_tokens,
                          batch_size=settings.batch_size, mia_k=settings.mia_k, exact=settings.exact)
    return finish(Plan("(in memory)", inputs), results, settings, None, None, time.perf_counter() - start,
                  "in-process")


# ---------------------------------------------------------------------------------------------
# Console digest.


def summary_lines(result: dict[str, Any]) -> list[str]:
    """A human-readable digest of a metrics dict: the 12 task scores, then every other registered metric."""

    def fmt(v: Any) -> str:
        return "null" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = [f"{'score':<24} {'forget':>8} {'retain':>8}"]
    for task in ("Task1", "Task2", "Task3"):
        for kind in KINDS:
            f, r = (result.get(task_score_name(s, task, kind)) for s in ("forget", "retain"))
            lines.append(f"{task + '/' + kind:<24} {fmt(f):>8} {fmt(r):>8}")
    lines += [f"{name:<24} {fmt(result.get(name)):>8}" for name in METRICS if name not in TASK_SCORE_NAMES]
    lines += [f"note: {n}" for n in result.get("notes", [])]
    return lines
