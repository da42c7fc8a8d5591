"""The target's tokenizer, model and training loop: (prompt, completion) pairs -> a tiny OLMo that memorized them.

Input:  the texts to memorize, a :class:`~lume_ray.target.presets.Preset`, a seed.
Output: a byte-level BPE tokenizer trained on the texts (:func:`train_tokenizer`), a randomly initialized
        ``OlmoForCausalLM`` (:func:`tiny_olmo`), the model fine-tuned in place until it reproduces the rows
        (:func:`memorize`, which returns its training record), and what it memorized, measured by the
        evaluation itself (:func:`measure`, :func:`memorization_summary`).

No download anywhere: the tokenizer is trained on the corpus (``tokenizers``), the model is built from an
``OlmoConfig``. Imports torch (as :mod:`lume_ray.model` does); transformers and tokenizers load on first use.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from lume_ray.config import EvalConfig
from lume_ray.evaluate.runner import evaluate_loaded
from lume_ray.model import IGNORE, collate, encode_pair, token_nll
from lume_ray.target.presets import Preset

if TYPE_CHECKING:
    from lume_ray.target.build import TargetInputs

EOS = "<|endoftext|>"
PAD = "<|padding|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """Byte-level BPE trained on the corpus, wrapped as a transformers fast tokenizer.

    Byte-level pre-tokenization splits before spaces, so a prompt's tokens are a prefix of
    ``prompt + " " + completion``'s tokens (see :func:`lume_ray.model.encode_pair`).
    """
    # heavy: tokenizers and transformers load on first use, as in lume_ray.model
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
    from transformers import OlmoConfig, OlmoForCausalLM  # heavy: on first use, as in lume_ray.model

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


# ---------------------------------------------------------------------------------------------
# Memorizing: fine-tune until the rows come back exactly.


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
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
    nll, _ = token_nll(logits, batch["labels"])  # (B, T-1)
    weight = batch["weight"][:, 1:]
    return (nll * weight).sum() / weight.sum()


def _collate_train(examples: Sequence[Any], pad_id: int, prompt_weight: float) -> dict[str, Any]:
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
    from tqdm.auto import tqdm

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

