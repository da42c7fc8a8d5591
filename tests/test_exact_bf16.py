"""``lume-ray eval --exact`` in bfloat16 against the challenge's own procedure in transformers 4.45.2, item for item.

Two architectures (the embedded target's OLMo; a Llama with grouped-query attention and Llama 3's rotary base),
each memorized on a small synthetic LUME world and then partly unlearned (gradient ascent on the forget rows,
plain torch), are saved with :func:`lume_ray.model.save_model`. :func:`lume_ray.evaluate.scoring.score_model`
(``exact``, bfloat16: what ``lume-ray eval --exact --dtype bfloat16`` runs in each model actor) scores them here
(transformers 5); ``tests/tf4_scorer.py`` scores them in the transformers 4.45.2 environment that
``scripts/tf445.sh`` builds (``.cache/tf445``, or ``LUME_TF4_PYTHON``; see tests/test_compat.py). Every
generation, every MMLU answer and so every task number and the utility must be identical, and every loss equal to
float32 rounding (1e-6 relative). Without :func:`lume_ray.model.transformers4_arithmetic` the OLMo models fail here:
their losses were measured 0.3-0.4% off (and a few greedy tokens flip on larger worlds; see the README).

Without the 4.45 environment the test skips, except under CI (``CI`` set), where scripts/test.sh has built it
and a skip would hide a failure: there it fails.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import tf4_python

TF4_SCORER = Path(__file__).with_name("tf4_scorer.py")
MAX_NEW_TOKENS = 32  # the challenge's 256 changes no comparison here: the answers are short, babble repeats

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def reference_records(models: Sequence[Path], items: Sequence[dict[str, Any]], *, max_new_tokens: int,
                      dtype: str = "bfloat16", spec_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """model dir -> the 4.45.2 procedure's record per item (``tests/tf4_scorer.py``)."""
    spec = spec_dir / "tf4_spec.json"
    fields = ("key", "kind", "prompt", "completion")
    spec.write_text(json.dumps({"models": [str(m) for m in models], "dtype": dtype, "max_new_tokens": max_new_tokens,
                                "items": [{k: it[k] for k in fields} for it in items]}))
    proc = subprocess.run([str(tf4_python()), str(TF4_SCORER), str(spec)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["version"] == "4.45.2", out["version"]
    return {m: out[str(m)] for m in models}


def lume_records(model_dir: Path, items: Sequence[dict[str, Any]], *, max_new_tokens: int, dtype: str = "bfloat16",
                 exact: bool = True) -> list[dict[str, Any]]:
    """lume-ray's records of one saved model, as a model actor of ``lume-ray eval --exact`` makes them."""
    from lume_ray.evaluate.scoring import score_model
    from lume_ray.model import load_model

    model, tok = load_model(model_dir, dtype=dtype)
    return score_model(model, tok, items, max_new_tokens=max_new_tokens, batch_size=8, mia_k=0.2, exact=exact)


def compare(rows: Sequence[Any], items: Sequence[dict[str, Any]], ours: Sequence[dict[str, Any]],
            ref: Sequence[dict[str, Any]], answers: Sequence[int]) -> dict[str, Any]:
    """How lume-ray's records differ from the 4.45 procedure's: generations and MMLU answers that differ (of
    how many), the largest difference of a task number and of the utility, the largest relative loss difference."""
    from lume_ray.evaluate.protocol import score_row, task_scores

    meta = {f"{r.split}:{r.id}": r for r in rows}
    gen_keys, task_rows = [], {"ours": [], "ref": []}
    own_differ = 0  # against the text the tokenizer's own clean-up setting gives (see tests/tf4_scorer.py)
    n_next = next_differ = 0
    utility = {"ours": 0, "ref": 0}
    nll_rel = 0.0
    for it, a, b in zip(items, ours, ref, strict=True):
        assert a["key"] == b["key"] == it["key"]
        if it["kind"] in ("sc", "qa"):
            row = meta[it["key"]]
            if a["generation"] != b["generation"]:
                gen_keys.append(it["key"])
            own_differ += a["generation"] != b["generation_own"]
            for side, gen in (("ours", a["generation"]), ("ref", b["generation"])):
                task_rows[side].append({"split": row.split, "task": row.task, "kind": row.kind,
                                        "score": score_row(row.kind, row.output, gen)})
        if it["kind"] == "next":
            q = int(it["key"].split(":")[1])
            next_differ += int(a["pick"]) != b["pick"]
            utility["ours"] += int(a["pick"]) == answers[q]
            utility["ref"] += b["pick"] == answers[q]
            n_next += 1
        elif b["nll"] is not None:
            nll_rel = max(nll_rel, abs(a["nll"] - b["nll"]) / max(abs(b["nll"]), 1e-12))
    ts = {side: task_scores(task_rows[side]) for side in task_rows}
    task_diff = max((abs(ts["ours"][k] - ts["ref"][k]) for k in ts["ours"] if ts["ours"][k] is not None), default=0.0)
    return {"generations_differ": len(gen_keys), "generations": sum(it["kind"] in ("sc", "qa") for it in items),
            "differing_keys": gen_keys[:5], "generations_differ_own_clean_up": own_differ,
            "task_score_max_diff": task_diff, "mmlu_answers_differ": next_differ, "mmlu_questions": n_next,
            "utility_diff": abs(utility["ours"] - utility["ref"]) / max(n_next, 1), "nll_max_rel_diff": nll_rel}


# ---------------------------------------------------------------------------------------------
# The models: memorized, then partly unlearned, in plain torch.


def _llama(tok: Any) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, rope_theta=500000.0, tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))


def gradient_ascent(model: Any, tok: Any, rows: Sequence[Any], *, steps: int, lr: float) -> Any:
    """A partly unlearned copy of ``model``: ``steps`` AdamW steps raising the NLL of ``rows``' completions."""
    from lume_ray.model import collate, encode_pair, sequence_nll

    model = copy.deepcopy(model).train()
    torch.manual_seed(0)
    batch = collate([encode_pair(tok, r.input, r.output) for r in rows], tok.pad_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    for _ in range(steps):
        sums, counts = sequence_nll(model, batch)
        loss = -(sums.sum() / counts.sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def build_world(root: Path) -> dict[str, Any]:
    """A synthetic LUME world (20 rows, a 20-question utility set scored as MMLU), its items, and four saved
    models: {olmo, llama} x {memorized, unlearned}."""
    from lume_ray.config import EvalConfig
    from lume_ray.data import join_text, load_lume
    from lume_ray.evaluate.inputs import resolve_inputs
    from lume_ray.model import save_model, save_tokenizer
    from lume_ray.synth import write_dataset
    from lume_ray.target import PRESETS, tiny_olmo, train_tokenizer
    from lume_ray.target.memorize import memorize

    data_dir = write_dataset(root / "data", docs_per_task=2, seed=0)
    lume = load_lume(data_dir)
    pairs = [(r.input, r.output) for r in lume.rows]
    tok = train_tokenizer([join_text(p, c) for p, c in pairs], PRESETS["test"].vocab_size)
    models = {}
    for arch in ("olmo", "llama"):
        model = tiny_olmo(tok, PRESETS["test"], seed=0) if arch == "olmo" else _llama(tok)
        memorize(model, tok, pairs, PRESETS["test"], seed=0, progress=False)
        for state, m in (("memorized", model), ("unlearned", gradient_ascent(model, tok, lume.forget, steps=2,
                                                                                lr=3e-3))):
            d = root / f"{arch}-{state}"
            save_model(m, d)
            save_tokenizer(tok, d)
            models[(arch, state)] = d
    settings = EvalConfig(max_new_tokens=MAX_NEW_TOKENS, utility_style="open-instruct", mmlu_shots=2)
    inputs = resolve_inputs(lume, settings, None, None, None, tok)
    return {"rows": inputs.rows, "items": list(inputs.items), "models": models, "root": root,
            "answers": [c.answer for c in inputs.utility]}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, one_torch_thread: Any) -> dict[str, Any]:
    return build_world(tmp_path_factory.mktemp("exact_bf16"))


@pytest.fixture(scope="module")
def reference(world: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The 4.45.2 procedure's records of all four models (one interpreter start)."""
    return reference_records(list(world["models"].values()), world["items"], max_new_tokens=MAX_NEW_TOKENS,
                             spec_dir=world["root"])


@pytest.mark.slow
@pytest.mark.parametrize("state", ["memorized", "unlearned"])
@pytest.mark.parametrize("arch", ["olmo", "llama"])
def test_exact_bfloat16_is_the_challenges_procedure(arch: str, state: str, world: dict[str, Any],
                                                    reference: dict[str, list[dict[str, Any]]]) -> None:
    d = world["models"][(arch, state)]
    ours = lume_records(d, world["items"], max_new_tokens=MAX_NEW_TOKENS)
    diff = compare(world["rows"], world["items"], ours, reference[d], world["answers"])
    print(f"{arch} {state}: {json.dumps(diff)}", file=sys.stderr)
    assert diff["mmlu_questions"] > 0 and diff["generations"] > 0
    assert diff["generations_differ"] == 0, diff
    assert diff["mmlu_answers_differ"] == 0, diff
    assert diff["task_score_max_diff"] == 0.0 and diff["utility_diff"] == 0.0, diff
    assert diff["nll_max_rel_diff"] <= 1e-6, diff
    if state == "unlearned":  # the unlearning changed what the model says (else this checks one model twice)
        memorized = reference[world["models"][(arch, "memorized")]]
        assert sum(a["generation"] != b["generation"] for a, b in zip(reference[d], memorized, strict=True)
                   if a["generation"] is not None) > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_transformers4_arithmetic_rounds_olmos_rotary_only_in_low_precision(dtype: torch.dtype) -> None:
    """The hook is active inside the block (transformers 5's OLMo rounds differently in bfloat16), changes nothing
    in float32, and is gone after it."""
    from lume_ray.model import transformers4_arithmetic
    from lume_ray.target import PRESETS, tiny_olmo, train_tokenizer

    tok = train_tokenizer(["Mira Holt was a chemist who studied salt crystals in Oslo."] * 5, 300)
    model = tiny_olmo(tok, PRESETS["test"], seed=0).to(dtype).eval()
    ids = torch.arange(3, 43).unsqueeze(0) % len(tok)
    with torch.no_grad():
        before = model(ids).logits
        with transformers4_arithmetic(model):
            inside = model(ids).logits
        after = model(ids).logits
    assert torch.equal(before, after)
    assert torch.equal(before, inside) == (dtype == torch.float32)
