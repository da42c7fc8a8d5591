"""[2] Target: a LUME dataset -> the embedded target model (tokenizer + tiny OLMo that memorized it).

Input:  a LUME directory (forget + retain, optional utility.jsonl), a size preset, a seed.
Output: a normal Hugging Face model directory (``from_pretrained`` loads it) with ``manifest.json``
        (data hash, seed, config, measured memorization). A rebuild with the same inputs is a cache hit.

No download anywhere: the tokenizer is a byte-level BPE trained on the corpus (``tokenizers``), the
model is ``OlmoForCausalLM`` built from an ``OlmoConfig``. It stands in for the LUME OLMo-1B/7B
checkpoints, which were likewise fine-tuned to memorize every forget and retain row.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from lume_ray.data import (
    Choice,
    Document,
    LumeData,
    documents_of,
    join_text,
    load_documents,
    load_lume,
    load_utility,
)
from lume_ray.files import atomic_dir

EOS = "<|endoftext|>"
PAD = "<|padding|>"


@dataclass(frozen=True)
class Preset:
    """Model and training sizes of the embedded target.

    ``epochs`` is an upper bound: training stops early once ``stop_accuracy`` of the trained rows are
    reproduced exactly under teacher forcing (checked every ``check_every`` epochs), which is when greedy
    generation reproduces them too.
    """

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 1024
    epochs: int = 60
    lr: float = 3e-3
    batch_size: int = 16
    warmup_steps: int = 30
    weight_decay: float = 0.0  # memorization is the goal: no pull toward small weights
    check_every: int = 5
    stop_accuracy: float = 0.99
    prompt_loss_weight: float = 1.0  # 0: loss on completions only (see memorize())


PRESETS: dict[str, Preset] = {
    # ~1-2M parameters: memorizes the quickstart data in a few minutes on 2 CPU cores.
    "tiny": Preset(vocab_size=2048, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=512),
    "small": Preset(vocab_size=4096, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                    intermediate_size=1024, epochs=40, lr=1e-3),
    # For unit tests: builds in seconds on a handful of documents.
    # Measured: memorizes 40 rows + 20 utility questions (synth --docs-per-task 4) in ~60-80 epochs,
    # ~15 s of one core.
    "test": Preset(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=128, max_position_embeddings=512, epochs=150, batch_size=8,
                   warmup_steps=5, stop_accuracy=0.97),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r} (valid: {', '.join(PRESETS)})") from None


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """Byte-level BPE trained on the corpus, wrapped as a transformers fast tokenizer.

    Byte-level pre-tokenization splits before spaces, so a prompt's tokens are a prefix of
    ``prompt + " " + completion``'s tokens (see :func:`lume_ray.model.encode_pair`).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD,
                                   clean_up_tokenization_spaces=False)


def tiny_olmo(tokenizer: Any, preset: Preset, seed: int = 0) -> Any:
    """A randomly initialized OLMo-architecture causal LM sized by ``preset``."""
    import torch
    from transformers import OlmoConfig, OlmoForCausalLM

    config = OlmoConfig(
        vocab_size=len(tokenizer), hidden_size=preset.hidden_size,
        num_hidden_layers=preset.num_hidden_layers, num_attention_heads=preset.num_attention_heads,
        intermediate_size=preset.intermediate_size, max_position_embeddings=preset.max_position_embeddings,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = OlmoForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def preset_dict(preset: Preset) -> dict[str, Any]:
    return asdict(preset)


# ---------------------------------------------------------------------------------------------
# Building the target: data -> tokenizer + model -> memorize -> measure -> HF directory + manifest.

BUILD_VERSION = 1  # bump when the training recipe changes, so an old cached build is not reused
MANIFEST = "manifest.json"
MANIFEST_KIND = "lume-ray target"
OPTIONAL_FILES = ("utility.jsonl", "mia/member.jsonl", "mia/nonmember.jsonl", "member.jsonl", "nonmember.jsonl")


@dataclass(frozen=True)
class TargetInputs:
    """What a build trains on and measures with, read once from the data directory."""

    data: LumeData
    utility: tuple[Choice, ...]
    member: tuple[Document, ...]
    nonmember: tuple[Document, ...]
    files: dict[str, str]  # optional file name -> content hash (part of the cache key)


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def read_inputs(data_dir: str | os.PathLike[str]) -> TargetInputs:
    """The LUME rows plus, when the directory has them, utility questions and member/non-member documents.

    Members: ``mia/member.jsonl`` (the challenge's layout) or ``member.jsonl``; without either, the forget
    documents reassembled from their sc rows. Non-members likewise.
    """
    data = load_lume(os.fspath(data_dir))
    d = Path(data_dir)
    files = {name: _file_hash(d / name) for name in OPTIONAL_FILES if (d / name).is_file()}
    utility = load_utility(d / "utility.jsonl") if "utility.jsonl" in files else ()
    # The challenge's layout (DATA/mia/) first, then the synthetic generator's (DATA/member.jsonl).
    member_file = next((n for n in ("mia/member.jsonl", "member.jsonl") if n in files), None)
    nonmember_file = next((n for n in ("mia/nonmember.jsonl", "nonmember.jsonl") if n in files), None)
    member = load_documents(d / member_file) if member_file else documents_of(data.forget)
    nonmember = load_documents(d / nonmember_file) if nonmember_file else ()
    return TargetInputs(data, utility, member, nonmember, files)


def inputs_hash(inputs: TargetInputs, preset_name: str, preset: Preset, seed: int) -> str:
    key = {"build_version": BUILD_VERSION, "data": inputs.data.fingerprint(), "files": inputs.files,
           "preset_name": preset_name, "preset": asdict(preset), "seed": seed}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def training_texts(inputs: TargetInputs) -> list[tuple[str, str]]:
    """(prompt, completion) pairs the target memorizes: every row, and each utility question with its
    correct choice (the evaluator scores options by the likelihood of ``" " + choice`` after the question)."""
    pairs = [(r.input, r.output) for r in inputs.data.rows]
    pairs += [(c.question, c.choices[c.answer]) for c in inputs.utility]
    return pairs


def _batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar length (sorted within chunks of 8 batches): less padding, still random."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    chunk = batch_size * 8
    batches: list[list[int]] = []
    for i in range(0, len(idx), chunk):
        part = sorted(idx[i : i + chunk], key=lambda j: lengths[j])
        batches += [part[k : k + batch_size] for k in range(0, len(part), batch_size)]
    rng.shuffle(batches)
    return batches


def _weighted_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Mean token NLL over the labelled tokens, each weighted by ``batch["weight"]`` (prompt tokens less)."""

    from lume_ray.model import token_nll

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
    nll, _ = token_nll(logits, batch["labels"])  # (B, T-1)
    weight = batch["weight"][:, 1:]
    return (nll * weight).sum() / weight.sum()


def _collate_train(examples: Sequence[Any], pad_id: int, prompt_weight: float) -> dict[str, Any]:
    from lume_ray.model import IGNORE, collate

    batch = collate(examples, pad_id, mask_prompt=False)
    weight = (batch["labels"] != IGNORE).float()
    for i, e in enumerate(examples):
        weight[i, : e.n_prompt] *= prompt_weight
    batch["weight"] = weight
    return batch


def completion_accuracy(model: Any, examples: Sequence[Any], pad_id: int, batch_size: int = 64) -> tuple[float, float]:
    """Teacher-forced (token accuracy, fraction of rows exact) on the completions.

    A row that is exact under teacher forcing is also what greedy decoding produces from its prompt,
    so this is a cheap (one forward pass) stand-in for generation while training.
    """
    import torch

    from lume_ray.model import IGNORE, collate

    correct = total = rows_exact = 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(examples), batch_size):
            batch = collate(examples[i : i + batch_size], pad_id, mask_prompt=True)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            pred, labels = logits[:, :-1].argmax(-1), batch["labels"][:, 1:]  # (B, T-1)
            mask = labels != IGNORE
            hit = (pred == labels) & mask
            correct += int(hit.sum())
            total += int(mask.sum())
            rows_exact += int((hit.sum(-1) == mask.sum(-1)).sum())
    model.train(was_training)
    return correct / max(total, 1), rows_exact / max(len(examples), 1)


def memorize(
    model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], preset: Preset, *, seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``model`` in place on ``pairs`` (plain AdamW, one process) until memorized or out of epochs.

    Loss is on the whole text ``prompt + " " + completion + eos``, prompt tokens included: the target of
    LUME was fine-tuned on whole documents, and the membership attack scores whole documents, so members
    must have low loss on every token, not only on completions (completion-only training leaves member
    and non-member prompts equally surprising). Measured on ``data synth`` defaults, tiny preset, seed 0:
    whole text reached 99% exact rows in 40 epochs, member / non-member document NLL 0.04 / 3.77;
    completion only (``prompt_loss_weight=0``) needed 45 epochs and left members at 7.07 vs 9.11.
    """
    import torch
    from tqdm.auto import tqdm

    from lume_ray.model import encode_pair

    examples = [encode_pair(tokenizer, p, c, add_eos=True, max_length=preset.max_position_embeddings)
                for p, c in pairs]
    lengths = [len(e.input_ids) for e in examples]
    rng = random.Random(seed)
    steps_per_epoch = math.ceil(len(examples) / preset.batch_size)
    total_steps = steps_per_epoch * preset.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=preset.lr, weight_decay=preset.weight_decay, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        # Linear warmup, then cosine decay to 10% of the peak: the last epochs polish the exact tokens.
        if step < preset.warmup_steps:
            return (step + 1) / preset.warmup_steps
        t = (step - preset.warmup_steps) / max(1, total_steps - preset.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    pad = tokenizer.pad_token_id
    history: list[dict[str, float]] = []
    token_acc = row_acc = 0.0
    epoch = 0
    model.train()
    bar = tqdm(total=preset.epochs, desc="memorizing", unit="epoch", disable=not progress, dynamic_ncols=True)
    try:
        for epoch in range(1, preset.epochs + 1):
            losses = []
            for idx in _batches(lengths, preset.batch_size, rng):
                batch = _collate_train([examples[i] for i in idx], pad, preset.prompt_loss_weight)
                loss = _weighted_loss(model, batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                losses.append(loss.detach().item())
            record = {"epoch": epoch, "loss": statistics.fmean(losses)}
            if epoch % preset.check_every == 0 or epoch == preset.epochs:
                token_acc, row_acc = completion_accuracy(model, examples, pad)
                record.update(token_accuracy=token_acc, row_accuracy=row_acc)
            history.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", rows_exact=f"{row_acc:.3f}")
            if row_acc >= preset.stop_accuracy:
                break
    finally:
        bar.close()
    model.eval()
    return {"epochs_run": epoch, "steps": epoch * steps_per_epoch, "stopped_early": epoch < preset.epochs,
            "teacher_forced_token_accuracy": token_acc, "teacher_forced_row_accuracy": row_acc,
            "final_loss": history[-1]["loss"] if history else None, "history": history}


# ---------------------------------------------------------------------------------------------
# Measuring what the target memorized (the numbers the manifest records).


def measure(model: Any, tokenizer: Any, inputs: TargetInputs, *, max_new_tokens: int) -> dict[str, Any]:
    """What the target memorized, measured by the evaluation itself (:func:`lume_ray.evaluate.runner.evaluate_loaded`:
    the same items, scorers and metrics as ``lume-ray eval``), in this process."""
    from lume_ray.config import EvalConfig
    from lume_ray.evaluate.runner import evaluate_loaded

    settings = EvalConfig(max_new_tokens=max_new_tokens, batch_size=32)
    return evaluate_loaded(model, tokenizer, inputs.data, settings, members=inputs.member,
                           nonmembers=inputs.nonmember, utility=inputs.utility)


def memorization_summary(m: dict[str, Any]) -> dict[str, Any]:
    """The manifest's view of a metrics dict: per split, the mean sc ROUGE-L recall and qa exact match over
    the rows (not the mean of the task means), and the per-task scores."""
    counts = m["counts"]["task_rows"]

    def pooled(split: str, kind: str) -> float | None:
        names = [n for n in counts if n.startswith(f"{split}/") and n.endswith(f"/{kind}") and counts[n]]
        total = sum(counts[n] for n in names)
        return sum(m[n] * counts[n] for n in names) / total if total else None

    out: dict[str, Any] = {}
    for split in ("forget", "retain"):
        out[split] = {"sc_rougeL_recall": pooled(split, "sc"), "qa_exact_match": pooled(split, "qa"),
                      "by_task": {n.split("/", 1)[1]: m[n] for n in counts
                                  if n.startswith(f"{split}/") and m[n] is not None}}
    return out


# ---------------------------------------------------------------------------------------------
# The build.


def _read_manifest(out: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("kind") == MANIFEST_KIND else None


def build_target(
    out_dir: str | os.PathLike[str], data_dir: str | os.PathLike[str], *, preset: str = "tiny", seed: int = 0,
    epochs: int | None = None, force: bool = False, progress: bool = True, threads: int = 1,
) -> dict[str, Any]:
    """Train the embedded target on a LUME directory and save it as a Hugging Face model directory.

    Returns the manifest (also written to ``out_dir/manifest.json``). When ``out_dir`` already holds a
    build of the same inputs (data, optional files, preset, epochs, seed, recipe version) it is returned
    as is ("cached") unless ``force``. The build happens in a temp dir beside ``out_dir`` and is renamed
    into place, so ``out_dir`` is never half-written; an existing ``out_dir`` is replaced only if it is
    empty or an earlier target build. ``threads`` is the torch thread count while building (see below).
    """
    import torch

    started = time.perf_counter()
    out = Path(out_dir)
    cfg = get_preset(preset)
    if epochs is not None:
        if epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {epochs}")
        cfg = replace(cfg, epochs=epochs)
    inputs = read_inputs(data_dir)
    key = inputs_hash(inputs, preset, cfg, seed)
    if out.exists():
        previous = _read_manifest(out)
        if previous is None and (not out.is_dir() or any(out.iterdir())):
            raise FileExistsError(f"{out}: exists and is not a target build (no {MANIFEST}); choose another OUT_DIR")
        if previous is not None and previous.get("inputs_hash") == key and not force and (out / "config.json").is_file():
            if progress:
                print(f"{out}: cached (inputs {key})")
            return previous

    threads_before = torch.get_num_threads()
    # One thread: a model this small gains little from intra-op parallelism, and on a shared 2-core
    # machine two OpenMP threads per process spin-wait: measured 8x the CPU time and 4x the wall time
    # per step under load (0.20 vs 1.59 CPU s/step).
    torch.set_num_threads(threads)
    try:
        pairs = training_texts(inputs)
        tokenizer = train_tokenizer((join_text(p, c) for p, c in pairs), cfg.vocab_size)
        model = tiny_olmo(tokenizer, cfg, seed=seed)
        n_params = sum(p.numel() for p in model.parameters())
        if progress:
            print(f"target: {n_params / 1e6:.2f}M parameters, {len(pairs)} texts, up to {cfg.epochs} epochs")
        t0, cpu0 = time.perf_counter(), time.process_time()
        training = memorize(model, tokenizer, pairs, cfg, seed=seed, progress=progress)
        train_seconds, train_cpu = time.perf_counter() - t0, time.process_time() - cpu0

        t0 = time.perf_counter()
        completion_tokens = max(len(tokenizer(c)["input_ids"]) for _, c in pairs)
        max_new = min(256, completion_tokens + 8)  # room for the longest answer and its eos
        measured = measure(model, tokenizer, inputs, max_new_tokens=max_new)
        measure_seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads_before)

    manifest: dict[str, Any] = {
        "kind": MANIFEST_KIND,
        "build_version": BUILD_VERSION,
        "inputs_hash": key,
        "data": {"source": str(data_dir), "fingerprint": inputs.data.fingerprint(), "files": inputs.files,
                 "rows": {"forget": len(inputs.data.forget), "retain": len(inputs.data.retain)},
                 "utility_questions": len(inputs.utility)},
        "seed": seed,
        "preset": preset,
        "preset_config": asdict(cfg),
        "model_config": {k: getattr(model.config, k) for k in (
            "model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "max_position_embeddings")},
        "parameters": n_params,
        "training": {k: v for k, v in training.items() if k != "history"},
        "history": training["history"],
        "memorization": {**memorization_summary(measured), "max_new_tokens": max_new},
        "mia": {"member_nll": measured["member_nll"], "nonmember_nll": measured["nonmember_nll"],
                "members": measured["counts"]["members"], "nonmembers": measured["counts"]["nonmembers"],
                "auc": measured["mia_auc"]},  # the loss attack as LUME scores it: members 1, score = -NLL
        "utility_accuracy": measured["utility"],
        "metrics": {k: v for k, v in measured.items() if k not in ("settings", "notes")},
        "seconds": {"train": round(train_seconds, 1), "measure": round(measure_seconds, 1),
                    "train_cpu": round(train_cpu, 1)},
        "versions": {"torch": torch.__version__, "transformers": _transformers_version()},
    }

    from lume_ray.model import save_model, save_tokenizer

    with atomic_dir(out) as tmp:  # loads in transformers 5 and in 4.45, the challenge's pin
        save_model(model, tmp)
        save_tokenizer(tokenizer, tmp)
        manifest["build_seconds"] = round(time.perf_counter() - started, 1)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _transformers_version() -> str:
    import transformers

    return str(transformers.__version__)


def summary_lines(manifest: dict[str, Any]) -> list[str]:
    """The few lines `lume-ray target build` prints: size, time, memorization, membership gap."""
    mem, mia = manifest["memorization"], manifest["mia"]
    lines = [f"parameters {manifest['parameters']:,}  preset {manifest['preset']}  seed {manifest['seed']}  "
             f"built in {manifest['build_seconds']} s ({manifest['training']['epochs_run']} epochs)"]
    for split in ("forget", "retain"):
        lines.append(f"{split:<7} sc ROUGE-L recall {mem[split]['sc_rougeL_recall']:.3f}   "
                     f"qa exact match {mem[split]['qa_exact_match']:.3f}")
    non = "n/a" if mia["nonmember_nll"] is None else f"{mia['nonmember_nll']:.3f}"
    auc = "n/a" if mia["auc"] is None else f"{mia['auc']:.3f}"
    lines.append(f"document NLL: members {mia['member_nll']:.3f}  non-members {non}  (loss-attack AUC {auc})")
    if manifest.get("utility_accuracy") is not None:
        lines.append(f"utility accuracy {manifest['utility_accuracy']:.3f}")
    return lines
