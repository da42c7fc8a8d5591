"""The challenge's scoring procedure, run by a transformers 4.45.2 interpreter: a spec file -> JSON on stdout.

Not a test module: ``tests/test_exact_bf16.py`` runs it as ``.cache/tf445/bin/python tests/tf4_scorer.py SPEC``
(the environment ``scripts/tf445.sh`` builds) and compares its answers with ``lume-ray eval --exact``'s. It
imports nothing from lume_ray, so that every number comes from transformers 4.45's own code:

- generation: one prompt at a time, ``tokenizer(prompt)``, ``generate(do_sample=False, max_new_tokens=N,
  pad_token_id=eos)``, the new tokens decoded with ``skip_special_tokens=True`` and tokenization spaces cleaned
  up (``generation``; ``generation_own``: with the tokenizer's own ``clean_up_tokenization_spaces``);
- loss: ``model(input_ids, labels=labels).loss`` of ``tokenizer(prompt + completion)`` with the prompt's tokens
  masked (a document: nothing masked), as the scorer's per-row NLL and membership attack took it;
- MMLU (kind ``next``): open-instruct's ``get_next_word_predictions`` at batch size 1: softmax of the last
  position's logits, the last token of ``encode(" " + letter, add_special_tokens=False)`` for A..D, argmax.

SPEC is JSON: ``{"models": [dir, ...], "dtype": "bfloat16", "max_new_tokens": N, "items": [{"key", "kind",
"prompt", "completion"}, ...]}``. Output: ``{"version": ..., dir: [{"key", "generation", "generation_own",
"new_ids", "nll", "pick"}, ...]}``, one record per item in order (NaN-free: absent fields are null).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer


def score(model: Any, tok: Any, item: dict[str, Any], max_new_tokens: int, answer_ids: list[int]) -> dict[str, Any]:
    rec: dict[str, Any] = {"key": item["key"], "generation": None, "generation_own": None, "new_ids": None,
                           "nll": None, "pick": None}
    kind = item["kind"]
    if kind == "next":
        enc = tok(item["prompt"], return_tensors="pt")
        logits = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask).logits[:, -1, :]
        probs = torch.softmax(logits, dim=-1)[:, answer_ids]
        rec["pick"] = int(torch.argmax(probs, dim=-1)[0])
        return rec
    if kind in ("sc", "qa"):
        enc = tok(item["prompt"], return_tensors="pt")
        out = model.generate(input_ids=enc.input_ids, attention_mask=enc.attention_mask, do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=tok.eos_token_id)
        new = out[0][enc.input_ids.shape[1]:]
        rec["new_ids"] = new.tolist()
        # Tokenization spaces cleaned up as the challenge's scorer's tokenizer did (DESIGN: OLMo's); "own": as
        # this tokenizer's config says (the embedded target's says false).
        rec["generation"] = tok.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=True)
        rec["generation_own"] = tok.decode(new, skip_special_tokens=True)
    if kind == "doc":
        ids = tok(item["completion"], return_tensors="pt").input_ids
        labels = ids.clone()
    else:
        ids = tok(item["prompt"] + item["completion"], return_tensors="pt").input_ids
        labels = ids.clone()
        labels[:, : len(tok(item["prompt"]).input_ids)] = -100
    rec["nll"] = float(model(input_ids=ids, labels=labels).loss)
    return rec


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    dtype = getattr(torch, spec.get("dtype", "bfloat16"))
    out: dict[str, Any] = {"version": transformers.__version__}
    for d in spec["models"]:
        tok = AutoTokenizer.from_pretrained(d)
        model = AutoModelForCausalLM.from_pretrained(d, torch_dtype=dtype).eval()
        answer_ids = [tok.encode(" " + letter, add_special_tokens=False)[-1] for letter in "ABCD"]
        with torch.no_grad():
            out[d] = [score(model, tok, it, spec["max_new_tokens"], answer_ids) for it in spec["items"]]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
