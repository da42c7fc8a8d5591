"""[3 evaluate] Evaluation inputs: a LUME dataset (+ MIA documents, + a multiple-choice set) -> the work items.

Input:  a LUME directory or :class:`~lume_ray.data.LumeData`, member / non-member documents, a utility set
        (each a path, records, or None for the data directory's default), the models' tokenizers.
Output: :class:`Inputs`: every input resolved and checked once (members and non-members disjoint, tokenizer
        and model matching), and the items the model actors score, sorted by stage and token length.

Defaults beside the data (DATA = a LUME directory): members DATA/mia/member.jsonl, else DATA/member.jsonl, else
the forget documents rebuilt from sc rows; non-members DATA/mia/nonmember.jsonl, else DATA/nonmember.jsonl, else
none; utility DATA/utility.jsonl, else none. The challenge's own MIA files sit in ``mia/`` beside its data.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lume_ray.config import EvalConfig
from lume_ray.data import (
    KINDS,
    Choice,
    Document,
    LumeData,
    MultipleChoiceSet,
    Row,
    documents_of,
    load_documents,
    load_lume,
    load_mmlu_dir,
    load_utility,
    mmlu_set,
)
from lume_ray.evaluate.prompts import mmlu_prompt, option_prompt
from lume_ray.model import ModelError, load_tokenizer

MMLU_ID = "cais/mmlu"
MIA_DIR = "mia"  # where the challenge's member / non-member files sit beside its data


class EvalError(ValueError):
    """Evaluation inputs do not fit together; one-line message naming what and the valid choices."""


# None: the data directory's default; False or an empty sequence: none.
DocsArg = str | os.PathLike[str] | Sequence[Document] | bool | None
UtilityArg = str | os.PathLike[str] | Sequence[Choice] | bool | None


@dataclass(frozen=True)
class Inputs:
    """Everything evaluated, resolved once (shared by all the models of an :func:`evaluate_many` call)."""

    source: str
    rows: tuple[Row, ...]
    members: tuple[Document, ...]
    nonmembers: tuple[Document, ...]
    utility: tuple[Choice, ...]
    utility_style: str  # open-instruct (one "next" item per question), letter or option (four "mc" items each)
    utility_source: str | None
    notes: tuple[str, ...]
    items: tuple[dict[str, Any], ...]  # what the model actors see, in (stage, token length) order


@dataclass(frozen=True)
class Plan:
    model: str
    inputs: Inputs


def _resolve_docs(arg: DocsArg, data_dir: Path | None, name: str) -> tuple[Document, ...] | None:
    """A path or records as given; None: ``DATA/mia/{name}``, else ``DATA/{name}``, else None."""
    if arg is None:
        for candidate in ((data_dir / MIA_DIR / name, data_dir / name) if data_dir is not None else ()):
            if candidate.is_file():
                return load_documents(candidate)
        return None
    if arg is False or arg is True:
        return () if arg is False else None
    if isinstance(arg, str | os.PathLike):
        return load_documents(Path(arg))
    return tuple(arg)


def load_mmlu() -> MultipleChoiceSet:
    """All 57 MMLU subjects, test split and the dev split's few-shot examples, through ``datasets`` (needs the
    dataset cached or a network)."""
    try:
        import datasets  # heavy: datasets

        splits = {split: datasets.load_dataset(MMLU_ID, "all", split=split) for split in ("test", "dev")}
    except Exception as e:
        raise EvalError(
            f"utility 'mmlu': cannot load {MMLU_ID} through datasets ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); offline, pass an MMLU directory (dev/ + test/ csv, or "
            "cais/mmlu's parquet files) or a multiple-choice jsonl instead"
        ) from None
    test, dev = ([Choice(r["question"], tuple(r["choices"]), int(r["answer"]), r["subject"]) for r in splits[s]]
                 for s in ("test", "dev"))
    return mmlu_set(test, dev, MMLU_ID)


def resolve_utility(arg: UtilityArg, default: Path | None) -> MultipleChoiceSet | None:
    """"mmlu": ``datasets``; a directory: MMLU in one of its layouts; a file: a multiple-choice jsonl."""
    if arg is None or arg is True:
        return (MultipleChoiceSet(load_utility(default), {}, str(default))
                if default is not None and default.is_file() else None)
    if arg is False:
        return None
    if isinstance(arg, str) and arg.lower() == "mmlu":
        return load_mmlu()
    if isinstance(arg, str | os.PathLike):
        path = Path(arg)
        if path.is_dir():
            return load_mmlu_dir(path)
        return MultipleChoiceSet(load_utility(path), {}, str(path))
    if isinstance(arg, MultipleChoiceSet):
        return arg
    return MultipleChoiceSet(tuple(arg), {}, "(records)")


def fit_mmlu_prompts(tokenizer: Any, questions: Sequence[Choice], shots: dict[str, tuple[Choice, ...]], k: int,
                     max_tokens: int) -> tuple[list[str], list[int]]:
    """open-instruct's prompts: ``k`` dev examples of the question's subject (fewer when the subject has fewer),
    then one example fewer while the prompt, tokenized with ``add_special_tokens=False``, is longer than
    ``max_tokens`` (2048 there). Stops at zero examples (open-instruct would loop on). Returns the prompts and
    the number of examples each kept."""
    ks = [min(k, len(shots.get(q.subject, ()))) for q in questions]
    prompts = [mmlu_prompt(q, shots.get(q.subject, ()), n) for q, n in zip(questions, ks, strict=True)]
    lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]] if prompts else []
    for i, q in enumerate(questions):
        while lengths[i] > max_tokens and ks[i] > 0:
            ks[i] -= 1
            prompts[i] = mmlu_prompt(q, shots.get(q.subject, ()), ks[i])
            lengths[i] = len(tokenizer(prompts[i], add_special_tokens=False)["input_ids"])
    return prompts, ks


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
    from transformers import AutoConfig  # heavy: transformers

    try:
        config = AutoConfig.from_pretrained(model, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise ModelError(f"{model}: could not load config ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    vocab = getattr(config, "vocab_size", None)
    if vocab is not None and len(tokenizer) > vocab:
        raise ModelError(f"{model}: tokenizer has {len(tokenizer)} tokens but the model embeds only {vocab}; "
                         "model and tokenizer do not match")


def resolve_inputs(
    data: LumeData | str | os.PathLike[str], settings: EvalConfig, members: DocsArg, nonmembers: DocsArg,
    utility: UtilityArg, tokenizer: Any,
) -> Inputs:
    """Load and check every input; build the work items sorted by stage and token length (``tokenizer``'s;
    the order only saves padding, it changes no result)."""
    lume = data if isinstance(data, LumeData) else load_lume(Path(data))
    data_dir = Path(lume.source) if Path(lume.source).is_dir() else None
    forget, retain = lume.forget[: settings.limit], lume.retain[: settings.limit]
    rows = forget + retain
    if not rows:
        raise EvalError(f"{lume.source}: no rows to evaluate (forget and retain are empty)")
    notes = []
    mem = _resolve_docs(members, data_dir, "member.jsonl")
    if mem is None:
        mem = documents_of(forget)
        notes.append("members: the forget documents rebuilt from sc rows (input + ' ' + output)")
    non = _resolve_docs(nonmembers, data_dir, "nonmember.jsonl") or ()
    _check_disjoint(mem, non)
    mc = resolve_utility(utility, data_dir / "utility.jsonl" if data_dir else None)
    choices = mc.questions if mc is not None else ()
    style = settings.utility_style
    if style == "auto":
        style = "open-instruct" if mc is not None and mc.mmlu else "option"

    items: list[dict[str, Any]] = []
    for r in rows:
        items.append({"key": f"{r.split}:{r.id}", "kind": r.kind, "prompt": r.input, "completion": r.output})
    for split, docs in (("member", mem), ("nonmember", non)):
        for d in docs:
            items.append({"key": f"{split}:{d.id}", "kind": "doc", "prompt": "", "completion": d.document})
    if style == "open-instruct" and mc is not None:
        prompts, kept = fit_mmlu_prompts(tokenizer, choices, mc.shots, settings.mmlu_shots, settings.mmlu_max_tokens)
        for q, prompt in enumerate(prompts):
            items.append({"key": f"mc:{q}", "kind": "next", "prompt": prompt, "completion": ""})
        short = sum(1 for n in kept if n < settings.mmlu_shots)
        if short:
            notes.append(f"utility: {short} of {len(kept)} questions have fewer than {settings.mmlu_shots} examples "
                         f"(their subject's dev split is shorter, or the prompt exceeded {settings.mmlu_max_tokens} "
                         f"tokens); {min(kept)} at least")
    else:
        for q, c in enumerate(choices):
            context, continuations = option_prompt(c.question, c.choices, c.subject, style)
            for j, cont in enumerate(continuations):
                items.append({"key": f"mc:{q}:{j}", "kind": "mc", "prompt": context, "completion": cont})
    # Sort by stage, then token length: batches of similar length pad little, and the generation
    # rows (the expensive stage) form batches of their own except at most one at the boundary.
    stage = {"sc": 0, "qa": 0, "doc": 1, "mc": 2, "next": 2}
    lengths = tokenizer([it["prompt"] if it["kind"] in KINDS or it["kind"] == "next" else it["prompt"] + it["completion"]
                         for it in items])["input_ids"]
    order = sorted(range(len(items)), key=lambda i: (stage[items[i]["kind"]], len(lengths[i])))
    return Inputs(lume.source, tuple(rows), tuple(mem), tuple(non), choices, style,
                  mc.source if mc is not None else None, tuple(notes), tuple(items[i] for i in order))


def plan(
    models: Sequence[str | os.PathLike[str]], data: LumeData | str | os.PathLike[str], settings: EvalConfig,
    members: DocsArg, nonmembers: DocsArg, utility: UtilityArg, trust_remote_code: bool = False,
) -> list[Plan]:
    """Every model's tokenizer checked against its config, the inputs resolved once for all of them."""
    tokenizers = []
    for model in models:
        tok = load_tokenizer(str(model), trust_remote_code=trust_remote_code)
        _check_model(str(model), tok, trust_remote_code)
        tokenizers.append(tok)
    inputs = resolve_inputs(data, settings, members, nonmembers, utility, tokenizers[0])
    return [Plan(str(model), inputs) for model in models]

