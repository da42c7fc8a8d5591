"""[3 evaluate] Scoring: a loaded model + work items -> one result record per item (generation, score, loss features).

Input:  a causal LM and its tokenizer, items from :mod:`lume_ray.evaluate.inputs` (rows to generate and score,
        documents for the membership attacks, multiple-choice options).
Output: records ``{key, generation, score, nll, nll_sum, nll_count, mink, minkpp, zlib, pick}``. The same code
        runs in the Ray actors (:class:`Scorer`), the reference loop and the target build's measurements.

Tokens are made as the challenge's scorer made them (:func:`encode_item`); greedy generation is
:func:`lume_ray.model.generate_greedy` (batched, left padding) or, with ``exact``, one prompt at a time. MMLU
questions (``kind == "next"``) are answered as open-instruct's ``eval/mmlu/run_eval.py`` answers them
(:func:`next_token_picks`).
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import itertools
import math
from collections.abc import Sequence
from typing import Any

from lume_ray.data import KINDS
from lume_ray.evaluate.mia import min_k_score, token_log_probs, zlib_ratio
from lume_ray.evaluate.prompts import OPTION_LETTERS
from lume_ray.evaluate.protocol import score_row
from lume_ray.model import (
    IGNORE,
    Encoded,
    collate,
    decode_new_tokens,
    encode_prompt,
    generate_greedy,
    load_model,
    sequence_nll,
    stop_token_ids,
    transformers4_arithmetic,
)


def encode_item(tokenizer: Any, item: dict[str, Any]) -> Encoded:
    """The tokens a loss is taken on, made as the challenge's scorer made them: ``tokenizer(prompt +
    completion)`` with the first ``len(tokenizer(prompt))`` tokens masked (rows; options the same way, as
    lm-evaluation-harness splits context and continuation); a document is ``tokenizer(document)`` with
    nothing masked. Special tokens stay as the tokenizer adds them (a BOS; an EOS some tokenizers append)."""
    if item["kind"] == "doc":
        return Encoded(encode_prompt(tokenizer, item["completion"]), 0)
    ids = encode_prompt(tokenizer, item["prompt"] + item["completion"])
    return Encoded(ids, min(len(encode_prompt(tokenizer, item["prompt"])), len(ids)))


def answer_token_ids(tokenizer: Any) -> list[int]:
    """The ids open-instruct compares: the LAST token of ``tokenizer.encode(" " + letter, add_special_tokens=False)``
    for A..D (a Metaspace tokenizer may split " A" into "▁" + "▁A"; the letter is the last piece)."""
    ids = [tokenizer.encode(" " + letter, add_special_tokens=False)[-1] for letter in OPTION_LETTERS]
    if len(set(ids)) != len(ids):
        raise ValueError(f"the tokenizer maps the answers ' A'..' D' to the same last token ({ids}); "
                         "the open-instruct utility style cannot tell them apart (use utility_style letter)")
    return ids


def next_token_picks(model: Any, tokenizer: Any, prompts: Sequence[str], *, batch_size: int, exact: bool) -> list[int]:
    """open-instruct's ``get_next_word_predictions`` for MMLU: the index (0..3) of the answer among " A".." D"
    whose token is most likely next after each prompt.

    As there: the prompt tokenized with the tokenizer's own special tokens (``add_special_tokens`` left at its
    default: a Llama tokenizer prepends BOS, GPT-2's and OLMo's add nothing), the next-token logits in float32
    (transformers 4.45, the challenge's pin, upcast them), softmax over the whole vocabulary, the four answer
    tokens' probabilities, argmax (the first on ties). ``exact``: one prompt at a time with the full logits
    (open-instruct's default batch size 1); otherwise left-padded batches whose position ids skip the padding,
    and only the last position's logits.
    """
    import torch  # heavy: torch

    answer_ids = answer_token_ids(tokenizer)
    device = next(model.parameters()).device
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    keep_last = not exact and "logits_to_keep" in inspect.signature(model.forward).parameters
    size = 1 if exact else batch_size
    picks = [0] * len(prompts)
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        batch = collate([Encoded(encoded[i], len(encoded[i])) for i in chunk], tokenizer.pad_token_id,
                        padding_side="left")
        ids, attn = batch["input_ids"].to(device), batch["attention_mask"].to(device)  # (B, T)
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": attn}
        if not exact:
            kwargs["position_ids"] = (attn.cumsum(-1) - 1).clamp(min=0)  # left padding must not move positions
        if keep_last:
            kwargs["logits_to_keep"] = 1
        with torch.no_grad():
            logits = model(**kwargs).logits[:, -1, :].float()  # (B, V)
        probs = torch.softmax(logits, dim=-1)[:, answer_ids]  # (B, 4)
        for i, pick in zip(chunk, torch.argmax(probs, dim=-1).tolist(), strict=True):
            picks[i] = int(pick)
    return picks


def item_losses(model: Any, tokenizer: Any, items: Sequence[dict[str, Any]], *, batch_size: int, mia_k: float) -> list[dict[str, float]]:
    """Summed NLL and token count of each item's completion (rows, options: prompt masked; documents:
    nothing masked), plus Min-K% / Min-K%++ / zlib features for documents. Batched, length-sorted. Items of
    kind ``next`` (MMLU questions answered by the next token) take no loss here."""
    import torch  # heavy: torch

    device = next(model.parameters()).device
    out: list[dict[str, float]] = [{} for _ in items]
    for is_doc in (False, True):
        idx = [i for i, it in enumerate(items) if it["kind"] != "next" and (it["kind"] == "doc") == is_doc]
        enc = {i: encode_item(tokenizer, items[i]) for i in idx}
        idx.sort(key=lambda i: len(enc[i].input_ids))
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            batch = collate([enc[i] for i in chunk], tokenizer.pad_token_id, mask_prompt=not is_doc)
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.no_grad():
                if is_doc:
                    # Min-K% needs every token's log-prob; the NLL comes from the same forward.
                    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                    token_lp, token_pp = token_log_probs(logits, batch["labels"])
                    mask = batch["labels"][:, 1:] != IGNORE
                    sums, counts = -(token_lp * mask).sum(-1), mask.sum(-1)
                else:
                    sums, counts = sequence_nll(model, batch)
            for b, i in enumerate(chunk):
                n = int(counts[b])
                rec = {"nll_sum": float(sums[b]), "nll_count": float(n), "nll": float(sums[b]) / n if n else math.nan}
                if is_doc:
                    m = mask[b]
                    rec["mink"] = min_k_score(token_lp[b][m].tolist(), mia_k)
                    rec["minkpp"] = min_k_score(token_pp[b][m].tolist(), mia_k)
                    rec["zlib"] = zlib_ratio(rec["nll"], items[i]["completion"])
                out[i] = rec
    return out


def score_items(items: Sequence[dict[str, Any]], generations: dict[int, str], losses: Sequence[dict[str, float]],
                picks: dict[int, int] | None = None) -> list[dict[str, Any]]:
    """One result record per item: the loss features, for rows the generation and its score, for MMLU
    questions the picked answer (``pick``, 0..3; NaN elsewhere)."""
    results = []
    for i, it in enumerate(items):
        rec: dict[str, Any] = {"key": it["key"], "generation": "", "score": math.nan, "nll": math.nan,
                               "nll_sum": math.nan, "nll_count": math.nan, "mink": math.nan, "minkpp": math.nan,
                               "zlib": math.nan, "pick": math.nan}
        rec.update(losses[i])
        if picks is not None and i in picks:
            rec["pick"] = float(picks[i])
        if i in generations:
            rec["generation"] = generations[i]
            rec["score"] = score_row(it["kind"], it["completion"], generations[i])
        results.append(rec)
    return results


def generate_exact(model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int) -> list[str]:
    """The challenge's generation loop: one prompt at a time, no padding, greedy with KV cache, stopping at
    the model's own end ids; new tokens decoded as :func:`lume_ray.model.decode_new_tokens` does."""
    import torch  # heavy: torch

    device = next(model.parameters()).device
    out = []
    for prompt in prompts:
        ids = torch.tensor([encode_prompt(tokenizer, prompt)], device=device)
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=max_new_tokens, pad_token_id=tokenizer.eos_token_id,
                                 eos_token_id=stop_token_ids(model, tokenizer), use_cache=True)
        out.append(decode_new_tokens(tokenizer, gen[:, ids.shape[1] :])[0])
    return out


def score_model(model: Any, tokenizer: Any, items: Sequence[dict[str, Any]], *, max_new_tokens: int,
                batch_size: int, mia_k: float, exact: bool) -> list[dict[str, Any]]:
    """Items of one loaded model -> result records (generation + score for rows, loss features for all).

    ``exact``: generation, losses and MMLU answers one item at a time, unpadded, with transformers 4.45's
    rounding (:func:`lume_ray.model.transformers4_arithmetic`): the challenge's procedure, bit for bit in any
    dtype; otherwise batched with left-padded generation (identical in float32, see the runner's notes).
    """
    with transformers4_arithmetic(model) if exact else contextlib.nullcontext():
        gen_idx = [i for i, it in enumerate(items) if it["kind"] in KINDS]
        prompts = [items[i]["prompt"] for i in gen_idx]
        if exact:
            texts = generate_exact(model, tokenizer, prompts, max_new_tokens=max_new_tokens)
        else:
            texts = generate_greedy(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
        losses = item_losses(model, tokenizer, items, batch_size=1 if exact else batch_size, mia_k=mia_k)
        next_idx = [i for i, it in enumerate(items) if it["kind"] == "next"]
        picks = next_token_picks(model, tokenizer, [items[i]["prompt"] for i in next_idx], batch_size=batch_size,
                                 exact=exact) if next_idx else []
        return score_items(items, dict(zip(gen_idx, texts, strict=True)), losses,
                           dict(zip(next_idx, picks, strict=True)))


class Scorer:
    """A model actor (Ray Data's ``map_batches`` class, and the sweep's evaluation pool): batches of items ->
    result records. Each item names its model; the actor keeps one model loaded and loads the next when a
    batch moves on to it (items arrive grouped by model, so each actor loads each model about once)."""

    def __init__(self, *, dtype: str, trust_remote_code: bool, use_gpu: bool, max_new_tokens: int, batch_size: int,
                 mia_k: float, exact: bool = False) -> None:
        self.dtype, self.trust_remote_code, self.device = dtype, trust_remote_code, "cuda" if use_gpu else "cpu"
        self.max_new_tokens, self.batch_size, self.mia_k, self.exact = max_new_tokens, batch_size, mia_k, exact
        self.loaded: tuple[str, Any, Any] | None = None  # (path, model, tokenizer)

    def _load(self, path: str) -> tuple[Any, Any]:
        """Make ``path`` the loaded model. The previous one is freed first (nothing else holds it), so
        two large models never sit in memory at once."""
        if self.loaded is None or self.loaded[0] != path:
            self.loaded = None
            gc.collect()
            if self.device == "cuda":
                import torch  # heavy: torch

                torch.cuda.empty_cache()
            model, tok = load_model(path, dtype=self.dtype, trust_remote_code=self.trust_remote_code,
                                    device=self.device)
            self.loaded = (path, model, tok)
        return self.loaded[1], self.loaded[2]

    def score(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Items (grouped by their ``model``) -> records carrying each item's ``job``."""
        records: list[dict[str, Any]] = []
        # A batch at a model boundary holds the end of one model's items and the start of the next.
        for _, group in itertools.groupby(items, key=lambda it: (it["model"], it["job"])):
            part = list(group)
            model, tok = self._load(part[0]["model"])
            recs = score_model(model, tok, part, max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
                               mia_k=self.mia_k, exact=self.exact)
            records += [{**rec, "job": it["job"]} for it, rec in zip(part, recs, strict=True)]
        return records

    def __call__(self, batch: Any) -> Any:  # pandas.DataFrame -> pandas.DataFrame (Ray Data)
        import pandas as pd  # heavy: pandas

        return pd.DataFrame(self.score(batch.to_dict(orient="records")))
