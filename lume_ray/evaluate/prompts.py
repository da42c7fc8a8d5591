"""[3 evaluate] Utility prompts: a four-way question -> the prompt(s) a model answers it from (docs/protocol.md section 2, step 7).

Input:  a :class:`lume_ray.data.Choice` (question, four options, answer) and, for MMLU, its subject's dev examples.
Output: the prompt text(s) and the continuations to compare; :func:`pick_option` picks the answer from their
        log-likelihoods. Three ways to score a question (``EvalConfig.utility_style``):

    open-instruct  the challenge's MMLU: k-shot prompt, the most likely next token among " A".." D"
    letter         lm-evaluation-harness' zero-shot mmlu: summed log-likelihood of " A".." D" after the prompt
    option         the question alone continued by each option's text (the embedded target's utility set)
"""

from __future__ import annotations

from collections.abc import Sequence

from lume_ray.data import Choice

OPTION_LETTERS = ("A", "B", "C", "D")
UTILITY_STYLES = ("open-instruct", "letter", "option")


def mmlu_subject(subject: str) -> str:
    """open-instruct's ``format_subject`` (Hendrycks' original code): each word of the underscore-separated name
    preceded by a space, so "abstract_algebra" -> " abstract algebra" and the header reads "about  abstract
    algebra." with two spaces."""
    return "".join(" " + word for word in subject.split("_"))


def mmlu_example(choice: Choice, include_answer: bool) -> str:
    """open-instruct's ``format_example``: the question as is, "\nA. ..".."\nD. ..", "\nAnswer:", and for a
    few-shot example " {letter}\n\n"."""
    text = choice.question + "".join(f"\n{letter}. {c}" for letter, c in zip(OPTION_LETTERS, choice.choices, strict=True))
    text += "\nAnswer:"
    return text + f" {OPTION_LETTERS[choice.answer]}\n\n" if include_answer else text


def mmlu_prompt(question: Choice, shots: Sequence[Choice], k: int) -> str:
    """open-instruct's ``gen_prompt(dev_df, subject, k) + format_example(test_df, i, include_answer=False)``: the
    header, the first ``k`` dev examples of the question's subject with their answers, then the question."""
    head = f"The following are multiple choice questions (with answers) about {mmlu_subject(question.subject)}.\n\n"
    return head + "".join(mmlu_example(s, True) for s in shots[:k]) + mmlu_example(question, False)


def option_prompt(question: str, choices: Sequence[str], subject: str = "", style: str = "letter") -> tuple[str, list[str]]:
    """The context and the four continuations whose log-likelihoods are compared (``letter`` and ``option``).

    ``letter``: lm-evaluation-harness' zero-shot ``mmlu`` task (the prompt lists the options, the
    continuations are " A".." D"). ``option``: the question alone, continued by " " + each option's text, i.e.
    ``join_text(question, choice)``: the text the embedded target memorizes its utility questions as
    (:func:`lume_ray.target.training_texts`). ``open-instruct`` is not a log-likelihood comparison: see
    :func:`mmlu_prompt`.
    """
    if style == "letter":
        about = f" about {subject.replace('_', ' ')}" if subject else ""
        head = f"The following are multiple choice questions (with answers){about}.\n\n"
        listed = "".join(f"\n{letter}. {c}" for letter, c in zip(OPTION_LETTERS, choices, strict=True))
        return f"{head}{question.strip()}{listed}\nAnswer:", [f" {letter}" for letter in OPTION_LETTERS]
    if style == "option":
        return question, [f" {c}" for c in choices]
    raise ValueError(f"unknown utility style {style!r} for option_prompt (valid: letter, option)")


def pick_option(loglikelihoods: Sequence[float]) -> int:
    """Index of the most likely option (the first one on ties, as numpy.argmax in lm-eval)."""
    if not loglikelihoods:
        raise ValueError("pick_option needs at least one option")
    return max(range(len(loglikelihoods)), key=lambda i: (loglikelihoods[i], -i))
