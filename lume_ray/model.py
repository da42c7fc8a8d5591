"""[2] Model: a name or path -> (causal LM, tokenizer); text pairs -> token ids and masks.

Input:  a local Hugging Face model directory or a hub id (OLMo-1B/7B, the LUME checkpoints, the
        embedded tiny target built by :mod:`lume_ray.target`), a dtype, ``trust_remote_code``.
Output: ``(model, tokenizer)`` in eval mode; :func:`encode_pair` / :func:`collate` turn LUME rows into
        the padded tensors every later stage uses, so training and evaluation tokenize identically.

Everything that loads a model goes through :func:`load_model`: one place for dtype, padding and the
``trust_remote_code`` default (off). Everything that writes one goes through :func:`save_model` and
:func:`save_tokenizer`, so that the directory also loads in transformers 4.45 (the challenge's pin).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lume_ray.data import join_text

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
IGNORE = -100  # label value that cross-entropy ignores


class ModelError(ValueError):
    """A model or tokenizer cannot be loaded or does not fit the data; one-line message."""


def resolve_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ModelError(f"unknown dtype {name!r} (valid: {', '.join(DTYPES)})") from None


def check_source(name_or_path: str) -> None:
    path = Path(name_or_path)
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelError(f"{path}: not a Hugging Face model directory (no config.json)")
        return
    looks_like_hub_id = name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/", "~"))
    if not looks_like_hub_id:
        raise ModelError(f"{name_or_path}: model path does not exist (give a model directory or a hub id 'owner/name')")


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False) -> Any:
    from transformers import AutoTokenizer  # heavy: transformers, on first use

    check_source(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise ModelError(f"{name_or_path}: could not load tokenizer ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    if tok.pad_token_id is None:  # OLMo and most causal LMs ship no pad token: pad with eos
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    name_or_path: str | os.PathLike[str],
    *,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    device: str | torch.device = "cpu",
    with_tokenizer: bool = True,
) -> tuple[Any, Any]:
    """Load a causal LM (and its tokenizer) for inference; ``trust_remote_code`` stays off unless asked."""
    from transformers import AutoModelForCausalLM  # heavy: transformers, on first use

    name = str(name_or_path)
    check_source(name)
    tok = load_tokenizer(name, trust_remote_code=trust_remote_code) if with_tokenizer else None
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=resolve_dtype(dtype), trust_remote_code=trust_remote_code
        )
    except Exception as e:
        raise ModelError(f"{name}: could not load model ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    model = model.to(torch.device(device)).eval()  # type: ignore[arg-type]  # transformers' stub
    if tok is not None:
        check_compatible(model, tok, name)
        if model.generation_config is not None and model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def check_compatible(model: Any, tokenizer: Any, name: str = "model") -> None:
    """Fail clearly when the tokenizer emits ids the model's embedding table does not have."""
    n_embed = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > n_embed:
        raise ModelError(
            f"{name}: tokenizer has {len(tokenizer)} tokens but the model embeds only {n_embed}; "
            "model and tokenizer do not match"
        )


# Model types whose transformers-5 rotary embedding returns float32 cos/sin where transformers 4.45 cast them to the
# activations' dtype (read from both versions' modeling files; 4.45's other architectures match 5.x here).
TRANSFORMERS4_ROTARY_CAST = frozenset({"olmo"})


def _rotary_in_input_dtype(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
    """Forward hook of a rotary embedding ``(x, position_ids) -> (cos, sin)``: cos and sin cast to ``x``'s dtype."""
    x = args[0] if args else kwargs.get("x")
    if not isinstance(x, torch.Tensor) or not isinstance(output, tuple):
        return None
    return tuple(t.to(x.dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in output)


@contextmanager
def transformers4_arithmetic(model: Any) -> Iterator[None]:
    """Within the block, ``model``'s forward passes round as transformers 4.45 (the challenge's pin) rounded them.

    transformers 4.45 cast every rotary embedding's cos and sin to the activations' dtype before rotating the
    queries and keys; transformers 5's OLMo keeps them in float32 and rounds the rotated queries and keys once
    (measured in bfloat16 on the embedded tiny OLMo: hidden states differ from the first layer on, losses by up to
    6%, greedy generations of an unlearned model change). For the architectures 4.45 had and 5.x rounds
    differently (:data:`TRANSFORMERS4_ROTARY_CAST`), a forward hook (PyTorch's public API) on each
    ``*RotaryEmbedding`` module casts them as 4.45 did: nothing changes in float32. Llama's and most others'
    rotary embeddings still cast in 5.x (measured on Llama: bit-identical to 4.45.2 as it is); architectures 4.45
    lacked (OLMo 2, OLMo 3) keep transformers 5's arithmetic. The hooks are removed on exit.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    handles = [m.register_forward_hook(_rotary_in_input_dtype, with_kwargs=True)
               for m in model.modules()
               if model_type in TRANSFORMERS4_ROTARY_CAST and type(m).__name__.endswith("RotaryEmbedding")]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# ---------------------------------------------------------------------------------------------
# Saving: directories that load in transformers 5 and in 4.45 (the challenge's environment).

# transformers 5 saves ``tokenizer_class: TokenizersBackend`` (or a family name) in tokenizer_config.json; 4.45
# refuses the first, and builds a family's fast class (LlamaTokenizerFast, ...) by re-deriving special-token
# handling from config keys 5.x may not write (measured: a 5.x LlamaTokenizer without BOS came back from 4.45
# prepending one). ``PreTrainedTokenizerFast`` is built from tokenizer.json as it is by both versions (measured
# on OLMo's, Llama's and GPT-2's kinds of tokenizer: the same ids and text as the tokenizer that was saved).
TRANSFORMERS4_TOKENIZER_CLASS = "PreTrainedTokenizerFast"


def save_tokenizer(tokenizer: Any, path: str | os.PathLike[str]) -> None:
    """``tokenizer.save_pretrained(path)``, then tokenizer_config.json's ``tokenizer_class`` set to
    ``PreTrainedTokenizerFast`` so that transformers 4.45 (the challenge's pin) loads it as transformers 5 does:
    from tokenizer.json, unchanged. Left alone when no tokenizer.json was written (a slow tokenizer)."""
    tokenizer.save_pretrained(path)
    config_path, tokenizer_json = Path(path) / "tokenizer_config.json", Path(path) / "tokenizer.json"
    if not config_path.is_file() or not tokenizer_json.is_file():
        return
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("tokenizer_class") != TRANSFORMERS4_TOKENIZER_CLASS:
        config["tokenizer_class"] = TRANSFORMERS4_TOKENIZER_CLASS
        config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def transformers4_config(config: dict[str, Any]) -> dict[str, Any]:
    """A config.json dict with the keys transformers 4.45 reads where transformers 5 renamed them, the new ones
    kept (5.x reads both): ``torch_dtype`` beside ``dtype``; ``rope_theta`` (+ ``rope_scaling`` unless the
    default rotary) beside ``rope_parameters``, which 4.45 ignores: without them it would silently use its
    default base of 10000 (Llama 3's is 500000)."""
    out = dict(config)
    if "dtype" in out and "torch_dtype" not in out:
        out["torch_dtype"] = out["dtype"]
    rope = out.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope and not isinstance(rope["rope_theta"], dict):
        out.setdefault("rope_theta", rope["rope_theta"])
        scaling = {k: v for k, v in rope.items() if k != "rope_theta"}
        if scaling.get("rope_type", "default") != "default":
            out.setdefault("rope_scaling", scaling)
    return out


def save_model(model: Any, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """``model.save_pretrained(path, **kwargs)``, then config.json given the keys transformers 4.45 reads
    (:func:`transformers4_config`)."""
    model.save_pretrained(path, **kwargs)
    config_path = Path(path) / "config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        fixed = transformers4_config(config)
        if fixed != config:
            config_path.write_text(json.dumps(fixed, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Tokenization shared by training and evaluation.


@dataclass(frozen=True)
class Encoded:
    """Token ids of ``prompt + sep + completion`` and how many of them belong to the prompt."""

    input_ids: list[int]
    n_prompt: int


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Token ids generation starts from: the prompt alone, special tokens as the tokenizer adds them."""
    return list(tokenizer(prompt)["input_ids"])


def encode_pair(
    tokenizer: Any, prompt: str, completion: str, *, sep: str = " ", add_eos: bool = False,
    max_length: int | None = None,
) -> Encoded:
    """Encode a (prompt, completion) pair so that loss can be taken on the completion only.

    The prompt's tokens are a prefix of the pair's tokens for BPE tokenizers that split before a
    space; where a tokenizer merges across the boundary, the mask covers the common prefix.
    ``add_eos`` appends the end-of-sequence token (training: teaches the model where to stop,
    which exact match on short answers needs).
    """
    prompt_ids = encode_prompt(tokenizer, prompt)
    ids = list(tokenizer(join_text(prompt, completion, sep))["input_ids"])
    eos = tokenizer.eos_token_id
    if ids and eos is not None and ids[-1] == eos and not add_eos:
        ids = ids[:-1]  # some tokenizers append eos themselves
    n = 0
    for a, b in zip(prompt_ids, ids, strict=False):
        if a != b:
            break
        n += 1
    if add_eos and eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
    if max_length is not None and len(ids) > max_length:
        ids = ids[:max_length]
        n = min(n, max_length - 1)
    return Encoded(ids, n)


def collate(
    encoded: Sequence[Encoded], pad_id: int, *, mask_prompt: bool = True, padding_side: str = "right"
) -> dict[str, torch.Tensor]:
    """Pad a batch: ``input_ids``/``attention_mask``/``labels`` of shape (B, T); labels are IGNORE
    on padding (and on the prompt when ``mask_prompt``)."""
    width = max(len(e.input_ids) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(encoded), width), dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE, dtype=torch.long)
    for i, e in enumerate(encoded):
        n = len(e.input_ids)
        start = width - n if padding_side == "left" else 0
        ids[i, start : start + n] = torch.tensor(e.input_ids)
        attn[i, start : start + n] = 1
        first = e.n_prompt if mask_prompt else 0
        labels[i, start + first : start + n] = torch.tensor(e.input_ids[first:])
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token NLL at every labelled position: ``(nll, mask)``, each (B, T-1), nll zero where masked.

    The one NLL of lume-ray: every loss, the target's training, the evaluation's per-row NLL and the
    membership attack build on it. ``logits`` (B, T, V) in any dtype (computed in fp32), ``labels`` (B, T)
    with :data:`IGNORE` where no loss is taken; token t is predicted from positions < t.
    """
    logits = logits[:, :-1].float()  # (B, T-1, V)
    labels = labels[:, 1:]  # (B, T-1)
    mask = labels != IGNORE
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), labels.clamp(min=0).reshape(-1), reduction="none"
    ).view(labels.shape)
    return nll * mask, mask


def sequence_nll(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence summed NLL and label-token counts, each (B,), of the unmasked label tokens.

    The building block of every loss and of the eval NLL: mean NLL = sum / count; the sequence
    log-likelihood log pi(y|x) = -sum.
    """
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
    nll, mask = token_nll(logits, batch["labels"])
    return nll.sum(-1), mask.sum(-1)


def stop_token_ids(model: Any, tokenizer: Any) -> int | list[int] | None:
    """The ids that end a generation: the model's generation config's, as ``generate()`` uses them when
    none are passed (the challenge's scorer passed none; Llama-3 or Qwen-2.5 instruct checkpoints list
    several), else the tokenizer's eos (a model built from a bare config has none of its own)."""
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    return eos if eos is not None else tokenizer.eos_token_id


# transformers 4's ``clean_up_tokenization``, which the challenge's scorer applied when decoding
# (``clean_up_tokenization_spaces=True``); transformers 5 skips it for BPE tokenizers, so it is applied here.
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
             (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def clean_up_spaces(text: str) -> str:
    for old, new in _CLEAN_UP:
        text = text.replace(old, new)
    return text


def decode_new_tokens(tokenizer: Any, new_ids: Any) -> list[str]:
    """Generated ids (B, T) -> texts as the challenge's scorer decoded them: special tokens skipped,
    tokenization spaces cleaned up."""
    texts = tokenizer.batch_decode(new_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return [clean_up_spaces(t) for t in texts]


@torch.no_grad()
def generate_greedy(
    model: Any, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int = 256, batch_size: int = 16,
) -> list[str]:
    """Greedy completions of ``prompts`` (in their order), batched with left padding and KV cache.

    Prompts are sorted by token length so a batch pads little; decoding is the new tokens only (see
    :func:`decode_new_tokens`), stopping at :func:`stop_token_ids`. Left padding with an attention mask and
    position ids derived from it gives the same greedy text as one prompt at a time (tests check this).
    """
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    pad = tokenizer.pad_token_id
    eos = stop_token_ids(model, tokenizer)
    device = next(model.parameters()).device
    out: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = collate([Encoded(encoded[i], len(encoded[i])) for i in idx], pad, padding_side="left")
        ids, attn = batch["input_ids"].to(device), batch["attention_mask"].to(device)
        gen = model.generate(
            input_ids=ids, attention_mask=attn, do_sample=False, max_new_tokens=max_new_tokens,
            pad_token_id=pad, eos_token_id=eos, use_cache=True,
        )
        for i, text in zip(idx, decode_new_tokens(tokenizer, gen[:, ids.shape[1] :]), strict=True):
            out[i] = text
    return out
