"""[5] Evaluation: a model + LUME rows (+ MIA documents, + a multiple-choice set) -> per-row scores and metrics.json.

Input:  a model directory or hub id; a LUME directory or :class:`~lume_ray.data.LumeData`; optional
        member / non-member documents and a utility set (MMLU's shape, or ``"mmlu"``).
Output: the metrics dict (exactly what ``metrics.json`` holds) and, with ``out_dir``, ``rows.parquet``
        (id, split, task, kind, input, output, generation, score, nll) and ``metrics.json``.

The protocol is SemEval-2025 Task 4 (DESIGN.md section 3), reproduced exactly:
- generation: greedy from the tokenized ``input`` alone, ``max_new_tokens=256``, stopping at the model's
  own end-of-sequence ids (its generation config's), decoded new tokens only with special tokens skipped
  and tokenization spaces cleaned up as transformers 4 did (the official scorer ran on it; transformers 5
  skips that pass for BPE tokenizers, so :func:`lume_ray.model.decode_new_tokens` applies it);
- per-row NLL and MIA: ``tokenizer(input + output)`` (no separator) with the first ``len(tokenizer(input))``
  tokens masked; a document is ``tokenizer(document)`` whole; special tokens as the tokenizer adds them;
- sc rows: ROUGE-L recall (stemmer); qa rows: strip/lower exact match; per split x task x kind means,
  forget inverted, harmonic mean of the 12; MIA on whole-document mean NLL; final = mean of three.
Where the protocol is silent we chose: a split x task x kind without rows is null and left out of the
harmonic mean (noted in metrics.json); for the real MMLU, lm-evaluation-harness' zero-shot ``mmlu``
prompt with the answer letters' summed log-likelihoods compared; for a utility file, the summed
log-likelihood of ``" " + option`` after the question (how the embedded target learns it).

:func:`evaluate` runs it as a Ray Data pipeline: items (rows, documents, options) sorted by token
length -> ``map_batches(_Scorer, ActorPoolStrategy)``: each actor loads the model once, generates a
batch greedily with left padding (:func:`lume_ray.model.generate_greedy`), scores it, and takes the
losses in a second batched pass -> aggregation (:func:`lume_ray.metrics.run_metrics`).
:func:`evaluate_many` does the same for several models (a trial's evaluation points) in one pipeline,
so the actor pool's start-up (~5-10 s on 2 cores: a process, torch, transformers, the weights) is paid once.
:func:`evaluate_reference` is the plain loop the challenge ran (one prompt at a time, in process); the
tests and ``benchmarks/bench_eval.py`` check that both give the same numbers. Batched float math is
not bit-identical to unbatched: an exact near-tie of two logits can flip one greedy token (measured:
1 of 400 rows of a random-weight model, ~190 tokens into a repetitive babble; scores unchanged).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Generator, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lume_ray import metrics
from lume_ray.data import (
    KINDS,
    Choice,
    Document,
    LumeData,
    Row,
    documents_of,
    load_documents,
    load_lume,
    load_utility,
)
from lume_ray.files import atomic_file, write_json
from lume_ray.local_ray import ray_session
from lume_ray.model import (
    IGNORE,
    Encoded,
    ModelError,
    collate,
    decode_new_tokens,
    encode_prompt,
    generate_greedy,
    load_model,
    load_tokenizer,
    resolve_dtype,
    sequence_nll,
    stop_token_ids,
)

MAX_PIPELINE_ITEMS = 200_000  # items (x models) one evaluate_many pipeline holds at most
ROW_COLUMNS = ("id", "split", "task", "kind", "input", "output", "generation", "score", "nll")
MMLU_ID = "cais/mmlu"


class EvalError(ValueError):
    """Evaluation inputs do not fit together; one-line message naming what and the valid choices."""


@dataclass(frozen=True)
class EvalSettings:
    """How to evaluate. The defaults reproduce the challenge's scorer."""

    max_new_tokens: int = 256
    batch_size: int = 16
    workers: int = 1  # model actors in the Ray Data pool
    # CPUs each actor reserves. None: min(1, (cluster CPUs - 1) / workers), so the actors never take
    # every CPU (a pool holding all CPUs starves Ray Data's other tasks and hangs silently).
    cpus_per_actor: float | None = None
    use_gpu: bool | None = False  # one GPU per actor; None: use GPUs when the cluster has any
    utility_floor: float = 0.75  # utility must stay >= this fraction of the reference model's
    limit: int | None = None  # first N rows per split only (smoke runs)
    dtype: str = "float32"
    trust_remote_code: bool = False
    mia_k: float = 0.2  # fraction of tokens for Min-K% / Min-K%++
    # metrics.option_prompt: "auto" = "letter" (lm-eval's MMLU prompt) for utility="mmlu", else "option"
    utility_style: str = "auto"
    progress: bool = True  # log lines and a progress bar on stderr

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> EvalError:
            return EvalError(f"eval setting {name}={getattr(self, name)!r}: must be {rule}")

        for name in ("max_new_tokens", "batch_size", "workers"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise bad(name, "an integer >= 1")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise bad("limit", "None or an integer >= 1")
        if self.cpus_per_actor is not None and not self.cpus_per_actor > 0:
            raise bad("cpus_per_actor", "None or > 0")
        if not 0 < self.mia_k <= 1:
            raise bad("mia_k", "in (0, 1]")
        if not self.utility_floor >= 0:
            raise bad("utility_floor", ">= 0")
        if self.utility_style not in ("auto", *metrics.UTILITY_STYLES):
            raise bad("utility_style", f"one of auto, {', '.join(metrics.UTILITY_STYLES)}")
        resolve_dtype(self.dtype)  # raises ModelError naming the valid dtypes


# ---------------------------------------------------------------------------------------------
# Planning: every input resolved and checked before any model runs.

# None: the data directory's default; False or an empty sequence: none.
DocsArg = str | os.PathLike[str] | Sequence[Document] | bool | None
UtilityArg = str | os.PathLike[str] | Sequence[Choice] | bool | None


@dataclass(frozen=True)
class _Inputs:
    """Everything evaluated, resolved once (shared by all the models of an :func:`evaluate_many` call)."""

    source: str
    rows: tuple[Row, ...]
    members: tuple[Document, ...]
    nonmembers: tuple[Document, ...]
    utility: tuple[Choice, ...]
    utility_style: str
    notes: tuple[str, ...]
    items: tuple[dict[str, Any], ...]  # what the model actors see, in (stage, token length) order


@dataclass(frozen=True)
class _Plan:
    model: str
    inputs: _Inputs


def _resolve_docs(arg: DocsArg, default: Path | None) -> tuple[Document, ...] | None:
    if arg is None:
        return load_documents(default) if default is not None and default.is_file() else None
    if arg is False or arg is True:
        return () if arg is False else None
    if isinstance(arg, str | os.PathLike):
        return load_documents(Path(arg))
    return tuple(arg)


def load_mmlu() -> tuple[Choice, ...]:
    """All 57 MMLU subjects, test split, through ``datasets`` (needs the dataset cached or a network)."""
    try:
        import datasets

        ds = datasets.load_dataset(MMLU_ID, "all", split="test")
    except Exception as e:
        raise EvalError(
            f"utility 'mmlu': cannot load {MMLU_ID} through datasets ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); offline, pass a multiple-choice jsonl instead"
        ) from None
    return tuple(Choice(r["question"], tuple(r["choices"]), int(r["answer"]), r["subject"]) for r in ds)


def _resolve_utility(arg: UtilityArg, default: Path | None) -> tuple[Choice, ...]:
    if arg is None or arg is True:
        return load_utility(default) if default is not None and default.is_file() else ()
    if arg is False:
        return ()
    if isinstance(arg, str) and arg.lower() == "mmlu":
        return load_mmlu()
    if isinstance(arg, str | os.PathLike):
        return load_utility(Path(arg))
    return tuple(arg)


def _check_disjoint(members: Sequence[Document], nonmembers: Sequence[Document]) -> None:
    """Non-members the target saw would make the attack's labels wrong: refuse any shared id or text."""
    ids = {d.id for d in members} & {d.id for d in nonmembers}
    texts = {d.document.strip() for d in members} & {d.document.strip() for d in nonmembers}
    if ids:
        raise EvalError(f"non-member documents overlap the members: id {sorted(ids)[0]!r} is in both "
                        f"({len(ids)} shared); non-members must be documents the target never saw")
    if texts:
        text = sorted(texts)[0]
        raise EvalError(f"non-member documents overlap the members: the text {text[:60]!r}... is in both "
                        f"({len(texts)} shared); non-members must be documents the target never saw")


def _check_model(model: str, tokenizer: Any, trust_remote_code: bool) -> None:
    """Model/tokenizer mismatch from the config alone (before any actor loads weights)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise ModelError(f"{model}: could not load config ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    vocab = getattr(config, "vocab_size", None)
    if vocab is not None and len(tokenizer) > vocab:
        raise ModelError(f"{model}: tokenizer has {len(tokenizer)} tokens but the model embeds only {vocab}; "
                         "model and tokenizer do not match")


def _inputs(
    data: LumeData | str | os.PathLike[str], settings: EvalSettings, members: DocsArg, nonmembers: DocsArg,
    utility: UtilityArg, tokenizer: Any,
) -> _Inputs:
    """Load and check every input; build the work items sorted by stage and token length (``tokenizer``'s;
    the order only saves padding, it changes no result)."""
    lume = data if isinstance(data, LumeData) else load_lume(Path(data))
    data_dir = Path(lume.source) if Path(lume.source).is_dir() else None
    forget, retain = lume.forget[: settings.limit], lume.retain[: settings.limit]
    rows = forget + retain
    if not rows:
        raise EvalError(f"{lume.source}: no rows to evaluate (forget and retain are empty)")
    notes = []
    mem = _resolve_docs(members, data_dir / "member.jsonl" if data_dir else None)
    if mem is None:
        mem = documents_of(forget)
        notes.append("members: the forget documents rebuilt from sc rows (input + ' ' + output)")
    non = _resolve_docs(nonmembers, data_dir / "nonmember.jsonl" if data_dir else None) or ()
    _check_disjoint(mem, non)
    choices = _resolve_utility(utility, data_dir / "utility.jsonl" if data_dir else None)
    style = settings.utility_style
    if style == "auto":
        style = "letter" if isinstance(utility, str) and utility.lower() == "mmlu" else "option"

    items: list[dict[str, Any]] = []
    for r in rows:
        items.append({"key": f"{r.split}:{r.id}", "kind": r.kind, "prompt": r.input, "completion": r.output})
    for split, docs in (("member", mem), ("nonmember", non)):
        for d in docs:
            items.append({"key": f"{split}:{d.id}", "kind": "doc", "prompt": "", "completion": d.document})
    for q, c in enumerate(choices):
        context, continuations = metrics.option_prompt(c.question, c.choices, c.subject, style)
        for j, cont in enumerate(continuations):
            items.append({"key": f"mc:{q}:{j}", "kind": "mc", "prompt": context, "completion": cont})
    # Sort by stage, then token length: batches of similar length pad little, and the generation
    # rows (the expensive stage) form batches of their own except at most one at the boundary.
    stage = {"sc": 0, "qa": 0, "doc": 1, "mc": 2}
    lengths = tokenizer([it["prompt"] if it["kind"] in KINDS else it["prompt"] + it["completion"]
                         for it in items])["input_ids"]
    order = sorted(range(len(items)), key=lambda i: (stage[items[i]["kind"]], len(lengths[i])))
    return _Inputs(lume.source, tuple(rows), tuple(mem), tuple(non), choices, style, tuple(notes),
                   tuple(items[i] for i in order))


def _plans(
    models: Sequence[str | os.PathLike[str]], data: LumeData | str | os.PathLike[str], settings: EvalSettings,
    members: DocsArg, nonmembers: DocsArg, utility: UtilityArg,
) -> list[_Plan]:
    """Every model's tokenizer checked against its config, the inputs resolved once for all of them."""
    tokenizers = []
    for model in models:
        tok = load_tokenizer(str(model), trust_remote_code=settings.trust_remote_code)
        _check_model(str(model), tok, settings.trust_remote_code)
        tokenizers.append(tok)
    inputs = _inputs(data, settings, members, nonmembers, utility, tokenizers[0])
    return [_Plan(str(model), inputs) for model in models]


# ---------------------------------------------------------------------------------------------
# The model work, shared by the Ray actors and the reference loop.


def _encode_item(tokenizer: Any, item: dict[str, Any]) -> Encoded:
    """The tokens a loss is taken on, made as the challenge's scorer made them: ``tokenizer(prompt +
    completion)`` with the first ``len(tokenizer(prompt))`` tokens masked (rows; options the same way, as
    lm-evaluation-harness splits context and continuation); a document is ``tokenizer(document)`` with
    nothing masked. Special tokens stay as the tokenizer adds them (a BOS; an EOS some tokenizers append)."""
    if item["kind"] == "doc":
        return Encoded(encode_prompt(tokenizer, item["completion"]), 0)
    ids = encode_prompt(tokenizer, item["prompt"] + item["completion"])
    return Encoded(ids, min(len(encode_prompt(tokenizer, item["prompt"])), len(ids)))


def _losses(model: Any, tokenizer: Any, items: Sequence[dict[str, Any]], *, batch_size: int, mia_k: float) -> list[dict[str, float]]:
    """Summed NLL and token count of each item's completion (rows, options: prompt masked; documents:
    nothing masked), plus Min-K% / Min-K%++ / zlib features for documents. Batched, length-sorted."""
    import torch

    device = next(model.parameters()).device
    out: list[dict[str, float]] = [{} for _ in items]
    for is_doc in (False, True):
        idx = [i for i, it in enumerate(items) if (it["kind"] == "doc") == is_doc]
        enc = {i: _encode_item(tokenizer, items[i]) for i in idx}
        idx.sort(key=lambda i: len(enc[i].input_ids))
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            batch = collate([enc[i] for i in chunk], tokenizer.pad_token_id, mask_prompt=not is_doc)
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.no_grad():
                if is_doc:
                    # Min-K% needs every token's log-prob; the NLL comes from the same forward.
                    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                    token_lp, token_pp = metrics.token_log_probs(logits, batch["labels"])
                    mask = batch["labels"][:, 1:] != IGNORE
                    sums, counts = -(token_lp * mask).sum(-1), mask.sum(-1)
                else:
                    sums, counts = sequence_nll(model, batch)
            for b, i in enumerate(chunk):
                n = int(counts[b])
                rec = {"nll_sum": float(sums[b]), "nll_count": float(n), "nll": float(sums[b]) / n if n else math.nan}
                if is_doc:
                    m = mask[b]
                    rec["mink"] = metrics.min_k_score(token_lp[b][m].tolist(), mia_k)
                    rec["minkpp"] = metrics.min_k_score(token_pp[b][m].tolist(), mia_k)
                    rec["zlib"] = metrics.zlib_ratio(rec["nll"], items[i]["completion"])
                out[i] = rec
    return out


def _score(items: Sequence[dict[str, Any]], generations: dict[int, str], losses: Sequence[dict[str, float]]) -> list[dict[str, Any]]:
    """One result record per item: the loss features, and for rows the generation and its score."""
    results = []
    for i, it in enumerate(items):
        rec: dict[str, Any] = {"key": it["key"], "generation": "", "score": math.nan,
                               "mink": math.nan, "minkpp": math.nan, "zlib": math.nan}
        rec.update(losses[i])
        if i in generations:
            rec["generation"] = generations[i]
            rec["score"] = metrics.score_row(it["kind"], it["completion"], generations[i])
        results.append(rec)
    return results


class _Scorer:
    """A Ray Data actor: turns batches of items into result records. Each item names its model; the actor
    keeps one model loaded and loads the next when a batch moves on to it (items arrive grouped by model,
    so each actor loads each model about once)."""

    def __init__(self, dtype: str, trust_remote_code: bool, use_gpu: bool, max_new_tokens: int, batch_size: int,
                 mia_k: float) -> None:
        self.dtype, self.trust_remote_code, self.device = dtype, trust_remote_code, "cuda" if use_gpu else "cpu"
        self.max_new_tokens, self.batch_size, self.mia_k = max_new_tokens, batch_size, mia_k
        self.loaded: tuple[str, Any, Any] | None = None  # (path, model, tokenizer)

    def _load(self, path: str) -> None:
        """Make ``path`` the loaded model. The previous one is freed first (nothing else holds it), so
        two large models never sit in memory at once."""
        if self.loaded is not None and self.loaded[0] == path:
            return
        self.loaded = None
        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()
        model, tok = load_model(path, dtype=self.dtype, trust_remote_code=self.trust_remote_code, device=self.device)
        self.loaded = (path, model, tok)

    def _score_items(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Items of one model -> result records (generation + score for rows, loss features for all)."""
        self._load(items[0]["model"])
        assert self.loaded is not None
        _, model, tok = self.loaded
        gen_idx = [i for i, it in enumerate(items) if it["kind"] in KINDS]
        texts = generate_greedy(model, tok, [items[i]["prompt"] for i in gen_idx],
                                max_new_tokens=self.max_new_tokens, batch_size=self.batch_size)
        losses = _losses(model, tok, items, batch_size=self.batch_size, mia_k=self.mia_k)
        return [{**rec, "job": it["job"]}
                for it, rec in zip(items, _score(items, dict(zip(gen_idx, texts, strict=True)), losses), strict=True)]

    def __call__(self, batch: Any) -> Any:  # pandas.DataFrame -> pandas.DataFrame
        import pandas as pd

        records: list[dict[str, Any]] = []
        # Items arrive grouped by model; a batch at a boundary holds the end of one and the start of the next.
        for _, group in itertools.groupby(batch.to_dict(orient="records"), key=lambda it: it["job"]):
            records.extend(self._score_items(list(group)))
        return pd.DataFrame(records)


# ---------------------------------------------------------------------------------------------
# Runners: Ray Data pipeline, and the one-prompt-at-a-time reference.


def _log(settings: EvalSettings, msg: str) -> None:
    if settings.progress:
        print(f"eval: {msg}", file=sys.stderr, flush=True)


def _actor_resources(settings: EvalSettings) -> tuple[float, float]:
    """(CPUs, GPUs) per actor, keeping at least one CPU (or half the node) free for Ray Data's tasks."""
    import ray

    total = float(ray.cluster_resources().get("CPU", 1.0))
    use_gpu = settings.use_gpu
    if use_gpu is None:
        use_gpu = ray.cluster_resources().get("GPU", 0.0) >= 1
    cpus = settings.cpus_per_actor
    if cpus is None:
        spare = total - 1.0 if total > 1.0 else total / 2
        cpus = min(1.0, spare / settings.workers)
    if cpus * settings.workers >= total:
        raise EvalError(f"eval setting cpus_per_actor={cpus} x workers={settings.workers} takes all {total:g} "
                        "cluster CPUs; Ray Data would hang (leave some free: fewer workers or fewer CPUs each)")
    return cpus, 1.0 if use_gpu else 0.0


def _run_ray(plans: Sequence[_Plan], settings: EvalSettings) -> Generator[tuple[int, list[dict[str, Any]]]]:
    """Stream every plan's items through one actor pool; yields (plan index, its results) as soon as the
    last item of that plan is back, so the first model's metrics are written while later ones run."""
    import ray
    import ray.data

    cpus, gpus = _actor_resources(settings)
    items = [{**it, "job": j, "model": plan.model} for j, plan in enumerate(plans) for it in plan.inputs.items]
    models = f"{len(plans)} models, " if len(plans) > 1 else ""
    _log(settings, f"{models}{len(items)} items -> {settings.workers} model actor(s) x {cpus:g} CPU"
                   f"{' + 1 GPU' if gpus else ''}, batches of {settings.batch_size}")
    # About one block per batch; Ray Data bundles consecutive blocks, so batches keep the (model, stage,
    # length) order.
    blocks = max(1, math.ceil(len(items) / settings.batch_size))
    ds = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
        _Scorer,
        fn_constructor_kwargs={
            "dtype": settings.dtype, "trust_remote_code": settings.trust_remote_code, "use_gpu": bool(gpus),
            "max_new_tokens": settings.max_new_tokens, "batch_size": settings.batch_size, "mia_k": settings.mia_k,
        },
        batch_size=settings.batch_size, batch_format="pandas",
        # One batch in flight per actor: with Ray Data's default (4), the first actor to finish loading
        # takes the first 4 batches, i.e. all the generation work, and the others idle (measured).
        compute=ray.data.ActorPoolStrategy(size=settings.workers, max_tasks_in_flight_per_actor=1),
        num_cpus=cpus, num_gpus=gpus,
    )
    from tqdm import tqdm

    pending = {j: len(plan.inputs.items) for j, plan in enumerate(plans)}
    results: dict[int, list[dict[str, Any]]] = {j: [] for j in pending}
    # Consumed once, streaming: each finished batch arrives as soon as an actor returns it.
    with tqdm(total=len(items), desc="eval", unit="item", disable=not settings.progress, file=sys.stderr) as bar:
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


def _run_reference(plan: _Plan, settings: EvalSettings) -> list[dict[str, Any]]:
    """The challenge's loop: the model loaded once, then one prompt at a time."""
    import torch

    device = "cuda" if settings.use_gpu else "cpu"
    model, tok = load_model(plan.model, dtype=settings.dtype, trust_remote_code=settings.trust_remote_code, device=device)
    items = plan.inputs.items
    generations = {}
    for i, it in enumerate(items):
        if it["kind"] not in KINDS:
            continue
        ids = torch.tensor([encode_prompt(tok, it["prompt"])], device=device)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=settings.max_new_tokens, pad_token_id=tok.eos_token_id,
                                 eos_token_id=stop_token_ids(model, tok), use_cache=True)
        generations[i] = decode_new_tokens(tok, out[:, ids.shape[1] :])[0]
    losses = _losses(model, tok, items, batch_size=1, mia_k=settings.mia_k)
    return _score(items, generations, losses)


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


def _finish(
    plan: _Plan, results: Iterable[dict[str, Any]], settings: EvalSettings, reference_utility: float | None,
    out_dir: str | os.PathLike[str] | None, seconds: float, runner: str,
) -> dict[str, Any]:
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
    members = [by_key[f"member:{d.id}"] for d in inputs.members]
    nonmembers = [by_key[f"nonmember:{d.id}"] for d in inputs.nonmembers]
    correct = []
    for q, c in enumerate(inputs.utility):
        lls = [-float(by_key[f"mc:{q}:{j}"]["nll_sum"]) for j in range(len(c.choices))]
        correct.append(metrics.pick_option(lls) == c.answer)
    out = metrics.run_metrics(rows, members=members, nonmembers=nonmembers, utility_correct=correct,
                              reference_utility=reference_utility, utility_floor=settings.utility_floor)
    out["notes"] = list(inputs.notes) + out["notes"]
    out["settings"] = {**asdict(settings), "utility_style": inputs.utility_style, "model": plan.model,
                       "data": inputs.source, "runner": runner}
    out["seconds"] = round(seconds, 3)
    out = _nan_to_none(out)
    if out_dir is not None:
        _write(Path(out_dir), rows, out)
    return out


def _write(out_dir: Path, rows: list[dict[str, Any]], result: dict[str, Any]) -> None:
    import pandas as pd

    out_dir.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    with atomic_file(out_dir / "rows.parquet") as tmp:
        frame.to_parquet(tmp, index=False)
    write_json(out_dir / "metrics.json", result)


def evaluate(
    model: str | os.PathLike[str],
    data: LumeData | str | os.PathLike[str],
    *,
    settings: EvalSettings = EvalSettings(),
    members: DocsArg = None,
    nonmembers: DocsArg = None,
    utility: UtilityArg = None,
    reference_utility: float | None = None,
    out_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``data`` with the LUME protocol through a Ray Data actor pool.

    Defaults when the data lives in a directory: members = DATA/member.jsonl, else the forget
    documents rebuilt from sc rows; non-members = DATA/nonmember.jsonl, else none (MIA metrics null);
    utility = DATA/utility.jsonl, else none; ``utility="mmlu"`` loads cais/mmlu. An empty sequence
    turns a part off. Uses the connected Ray cluster, or starts (and stops) a local one.
    """
    return evaluate_many([model], data, settings=settings, members=members, nonmembers=nonmembers,
                         utility=utility, reference_utility=reference_utility,
                         out_dirs=None if out_dir is None else [out_dir])[0]


def evaluate_many(
    models: Sequence[str | os.PathLike[str]],
    data: LumeData | str | os.PathLike[str],
    *,
    settings: EvalSettings = EvalSettings(),
    members: DocsArg = None,
    nonmembers: DocsArg = None,
    utility: UtilityArg = None,
    reference_utility: float | None = None,
    out_dirs: Sequence[str | os.PathLike[str]] | None = None,
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
    plans = _plans(models, data, settings, members, nonmembers, utility)
    # A pipeline holds (models x items) items; past MAX_PIPELINE_ITEMS (e.g. the full MMLU for many
    # points) the models go through consecutive pipelines, each starting its own actors.
    per_pipeline = max(1, MAX_PIPELINE_ITEMS // len(plans[0].inputs.items))
    out: dict[int, dict[str, Any]] = {}
    with ray_session(configure_logging=False) as started:
        if started:
            _log(settings, "started a local Ray cluster (127.0.0.1, no dashboard)")
        for first in range(0, len(plans), per_pipeline):
            chunk = plans[first : first + per_pipeline]
            with contextlib.closing(_run_ray(chunk, settings)) as stream:
                for j, results in stream:
                    k = first + j
                    out[k] = _finish(plans[k], results, settings, reference_utility,
                                     None if out_dirs is None else out_dirs[k], time.perf_counter() - start, "ray")
    return [out[k] for k in range(len(models))]


def evaluate_reference(
    model: str | os.PathLike[str],
    data: LumeData | str | os.PathLike[str],
    *,
    settings: EvalSettings = EvalSettings(),
    members: DocsArg = None,
    nonmembers: DocsArg = None,
    utility: UtilityArg = None,
    reference_utility: float | None = None,
    out_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Same inputs and outputs as :func:`evaluate`, computed in this process one prompt at a time (the
    challenge's scorer); ``workers``, ``batch_size`` and ``cpus_per_actor`` are ignored."""
    start = time.perf_counter()
    plan = _plans([model], data, settings, members, nonmembers, utility)[0]
    results = _run_reference(plan, settings)
    return _finish(plan, results, settings, reference_utility, out_dir, time.perf_counter() - start, "reference")


# ---------------------------------------------------------------------------------------------
# CLI


def summary_lines(result: dict[str, Any]) -> list[str]:
    """A human-readable digest of a metrics dict."""

    def fmt(v: Any) -> str:
        return "null" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = [f"{'score':<24} {'forget':>8} {'retain':>8}"]
    for task in ("Task1", "Task2", "Task3"):
        for kind in KINDS:
            f, r = (result[metrics.task_score_name(s, task, kind)] for s in ("forget", "retain"))
            lines.append(f"{task + '/' + kind:<24} {fmt(f):>8} {fmt(r):>8}")
    for name in ("task_aggregate", "forget_efficacy", "retain_score", "forget_nll", "retain_nll", "mia_auc",
                 "mia_score", "mia_zlib_score", "mia_mink_score", "mia_minkpp_score", "utility", "final_score",
                 "utility_floor_met"):
        lines.append(f"{name:<24} {fmt(result[name]):>8}")
    lines += [f"note: {n}" for n in result["notes"]]
    return lines


def cli_main(args: Any) -> int:
    """`lume-ray eval --model M --data D [--member F] [--nonmember F] [--utility F|mmlu] --out DIR [--json]`."""
    settings = EvalSettings(
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, workers=args.workers,
        use_gpu=None, utility_floor=args.utility_floor, limit=args.limit, dtype=args.dtype,
        trust_remote_code=args.trust_remote_code, progress=not args.json,
    )
    connected = False
    if args.address:
        import ray

        ray.init(address=args.address, log_to_driver=False)
        connected = True
    try:
        result = evaluate(args.model, args.data, settings=settings, members=args.member, nonmembers=args.nonmember,
                          utility=args.utility, reference_utility=args.reference_utility, out_dir=args.out)
    finally:
        if connected:
            import ray

            ray.shutdown()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(summary_lines(result)))
        print(f"wrote {Path(args.out) / 'rows.parquet'} and {Path(args.out) / 'metrics.json'} ({result['seconds']:.1f} s)")
    return 0

