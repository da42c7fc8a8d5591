"""MMLU as the challenge ran it: open-instruct's ``eval/mmlu/run_eval.py`` on a tiny MMLU-format fixture.

Two subjects with dev and test splits, written in Hendrycks' csv layout (what open-instruct reads) and in
cais/mmlu's parquet layouts. Checked: both read to the same questions, the exact prompt text for k = 0, 1, 2,
examples dropped one at a time until the prompt fits (counted without special tokens), the answer tokens of
OLMo-, GPT-2- and Llama-style tokenizers, and the picked letters against a hand computation from a tiny
model's next-token logits, in process and through the runners.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from lume_ray.config import EvalConfig
from lume_ray.data import Choice, DataError, load_mmlu_dir
from lume_ray.evaluate.inputs import fit_mmlu_prompts, resolve_inputs
from lume_ray.evaluate.prompts import mmlu_example, mmlu_prompt, mmlu_subject

# subject -> split -> rows (question, A, B, C, D, answer letter), in file order. abstract_algebra's dev column A
# is all numbers, so pandas reads it as floats ("1" -> "1.0"), as open-instruct saw it.
MMLU: dict[str, dict[str, list[tuple[str, str, str, str, str, str]]]] = {
    "abstract_algebra": {
        "dev": [("Find the order of the group Z_4.", "0.50", "4", "2", "8", "B"),
                ("Is every cyclic group abelian?", "1", "No", "Only if finite", "Only if infinite", "A"),
                ("How many elements does S_3 have?", "2", "3", "6", "9", "C")],
        "test": [("What is the order of Z_6?", "2", "3", "6", "12", "C"),
                 ("Is Z_5 a field?", "Yes", "No", "Only mod 2", "Never", "A")],
    },
    "world_religions": {
        "dev": [("Where is the Kaaba?", "Mecca", "Rome", "Lhasa", "Varanasi", "A"),
                ("Which city is holy in Sikhism?", "Kyoto", "Amritsar", "Lourdes", "Assisi", "B")],
        "test": [("What is the holy book of Islam?", "Torah", "Vedas", "Quran", "Tripitaka", "C"),
                 ("Who founded Buddhism?", "Siddhartha Gautama", "Confucius", "Laozi", "Mahavira", "A"),
                 ("Which day is the Jewish Sabbath?", "Sunday", "Friday", "Monday", "Saturday", "D")],
    },
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _records(subject: str, split: str) -> list[dict[str, Any]]:
    return [{"question": q, "subject": subject, "choices": [a, b, c, d], "answer": "ABCD".index(ans)}
            for q, a, b, c, d, ans in MMLU[subject][split]]


@pytest.fixture(scope="module")
def mmlu_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fixture in three layouts: csv (dev/{s}_dev.csv, test/{s}_test.csv, under data/), cais/mmlu per-subject
    parquet ({s}/test-00000-of-00001.parquet), cais/mmlu's ``all`` folder."""
    import pandas as pd

    root = tmp_path_factory.mktemp("mmlu")
    out = {"csv": root / "csv", "subjects": root / "subjects", "all": root / "all_layout"}
    for subject, splits in MMLU.items():
        for split, rows in splits.items():
            d = out["csv"] / "data" / split
            d.mkdir(parents=True, exist_ok=True)
            with (d / f"{subject}_{split}.csv").open("w", newline="") as f:
                csv.writer(f).writerows(rows)
            d = out["subjects"] / subject
            d.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(_records(subject, split)).to_parquet(d / f"{split}-00000-of-00001.parquet")
    (out["all"] / "all").mkdir(parents=True)
    for split in ("dev", "test"):
        frame = pd.DataFrame([r for s in MMLU for r in _records(s, split)])
        frame.to_parquet(out["all"] / "all" / f"{split}-00000-of-00001.parquet")
    return out


def test_layouts_read_the_same(mmlu_dirs: dict[str, Path]) -> None:
    sets = {name: load_mmlu_dir(d) for name, d in mmlu_dirs.items()}
    for name, mc in sets.items():
        assert mc.mmlu and [c.subject for c in mc.questions] == ["abstract_algebra"] * 2 + ["world_religions"] * 3, name
        assert [c.question for c in mc.questions] == [r[0] for s in MMLU for r in MMLU[s]["test"]], name
        assert [c.answer for c in mc.questions] == [2, 0, 2, 0, 3], name
        assert {s: len(v) for s, v in mc.shots.items()} == {"abstract_algebra": 3, "world_religions": 2}, name
    assert sets["subjects"].questions == sets["all"].questions and sets["subjects"].shots == sets["all"].shots
    # the csv goes through pandas as open-instruct's does: an all-numeric column comes back as floats
    assert [s.choices[0] for s in sets["csv"].shots["abstract_algebra"]] == ["0.5", "1.0", "2.0"]
    assert [s.choices[0] for s in sets["subjects"].shots["abstract_algebra"]] == ["0.50", "1", "2"]
    assert sets["csv"].questions == sets["subjects"].questions  # the test columns are not all-numeric


def test_bad_mmlu_dirs(tmp_path: Path, mmlu_dirs: dict[str, Path]) -> None:
    with pytest.raises(DataError, match="no MMLU here"):
        load_mmlu_dir(tmp_path)
    broken = tmp_path / "broken"
    (broken / "dev").mkdir(parents=True)
    (broken / "test").mkdir()
    (broken / "test" / "x_test.csv").write_text((mmlu_dirs["csv"] / "data" / "test" / "world_religions_test.csv").read_text())
    with pytest.raises(DataError, match="x_dev.csv: file not found"):
        load_mmlu_dir(broken)
    (broken / "dev" / "x_dev.csv").write_text("q,a,b,c,d,E\n")
    with pytest.raises(DataError, match="field 'answer' must be 0..3 or a letter A..D, got 'E'"):
        load_mmlu_dir(broken)


def test_prompt_text_for_k_0_1_2(mmlu_dirs: dict[str, Path]) -> None:
    mc = load_mmlu_dir(mmlu_dirs["csv"])
    question, shots = mc.questions[0], mc.shots["abstract_algebra"]
    assert mmlu_subject("abstract_algebra") == " abstract algebra"  # open-instruct's format_subject
    head = "The following are multiple choice questions (with answers) about  abstract algebra.\n\n"
    end = "What is the order of Z_6?\nA. 2\nB. 3\nC. 6\nD. 12\nAnswer:"
    shot0 = "Find the order of the group Z_4.\nA. 0.5\nB. 4\nC. 2\nD. 8\nAnswer: B\n\n"
    shot1 = "Is every cyclic group abelian?\nA. 1.0\nB. No\nC. Only if finite\nD. Only if infinite\nAnswer: A\n\n"
    assert mmlu_prompt(question, shots, 0) == head + end
    assert mmlu_prompt(question, shots, 1) == head + shot0 + end
    assert mmlu_prompt(question, shots, 2) == head + shot0 + shot1 + end
    assert mmlu_example(shots[0], include_answer=True) == shot0
    religion = mc.questions[2]
    assert mmlu_prompt(religion, mc.shots["world_religions"], 1) == (
        "The following are multiple choice questions (with answers) about  world religions.\n\n"
        "Where is the Kaaba?\nA. Mecca\nB. Rome\nC. Lhasa\nD. Varanasi\nAnswer: A\n\n"
        "What is the holy book of Islam?\nA. Torah\nB. Vedas\nC. Quran\nD. Tripitaka\nAnswer:")


def _llama_tokenizer(texts: list[str]) -> Any:
    """A Metaspace BPE that prepends BOS (Llama's conventions)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    alphabet = sorted({c for t in texts for c in t.replace(" ", "▁")} | {"▁"})
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"],
                                                       initial_alphabet=alphabet, show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def _fixture_texts(mmlu_dirs: dict[str, Path]) -> list[str]:
    mc = load_mmlu_dir(mmlu_dirs["csv"])
    return [mmlu_prompt(q, mc.shots[q.subject], 3) for q in mc.questions] * 3


def test_examples_dropped_until_the_prompt_fits(mmlu_dirs: dict[str, Path]) -> None:
    """open-instruct: while the prompt tokenized with add_special_tokens=False is longer than the limit, one
    example fewer; the BOS a Llama tokenizer adds does not count."""
    mc = load_mmlu_dir(mmlu_dirs["csv"])
    tok = _llama_tokenizer(_fixture_texts(mmlu_dirs))
    q, shots = mc.questions[0], mc.shots["abstract_algebra"]
    length = [len(tok(mmlu_prompt(q, shots, k), add_special_tokens=False)["input_ids"]) for k in range(4)]
    assert length[0] < length[1] < length[2] < length[3]
    assert len(tok(mmlu_prompt(q, shots, 2))["input_ids"]) == length[2] + 1  # the BOS
    for limit, kept in ((10_000, 3), (length[3], 3), (length[3] - 1, 2), (length[2], 2), (length[1], 1),
                        (length[0], 0), (1, 0)):  # at 0 examples it stops, even when still too long
        prompts, ks = fit_mmlu_prompts(tok, [q], {q.subject: shots}, 5, limit)
        assert (prompts, ks) == ([mmlu_prompt(q, shots, kept)], [kept]), limit
    # the settings reach the items: k = 2 asked, a limit that only fits one example for the first question
    settings = EvalConfig(mmlu_shots=2, mmlu_max_tokens=length[1])
    prompts, ks = fit_mmlu_prompts(tok, mc.questions, mc.shots, settings.mmlu_shots, settings.mmlu_max_tokens)
    assert ks[0] == 1 and all(k <= 2 for k in ks)


def test_answer_tokens_of_each_tokenizer_kind(mmlu_dirs: dict[str, Path], tiny_model: Path) -> None:
    """The last token of tokenizer.encode(" A", add_special_tokens=False): whatever the tokenizer makes of the
    space, the last piece is the letter."""
    from transformers import AutoTokenizer

    from lume_ray.evaluate.scoring import answer_token_ids
    from lume_ray.target import train_tokenizer

    texts = _fixture_texts(mmlu_dirs)
    kinds = {"olmo (tiny target's)": AutoTokenizer.from_pretrained(tiny_model),
             "byte-level BPE trained on MMLU text": train_tokenizer(texts, 400),
             "llama (Metaspace, BOS)": _llama_tokenizer(texts)}
    for name, tok in kinds.items():
        ids = answer_token_ids(tok)
        assert ids == [tok.encode(" " + x, add_special_tokens=False)[-1] for x in "ABCD"], name
        assert [tok.decode([i]).strip() for i in ids] == list("ABCD"), name


def _by_hand(model_dir: Path, prompts: list[str]) -> list[int]:
    """open-instruct's get_next_word_predictions, batch size 1: tokenizer(prompt) with its special tokens,
    logits of the last position (float32, as 4.45 returns them), softmax over the vocabulary, the four answer
    tokens' probabilities, argmax."""
    import torch

    from lume_ray.model import load_model

    model, tok = load_model(model_dir)
    answer_ids = [tok.encode(" " + x, add_special_tokens=False)[-1] for x in "ABCD"]
    picks = []
    for p in prompts:
        ids = torch.tensor([tok(p)["input_ids"]])
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1].float()
        picks.append(int(torch.argmax(torch.softmax(logits, -1)[answer_ids])))
    return picks


@pytest.fixture(scope="module")
def varied_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny OLMo whose weight matrices are scaled up 10x, so that its next-token choice among the four
    letters depends on the prompt (at the usual init it picks the same letter everywhere, which would check
    nothing)."""
    import torch
    from transformers import AutoTokenizer

    from lume_ray.target import PRESETS, tiny_olmo

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = tiny_olmo(tok, PRESETS["test"], seed=3)
    with torch.no_grad():
        for w in model.parameters():
            if w.dim() > 1:
                w.mul_(10.0)
    out = tmp_path_factory.mktemp("varied")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_picks_equal_the_hand_computation(varied_model: Path, tiny_lume: Path, mmlu_dirs: dict[str, Path]) -> None:
    from lume_ray.evaluate.runner import evaluate_reference
    from lume_ray.evaluate.scoring import next_token_picks
    from lume_ray.model import load_model

    tiny_model = varied_model
    tok = load_model(tiny_model)[1]
    inputs = resolve_inputs(tiny_lume, EvalConfig(mmlu_shots=2), (), (), mmlu_dirs["csv"], tok)
    assert inputs.utility_style == "open-instruct"  # auto for MMLU
    next_items = {it["key"]: it["prompt"] for it in inputs.items if it["kind"] == "next"}
    assert len(next_items) == 5 and not any(it["kind"] == "mc" for it in inputs.items)
    mc = load_mmlu_dir(mmlu_dirs["csv"])
    prompts = [mmlu_prompt(q, mc.shots[q.subject], 2) for q in mc.questions]
    assert [next_items[f"mc:{q}"] for q in range(5)] == prompts

    hand = _by_hand(tiny_model, prompts)
    assert len(set(hand)) >= 3, hand  # the model's choice depends on the prompt
    model, tok = load_model(tiny_model)
    assert next_token_picks(model, tok, prompts, batch_size=1, exact=True) == hand
    assert next_token_picks(model, tok, prompts, batch_size=3, exact=False) == hand  # left padding, position ids
    answers = [q.answer for q in mc.questions]
    res = evaluate_reference(tiny_model, tiny_lume, EvalConfig(max_new_tokens=2, mmlu_shots=2, limit=2),
                             utility=mmlu_dirs["csv"])
    assert res["utility"] == pytest.approx(sum(h == a for h, a in zip(hand, answers, strict=True)) / 5)
    assert res["counts"]["utility_questions"] == 5 and res["settings"]["utility_style"] == "open-instruct"
    assert res["settings"]["utility"] == str(mmlu_dirs["csv"])


def test_styles_and_sources(tiny_model: Path, tiny_lume: Path, mmlu_dirs: dict[str, Path], tmp_path: Path) -> None:
    from lume_ray.model import load_tokenizer

    tok = load_tokenizer(str(tiny_model))

    def kinds(settings: EvalConfig, utility: Any) -> tuple[str, dict[str, int]]:
        inputs = resolve_inputs(tiny_lume, settings, (), (), utility, tok)
        counts: dict[str, int] = {}
        for it in inputs.items:
            counts[it["kind"]] = counts.get(it["kind"], 0) + 1
        return inputs.utility_style, {k: v for k, v in counts.items() if k in ("mc", "next")}

    # MMLU: open-instruct by default, lm-eval's zero-shot letters on request (4 options each)
    assert kinds(EvalConfig(), mmlu_dirs["subjects"]) == ("open-instruct", {"next": 5})
    assert kinds(EvalConfig(utility_style="letter"), mmlu_dirs["subjects"]) == ("letter", {"mc": 20})
    # a plain multiple-choice file: option likelihoods
    path = tmp_path / "u.jsonl"
    path.write_text(json.dumps({"question": "Sky?", "choices": ["red", "blue", "green", "gray"], "answer": 1}) + "\n")
    assert kinds(EvalConfig(), path) == ("option", {"mc": 4})
    assert kinds(EvalConfig(), [Choice("Sky?", ("red", "blue", "green", "gray"), 1)]) == ("option", {"mc": 4})
    # k = 0: zero-shot prompts in open-instruct's format
    inputs = resolve_inputs(tiny_lume, EvalConfig(mmlu_shots=0), (), (), mmlu_dirs["all"], tok)
    first = next(it for it in inputs.items if it["key"] == "mc:0")
    assert first["prompt"] == ("The following are multiple choice questions (with answers) about  abstract algebra."
                               "\n\nWhat is the order of Z_6?\nA. 2\nB. 3\nC. 6\nD. 12\nAnswer:")
