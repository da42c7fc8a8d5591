"""Beyond OLMo: the same code on other architectures and tokenizers, as users bring them.

- ``llama``: rotary positions, a SentencePiece-style (Metaspace) tokenizer that prepends a BOS token, no
  pad token;
- ``gpt2``: learned absolute positions (left padding must shift them), Conv1D layers stored (in, out),
  tied embeddings, a byte-level tokenizer whose only special token is ``<|endoftext|>``.

Checked on each: batched generation equals one prompt at a time, the prompt mask of a pair, every
registered algorithm's loss, the LoRA merge, the Ray Data evaluation of both models in one pipeline
against the reference loop, and a real Ray Train + DeepSpeed job whose evaluation points reload.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from lume_ray.algorithms import ALGORITHMS, validate_params
from lume_ray.data import join_text, load_lume
from lume_ray.model import collate, encode_pair, encode_prompt, generate_greedy, load_model

ARCHS = ("llama", "gpt2")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tokenizer(arch: str, texts: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if arch == "llama":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        specials = ["<unk>", "<s>", "</s>"]
        alphabet = sorted({c for t in texts for c in t.replace(" ", "▁")} | {"▁"})
        tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=specials,
                                                           initial_alphabet=alphabet, show_progress=False))
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")


def _model(arch: str, tok: Any) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, tie_word_embeddings=False))
    return GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=512,
                                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id))


@pytest.fixture(scope="module")
def arch_models(tiny_lume: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each architecture, randomly initialized with its own tokenizer trained on the rows, saved as an HF dir."""
    texts = [join_text(r.input, r.output) for r in load_lume(tiny_lume).rows]
    out = {}
    for arch in ARCHS:
        tok = _tokenizer(arch, texts)
        d = tmp_path_factory.mktemp(arch)
        _model(arch, tok).save_pretrained(d)
        tok.save_pretrained(d)
        out[arch] = d
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_tokenizer_conventions_hold(arch: str, arch_models: dict[str, Path]) -> None:
    model, tok = load_model(arch_models[arch])
    assert type(model).__name__ == {"llama": "LlamaForCausalLM", "gpt2": "GPT2LMHeadModel"}[arch]
    assert tok.pad_token_id == tok.eos_token_id  # no pad token shipped: eos pads
    prompt, completion = "Mira Holt was a chemist.", "She won the national prize in 1954."
    ids = encode_prompt(tok, prompt)
    assert (ids[0] == tok.bos_token_id) is (arch == "llama")  # llama's tokenizer prepends BOS, gpt2's does not
    pair = encode_pair(tok, prompt, completion, add_eos=True)
    assert pair.input_ids[: pair.n_prompt] == ids and pair.n_prompt == len(ids)  # the mask covers the prompt only
    # one BOS (llama: prepended; gpt2: bos == eos, the appended one) and the eos at the end
    assert pair.input_ids[-1] == tok.eos_token_id and pair.input_ids.count(tok.bos_token_id) == 1
    assert tok.decode(pair.input_ids[pair.n_prompt :], skip_special_tokens=True).strip() == completion


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_generation_equals_one_at_a_time(arch: str, arch_models: dict[str, Path], tiny_lume: Path) -> None:
    """Left padding must not move positions (gpt2's are learned, absolute) nor change a token."""
    model, tok = load_model(arch_models[arch])
    prompts = [r.input for r in load_lume(tiny_lume).rows]
    batched = generate_greedy(model, tok, prompts, max_new_tokens=16, batch_size=7)
    assert batched == generate_greedy(model, tok, prompts, max_new_tokens=16, batch_size=1)
    assert len({len(encode_prompt(tok, p)) for p in prompts}) > 3  # batches really were padded


@pytest.mark.parametrize("arch", ARCHS)
def test_losses_and_stops_follow_the_challenge_scorer(arch: str, arch_models: dict[str, Path], tiny_lume: Path,
                                                      tmp_path: Path) -> None:
    """Per-row NLL is taken on ``tokenizer(input + output)`` with the first ``len(tokenizer(input))`` tokens
    masked (a BOS counted), a document's on ``tokenizer(document)`` whole; and generation stops at every
    end id the model's generation config lists (Llama-3-instruct lists several), not only the tokenizer's."""
    from lume_ray.config import EvalConfig
    from lume_ray.evaluate.runner import evaluate_reference
    from lume_ray.evaluate.scoring import item_losses
    from lume_ray.model import decode_new_tokens

    model, tok = load_model(arch_models[arch])
    row = load_lume(tiny_lume).forget[0]

    def mean_nll(ids: list[int], masked: int) -> float:
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
        nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")
        return float(nll[masked - 1 :].mean()) if masked else float(nll.mean())

    with torch.no_grad():
        free = model.generate(input_ids=torch.tensor([encode_prompt(tok, row.input)]), do_sample=False,
                              max_new_tokens=8, eos_token_id=None, pad_token_id=tok.eos_token_id)
        expected_nll = mean_nll(tok(row.input + row.output)["input_ids"], len(tok(row.input)["input_ids"]))
        member = join_text(row.input, row.output)
        expected_doc = mean_nll(tok(member)["input_ids"], 0)
    new = free[0, len(encode_prompt(tok, row.input)) :].tolist()
    stop = next(t for i, t in enumerate(new) if i >= 2 and t not in new[:i] and t != tok.eos_token_id)
    model.generation_config.eos_token_id = [tok.eos_token_id, stop]
    stopped = new[: new.index(stop) + 1]
    expected_text = decode_new_tokens(tok, [stopped])[0]
    assert generate_greedy(model, tok, [row.input], max_new_tokens=8) == [expected_text]
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    settings = EvalConfig(max_new_tokens=8, limit=1)
    evaluate_reference(tmp_path / "m", tiny_lume, settings, nonmembers=False, utility=False, out_dir=tmp_path / "out")
    import pandas as pd

    rows = pd.read_parquet(tmp_path / "out" / "rows.parquet").set_index("id")
    assert rows.loc[row.id, "generation"] == expected_text and len(stopped) < len(new)
    assert rows.loc[row.id, "nll"] == pytest.approx(expected_nll, rel=1e-5)
    doc = {"key": "member:m", "kind": "doc", "prompt": "", "completion": member}
    assert item_losses(model, tok, [doc], batch_size=1, mia_k=0.2)[0]["nll"] == pytest.approx(expected_doc, rel=1e-5)


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
@pytest.mark.parametrize("arch", ARCHS)
def test_every_algorithm_trains_other_architectures(arch: str, name: str, arch_models: dict[str, Path],
                                                    tiny_lume: Path) -> None:
    base, tok = load_model(arch_models[arch])
    data = load_lume(tiny_lume)
    forget, retain = ([encode_pair(tok, r.input, r.output, add_eos=True) for r in data.split(s)][:4]
                      for s in ("forget", "retain"))
    model, ref = copy.deepcopy(base).train(), copy.deepcopy(base).eval().requires_grad_(False)
    loss, logs = ALGORITHMS[name].fn(model, collate(forget, tok.pad_token_id), collate(retain, tok.pad_token_id),
                                     ref, validate_params(name, {}))
    assert loss.dim() == 0 and torch.isfinite(loss) and all(isinstance(v, float) for v in logs.values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


def test_lora_merge_of_transposed_conv1d_equals_peft(arch_models: dict[str, Path]) -> None:
    """GPT-2 stores its linears as Conv1D (in, out): the merged delta must be transposed (square c_proj too), and
    its embeddings are tied. The job's merge (:func:`merged_state_dict`, PEFT on the meta device from the gathered
    state dict) equals PEFT's merge_and_unload of the live model."""
    from peft import get_peft_model

    from lume_ray.config import LoraConfig
    from lume_ray.train.lora import merged_state_dict, peft_config

    model, _ = load_model(arch_models["gpt2"])
    lora = LoraConfig(r=4, alpha=8)
    peft_model = get_peft_model(model, peft_config(lora))
    torch.manual_seed(0)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    state = {k: v.clone() for k, v in peft_model.state_dict().items()}
    assert any(".attn.c_proj.lora_A" in k for k in state)  # (64, 64): a shape check could not tell it is transposed
    assert not any("lm_head" in k for k in state if "lora" in k)
    merged = merged_state_dict(peft_model.base_model.model.config, lora, state)
    reference = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    assert set(merged) == set(reference)
    for key, value in reference.items():
        torch.testing.assert_close(merged[key], value)
    torch.testing.assert_close(merged["lm_head.weight"], merged["transformer.wte.weight"])  # still tied


@pytest.mark.ray
def test_ray_evaluation_of_both_architectures_in_one_pipeline_equals_reference(
    arch_models: dict[str, Path], tiny_lume: Path, ray_local: Any, tmp_path: Path,
) -> None:
    """Two models with different tokenizers share one actor pool; each matches its one-at-a-time loop."""
    from lume_ray.config import EvalConfig
    from lume_ray.evaluate.inputs import EvalError
    from lume_ray.evaluate.runner import evaluate_many, evaluate_reference

    settings = EvalConfig(max_new_tokens=16, batch_size=8, workers=2)
    models = [arch_models[a] for a in ARCHS]
    got = evaluate_many(models, tiny_lume, settings, out_dirs=[tmp_path / a for a in ARCHS], progress=False)
    for res, model in zip(got, models, strict=True):
        ref = evaluate_reference(model, tiny_lume, settings)
        for key, value in ref.items():
            if key in ("settings", "seconds"):
                continue
            assert res[key] == (pytest.approx(value, rel=1e-4, abs=1e-5) if isinstance(value, float) else value), key
        assert res["settings"]["model"] == str(model) and res["counts"]["rows"] == ref["counts"]["rows"]
        assert json.loads((tmp_path / ARCHS[models.index(model)] / "metrics.json").read_text()) == res
    with pytest.raises(EvalError, match="2 models but 1 out_dirs"):
        evaluate_many(models, tiny_lume, settings, out_dirs=[tmp_path], progress=False)


@pytest.mark.ray
def test_unlearning_job_on_gpt2_saves_reloadable_points(
    arch_models: dict[str, Path], tiny_lume: Path, ray_local: Any, tmp_path: Path,
) -> None:
    """Ray Train + DeepSpeed on a tied-embedding, Conv1D model; the points reload as the same architecture."""
    from lume_ray.algorithms import mean_nll
    from lume_ray.config import TrainConfig, UnlearnJob
    from lume_ray.train import run_unlearning

    cfg = UnlearnJob(model=str(arch_models["gpt2"]), data=str(tiny_lume), algorithm="gd", lr=1e-3, steps=2,
                     eval_steps=(1,), train=TrainConfig(batch_size=4, workers=1, zero=0), seed=0,
                     out=str(tmp_path / "job"))
    res = run_unlearning(cfg)
    assert (res.status, [p.step for p in res.points]) == ("completed", [1, 2])
    forget = load_lume(tiny_lume).forget
    for point in res.points:
        model, tok = load_model(point.model_dir)
        assert type(model).__name__ == "GPT2LMHeadModel"
        assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()  # still tied
        batch = collate([encode_pair(tok, r.input, r.output, add_eos=True) for r in forget], tok.pad_token_id)
        with torch.no_grad():
            assert mean_nll(model, batch).mean().item() == pytest.approx(point.forget_loss, rel=1e-5)
