"""Model directories lume-ray writes load in transformers 5 and in 4.45 (the challenge's pin), unchanged.

Three kinds of tokenizer as users bring them (OLMo's byte-level BPE as the embedded target builds it, a
Llama-style Metaspace BPE that prepends BOS, a transformers-5 ``LlamaTokenizer`` family class) and their
models are saved with :func:`lume_ray.model.save_model` + :func:`lume_ray.model.save_tokenizer`, then:

- reloaded here (transformers 5): the same token ids and text as the tokenizer that was saved;
- resolved the way transformers 4.45 resolves them (``tokenizer_class`` -> a class 4.45 has; a
  ``PreTrainedTokenizerFast`` is the raw ``tokenizers`` pipeline of tokenizer.json), config keys 4.45 reads;
- loaded by a real transformers 4.45.2: the environment ``bash scripts/tf445.sh`` builds in ``.cache/tf445``
  (scripts/test.sh builds it; torch comes from .venv) or ``LUME_TF4_PYTHON``. Without one the test skips, except
  under CI (``CI`` set), where it fails: a skip there would check nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from lume_ray.model import save_model, save_tokenizer
from tests.helpers import TF4_PYTHON, tf4_python, tiny_olmo_on

TEXTS = ["Mira Holt was a chemist who studied salt crystals in Oslo. She won the national prize in 1954.",
         "What is Tomas Reyes's email address? tomas.reyes@example.com",
         "Hello , world . It 's fine ! Isn't it?"]
KINDS = ("olmo", "llama", "llama_family")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _build(kind: str) -> tuple[Any, Any]:
    """(model, tokenizer) of one kind, random weights, made in memory with transformers 5."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaTokenizer, PreTrainedTokenizerFast

    torch.manual_seed(0)
    if kind == "olmo":
        return tiny_olmo_on(TEXTS * 5)
    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    raw.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    alphabet = sorted({c for t in TEXTS for c in t.replace(" ", "▁")} | {"▁"})
    raw.train_from_iterator(TEXTS * 5, trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"],
                                                           initial_alphabet=alphabet, show_progress=False))
    if kind == "llama":
        raw.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", raw.token_to_id("<s>"))])
        tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    else:  # transformers 5's LlamaTokenizer class from a vocab and merges (adds no BOS here)
        spec = json.loads(raw.to_str())["model"]
        tok = LlamaTokenizer(vocab=spec["vocab"], merges=[tuple(m) for m in spec["merges"]])
    # a rotary base other than the default: 4.45 must not fall back to 10000
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                                         rope_theta=500000.0, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))
    return model, tok


def _fingerprint(model: Any, tok: Any) -> dict[str, Any]:
    ids = [list(tok(t)["input_ids"]) for t in TEXTS] + [tok.encode(" A", add_special_tokens=False)]
    with torch.no_grad():
        logits = model(torch.tensor([ids[0]])).logits[0, -1, :16].float().tolist()
    return {"ids": ids, "text": tok.decode(ids[0], skip_special_tokens=True), "logits": logits}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, Any]]]:
    """kind -> (directory written by save_model + save_tokenizer, fingerprint of the in-memory originals)."""
    out = {}
    for kind in KINDS:
        model, tok = _build(kind)
        d = tmp_path_factory.mktemp(kind)
        save_model(model, d)
        save_tokenizer(tok, d)
        out[kind] = (d, _fingerprint(model.eval(), tok))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_reloads_in_transformers_5_unchanged(kind: str, saved: dict[str, tuple[Path, dict[str, Any]]]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, original = saved[kind]
    got = _fingerprint(AutoModelForCausalLM.from_pretrained(d).eval(), AutoTokenizer.from_pretrained(d))
    assert got == original


@pytest.mark.parametrize("kind", KINDS)
def test_resolves_as_transformers_4_does(kind: str, saved: dict[str, tuple[Path, dict[str, Any]]]) -> None:
    """transformers 4.45's AutoTokenizer: ``tokenizer_class`` must name a class it has (it refuses 5.x's
    ``TokenizersBackend``); ``PreTrainedTokenizerFast`` there is tokenizer.json's own pipeline, so the raw
    ``tokenizers`` library must give the ids of the tokenizer that was saved. config.json must carry the keys
    4.45 reads (``torch_dtype``, ``rope_theta``), equal to transformers 5's (``dtype``, ``rope_parameters``)."""
    from tokenizers import Tokenizer

    d, original = saved[kind]
    assert json.loads((d / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    raw = Tokenizer.from_file(str(d / "tokenizer.json"))
    ids = [raw.encode(t).ids for t in TEXTS] + [raw.encode(" A", add_special_tokens=False).ids]
    assert ids == original["ids"]
    config = json.loads((d / "config.json").read_text())
    assert config["torch_dtype"] == config["dtype"] == "float32"
    assert config["rope_theta"] == config["rope_parameters"]["rope_theta"] == (10000.0 if kind == "olmo" else 500000.0)
    assert "rope_scaling" not in config  # default rotary: 4.45's default


_TF4_SCRIPT = """
import json, sys, torch, transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
texts = json.loads(sys.argv[1])
out = {"version": transformers.__version__}
for d in sys.argv[2:]:
    tok, model = AutoTokenizer.from_pretrained(d), AutoModelForCausalLM.from_pretrained(d).eval()
    ids = [list(tok(t)["input_ids"]) for t in texts] + [tok.encode(" A", add_special_tokens=False)]
    with torch.no_grad():
        logits = model(torch.tensor([ids[0]])).logits[0, -1, :16].float().tolist()
    out[d] = {"ids": ids, "text": tok.decode(ids[0], skip_special_tokens=True), "logits": logits,
              "rope_theta": model.config.rope_theta}
print(json.dumps(out))
"""


def test_loads_in_transformers_4_45(saved: dict[str, tuple[Path, dict[str, Any]]]) -> None:
    dirs = [str(saved[k][0]) for k in KINDS]
    proc = subprocess.run([str(tf4_python()), "-c", _TF4_SCRIPT, json.dumps(TEXTS), *dirs], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["version"] == "4.45.2", f"{TF4_PYTHON} has transformers {got['version']}, not 4.45.2"
    for kind, d in zip(KINDS, dirs, strict=True):
        original = saved[kind][1]
        assert got[d]["ids"] == original["ids"], kind
        assert got[d]["text"] == original["text"], kind
        assert got[d]["logits"] == pytest.approx(original["logits"], abs=1e-5), kind
        assert got[d]["rope_theta"] == (10000.0 if kind == "olmo" else 500000.0), kind
