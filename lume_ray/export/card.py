"""The model card of an exported point: README.md with YAML front matter, as the Hugging Face Hub reads it.

Input:  the exported point (:class:`~lume_ray.export.select.Selected`), its unlearning job, RUN_DIR's study.json
        and base/metrics.json, and how the weights were obtained (copied, or re-run and checked).
Output: the card's text. Front matter: ``base_model`` (the target), ``library_name: transformers``, ``tags``
        (unlearning, lume, the algorithm), ``datasets``, ``model-index`` (the 12 task scores, MIA score, utility,
        final score). Below it: what was forgotten, the setting, the scores against the model before unlearning,
        provenance (sha256 of the data files and of the target's weight files, versions, git commit) and the
        command that reproduces the model.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from lume_ray.config import UnlearnJob
from lume_ray.data import KINDS, SPLITS, TASKS
from lume_ray.evaluate.metrics import METRICS, task_score_name
from lume_ray.export.select import Selected
from lume_ray.run_dir import STEP_DIR

TASK_TEXT = {"Task1": "synthetic creative stories", "Task2": "synthetic biographies with PII",
             "Task3": "real biographies"}
KIND_TEXT = {"sc": "regurgitation: ROUGE-L recall of the continuation", "qa": "knowledge: exact match of the answer"}
SUMMARY = ("task_aggregate", "forget_efficacy", "retain_score", "mia_score", "utility", "final_score", "forget_nll",
           "retain_nll")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
CHUNK = 1 << 20


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_hashes(root: str | Path, *, weights_only: bool = False) -> list[tuple[str, str]]:
    """(path relative to ``root``, sha256) of every file under ``root`` (a file: itself), or of its weight files
    only; [] when ``root`` is not on this machine (a hub id)."""
    root = Path(root)
    if root.is_file():
        return [(root.name, sha256(root))]
    if not root.is_dir():
        return []
    files = sorted(p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                          p.relative_to(root).parts))
    if weights_only:
        files = [p for p in files if p.suffix in WEIGHT_SUFFIXES]
    return [(str(p.relative_to(root)), sha256(p)) for p in files]


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _fmt(value: Any) -> str:
    v = _num(value)
    return "n/a" if v is None else f"{v:.4f}"


def model_index(name: str, metrics: Mapping[str, Any], data: str, utility_source: str) -> list[dict[str, Any]]:
    """The Hub's ``model-index``: one result per task score (LUME split x task x kind), the MIA score, utility and
    the final score; metrics without a value are left out."""
    results: list[dict[str, Any]] = []

    def add(task: str, task_name: str, dataset: dict[str, Any], metric: str, metric_type: str, text: str) -> None:
        value = _num(metrics.get(metric))
        if value is not None:
            results.append({"task": {"type": task, "name": task_name}, "dataset": dataset,
                            "metrics": [{"type": metric_type, "name": text, "value": round(value, 6)}]})

    for split in SPLITS:
        for task in TASKS:
            for kind in KINDS:
                metric = task_score_name(split, task, kind)
                what = "rougeL_recall" if kind == "sc" else "exact_match"
                add("text-generation", f"LUME {split} {task} {kind} ({TASK_TEXT[task]})",
                    {"type": "lume", "name": f"LUME {split} {task} {kind}", "split": split, "config": task},
                    metric, what, f"{metric} ({'lower' if split == 'forget' else 'higher'} is better)")
    add("text-generation", "LUME membership inference (loss attack)",
        {"type": "lume", "name": "LUME member / non-member documents"}, "mia_score", "mia_score",
        "mia_score (1 - |AUC - 0.5| x 2)")
    add("multiple-choice", "utility (multiple-choice accuracy)",
        {"type": "mmlu" if "mmlu" in utility_source.lower() else "multiple-choice", "name": utility_source or "utility"},
        "utility", "accuracy", "utility")
    add("text-generation", "LUME unlearning (SemEval-2025 Task 4)", {"type": "lume", "name": f"LUME ({data})"},
        "final_score", "final_score", "final_score (mean of task aggregate, MIA score, utility)")
    return [{"name": name, "results": results}]


def front_matter(point: Selected, job: UnlearnJob, study: Mapping[str, Any], name: str) -> dict[str, Any]:
    settings = point.metrics.get("settings") or {}
    return {
        "base_model": str(study.get("model") or job.model),
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["unlearning", "lume", point.algorithm],
        "datasets": [str(study.get("data") or job.data)],
        "model-index": model_index(name, point.metrics, str(study.get("data") or job.data),
                                   str(settings.get("utility") or "")),
    }


def _forgotten(point: Selected, job: UnlearnJob) -> list[str]:
    """What the forget split holds, per task and kind (rows and documents when the data loads, else the counts
    of the point's metrics.json)."""
    counts: dict[tuple[str, str], tuple[int, int | None]] = {}
    try:
        from lume_ray.data import load_lume, summarize

        for t in summarize(load_lume(job.data)):
            if t["split"] == "forget" and t["task"] != "all":
                counts[(t["task"], t["kind"])] = (t["rows"], t["documents"])
    except (ValueError, OSError):
        task_rows = (point.metrics.get("counts") or {}).get("task_rows") or {}
        counts = {(task, kind): (int(task_rows.get(task_score_name("forget", task, kind), 0)), None)
                  for task in TASKS for kind in KINDS}
    lines = ["| task | kind | forget rows | documents | before unlearning | this model |", "|---|---|---|---|---|---|"]
    for task in TASKS:
        for kind in KINDS:
            rows, docs = counts.get((task, kind), (0, None))
            metric = task_score_name("forget", task, kind)
            lines.append(f"| {task} ({TASK_TEXT[task]}) | {kind} ({KIND_TEXT[kind]}) | {rows} | "
                         f"{'' if docs is None else docs} | {_fmt(point_base(point).get(metric))} | "
                         f"{_fmt(point.metrics.get(metric))} |")
    return lines


def point_base(point: Selected) -> dict[str, Any]:
    path = point.run_dir / "base" / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _setting(point: Selected, job: UnlearnJob) -> list[str]:
    t = job.train
    rows = [("algorithm", point.algorithm), ("learning rate", f"{job.lr:g} (constant)"),
            ("steps", str(point.step)), *((f"parameter {k}", str(v)) for k, v in job.params.items()),
            ("seed", str(job.seed)), ("workers (DeepSpeed ranks)", str(t.workers)), ("ZeRO stage", str(t.zero)),
            ("global batch", f"{t.batch_size} forget (+ {t.batch_size} retain) rows"),
            ("max length", f"{t.max_length} tokens"), ("precision", t.resolved_precision),
            ("device", "GPU" if t.use_gpu else "CPU"),
            ("LoRA", "none (full weights)" if t.lora is None else
             f"r {t.lora.r}, alpha {t.lora.alpha:g}, dropout {t.lora.dropout:g}, {t.lora.target_modules} (merged)")]
    return ["| setting | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def _scores(point: Selected) -> list[str]:
    base = point_base(point)
    lines = ["| metric | better | before unlearning | this model | change |", "|---|---|---|---|---|"]
    names = [task_score_name(s, t, k) for s in SPLITS for t in TASKS for k in KINDS] + list(SUMMARY)
    for name in names:
        if name not in METRICS:
            continue
        d = METRICS[name].direction
        b, v = _num(base.get(name)), _num(point.metrics.get(name))
        change = "" if b is None or v is None else f"{v - b:+.4f}"
        lines.append(f"| {name} | {'higher' if d == 'max' else 'lower' if d == 'min' else ''} | {_fmt(b)} | "
                     f"{_fmt(v)} | {change} |")
    return lines


def reproduce_command(job: UnlearnJob, step: int) -> str:
    """The `lume-ray unlearn` command that trains this model again (at OUT/points/step_XXXXXX)."""
    t = job.train
    args = ["lume-ray", "unlearn", "--model", job.model, "--data", job.data, "--algorithm", job.algorithm,
            "--lr", f"{job.lr!r}", "--steps", str(step), "--seed", str(job.seed), "--batch-size", str(t.batch_size),
            "--max-length", str(t.max_length), "--workers", str(t.workers), "--zero", str(t.zero),
            "--precision", t.resolved_precision]
    if t.use_gpu:
        args += ["--gpus-per-worker", str(t.gpus_per_worker)]
    if t.offload:
        args.append("--offload")
    if job.trust_remote_code:
        args.append("--trust-remote-code")
    if job.params:
        args += ["--set", *(f"{k}={v}" for k, v in job.params.items())]
    if t.lora is not None:
        args += ["--lora", *(f"{k}={v}" for k, v in t.lora.model_dump().items())]
    args += ["--out", "OUT"]
    return " ".join(shlex.quote(a) if a != "OUT" else a for a in args)


def render(point: Selected, job: UnlearnJob, study: Mapping[str, Any], *, name: str, obtained: str,
           export_command: Sequence[str], data_hashes: Sequence[tuple[str, str]],
           target_hashes: Sequence[tuple[str, str]]) -> str:
    """The whole README.md."""
    settings = point.metrics.get("settings") or {}
    meta = yaml.safe_dump(front_matter(point, job, study, name), sort_keys=False, allow_unicode=True)
    target, data = str(study.get("model") or job.model), str(study.get("data") or job.data)
    versions = study.get("versions") or {}
    eval_keys = ("max_new_tokens", "batch_size", "dtype", "exact", "utility_style", "utility", "runner")
    lines = [
        "---", meta.rstrip(), "---", "",
        f"# {name}", "",
        f"`{target}` after unlearning with **{point.algorithm}** for {point.step} steps: trial `{point.trial_id}` "
        f"of the lume-ray sweep `{study.get('name', point.run_dir.name)}`, chosen as {point.how}."
        + (f" It passes the floor ({point.floor})." if point.floor else ""),
        "",
        "## What was forgotten", "",
        f"The forget split of the LUME-format data `{data}` (SemEval-2025 Task 4): the model was trained to stop "
        "reproducing these rows while keeping the retain split and general utility. Forget task scores, lower is "
        "better:", "",
        *_forgotten(point, job), "",
        "## Setting", "",
        *_setting(point, job), "",
        "## Scores against the model before unlearning", "",
        "Evaluated as the sweep did ("
        + ", ".join(f"{k} {settings[k]}" for k in eval_keys if settings.get(k) not in (None, "")) + "); "
        "the model before unlearning is RUN_DIR/base/metrics.json.", "",
        *_scores(point), "",
        "## Provenance", "",
        f"- Sweep: `{point.run_dir}` (study `{study.get('name', '')}`, created {study.get('created', 'unknown')}, "
        f"sampler {study.get('sampler', 'unknown')}); point `{point.label}`, "
        f"`trials/{point.trial_id}/{STEP_DIR.format(point.step)}/metrics.json`.",
        f"- Weights: {obtained}.",
        f"- lume-ray git commit: `{study.get('git_commit', 'unknown')}`; versions: "
        + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        f"- Target `{target}`: " + ("sha256 of its weight files:" if target_hashes else
                                    "not on this machine (a hub id): not hashed."),
        *(f"  - `{p}` `{h}`" for p, h in target_hashes),
        f"- Data `{data}`: " + ("sha256 of its files:" if data_hashes else "not on this machine: not hashed."),
        *(f"  - `{p}` `{h}`" for p, h in data_hashes),
        f"- Exported {time.strftime('%Y-%m-%d %H:%M:%S %Z')} with: `{' '.join(shlex.quote(a) for a in export_command)}`",
        "",
        "## Reproduce", "",
        f"One command trains this model again; it is `OUT/points/{STEP_DIR.format(point.step)}` "
        "(on CPUs in float32 bit for bit; on GPUs within kernel nondeterminism):", "",
        "```bash", reproduce_command(job, point.step), "```", "",
    ]
    return "\n".join(lines)
