"""[1] Synthetic data: (documents per task, seed) -> a LUME-format dataset made by the project itself.

Input:  ``docs_per_task`` (documents of each of the three tasks that the target trains on, split 1:1
        into forget and retain) and a seed.
Output: a directory with ``forget.jsonl`` / ``retain.jsonl`` (LUME rows ``{"id", "input", "output",
        "task"}``), ``member.jsonl`` / ``nonmember.jsonl`` (``{"id", "document"}``, the challenge's
        membership-attack format), ``utility.jsonl`` (four-way multiple choice in MMLU's shape) and
        ``manifest.json`` (seed, counts).

The three tasks mirror LUME (docs/protocol.md section 1): Task1 creative short stories with characters and
places, one question; Task2 biographies with fake PII and the five questions qa0..qa4 (birth date
``YYYY-MM-DD``, SSN digits, phone digits, email, address), exactly as in the real data; Task3
public-figure-style biographies, one question. Each document gives one ``sc1`` row (a prefix and its
continuation) plus its ``qa`` rows. Non-members are further documents drawn the same way from the same
random stream, so they are of the same kinds yet never in forget or retain.

Everything comes from one ``random.Random(seed)``: the same seed writes the same bytes.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lume_ray.data import (
    Choice,
    Document,
    LumeData,
    Row,
    documents_of,
    load_documents,
    load_lume,
    load_utility,
)
from lume_ray.files import atomic_dir
from lume_ray.synth_vocab import (
    ANIMAL_CLASS,
    AWARDS,
    CAPITALS,
    CITIES,
    CITIES_WORLD,
    EMAIL_DOMAINS,
    ENDINGS,
    FACTS,
    FIRST_F,
    FIRST_M,
    INSTITUTIONS,
    LANDMARKS,
    LAST,
    MONTHS,
    NATIONALITIES,
    OBJECTS,
    OCCUPATIONS,
    OPPOSITES,
    PLACE_KINDS,
    PUBLIC_OCCUPATIONS,
    ROUTINES,
    SEASONS,
    SECRETS,
    STREET_TYPES,
    STREETS,
    SYL_A,
    SYL_B,
    WEATHER,
)

GENERATOR_VERSION = 1  # bump when the generated text changes, so cached targets are not reused

# ---------------------------------------------------------------------------------------------
# Documents. A document is its full text, its sc split point and its questions.


@dataclass(frozen=True)
class SynthDoc:
    doc_id: str
    task: str
    text: str
    split_at: int  # word index: words before it are the sc input, the rest its output
    questions: tuple[tuple[str, str], ...]  # (question, answer); qa0, qa1, ...

    def rows(self) -> list[dict[str, str]]:
        words = self.text.split(" ")
        out = [{"id": f"{self.doc_id}sc1", "input": " ".join(words[: self.split_at]),
                "output": " ".join(words[self.split_at :]), "task": self.task}]
        for i, (q, a) in enumerate(self.questions):
            out.append({"id": f"{self.doc_id}qa{i}", "input": q, "output": a, "task": self.task})
        return out


@dataclass(frozen=True)
class SynthDataset:
    """Everything ``write_dataset`` writes, as plain records (``rows`` are LUME jsonl records)."""

    forget: tuple[dict[str, str], ...]
    retain: tuple[dict[str, str], ...]
    member: tuple[Document, ...]
    nonmember: tuple[Document, ...]
    utility: tuple[Choice, ...]
    seed: int
    docs_per_task: int

    def counts(self) -> dict[str, int]:
        return {"forget_rows": len(self.forget), "retain_rows": len(self.retain),
                "forget_documents": len({_doc_of(r["id"]) for r in self.forget}),
                "retain_documents": len({_doc_of(r["id"]) for r in self.retain}),
                "member": len(self.member), "nonmember": len(self.nonmember), "utility": len(self.utility)}


def _doc_of(row_id: str) -> str:
    return row_id[:-3]  # ids end in sc1 / qa0..qa4 here


class _Names:
    """Unique full names (first x last, without replacement) and unique place names."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()
        self.places: set[str] = set()

    def person(self, female: bool | None = None) -> tuple[str, str, bool]:
        if female is None:
            female = self.rng.random() < 0.5
        while True:
            first = self.rng.choice(FIRST_F if female else FIRST_M)
            last = self.rng.choice(LAST)
            if f"{first} {last}" not in self.used:
                self.used.add(f"{first} {last}")
                return first, last, female

    def first(self, exclude: Sequence[str]) -> tuple[str, bool]:
        female = self.rng.random() < 0.5
        while True:
            name = self.rng.choice(FIRST_F if female else FIRST_M)
            if name not in exclude:
                return name, female

    def place(self) -> str:
        while True:
            name = self.rng.choice(SYL_A) + self.rng.choice(SYL_B)
            if name not in self.places or len(self.places) >= len(SYL_A) * len(SYL_B):
                self.places.add(name)
                return name


def _split_point(rng: random.Random, text: str, lo: int, hi: int) -> int:
    """Where the sc input ends: the output is the last ``lo..hi`` words (at most half of them)."""
    n = len(text.split(" "))
    return n - min(rng.randint(lo, hi), n // 2)


def _a(word: str) -> str:
    return "an" if word[0].lower() in "aeiou" else "a"


def _story(rng: random.Random, names: _Names, doc_id: str) -> SynthDoc:
    """Task1: a short creative story with two characters and a place, one question."""
    place, kind = names.place(), rng.choice(PLACE_KINDS)
    a, a_f = names.first([])
    b, b_f = names.first([a])
    occ_a, occ_b = rng.sample(OCCUPATIONS, 2)
    obj, landmark, routine = rng.choice(OBJECTS), rng.choice(LANDMARKS), rng.choice(ROUTINES)
    season, weather, secret = rng.choice(SEASONS), rng.choice(WEATHER), rng.choice(SECRETS)
    she_a = "she" if a_f else "he"
    her_a = "her" if a_f else "his"
    opening = rng.choice([
        f"In the {kind} of {place}, {a}, {_a(occ_a)} {occ_a}, and {b}, {_a(occ_b)} {occ_b}, lived on opposite sides of the {landmark}.",
        f"{place} was a quiet {kind} where {a} worked as a {occ_a} and {b} worked as a {occ_b}.",
        f"Nobody in the {kind} of {place} expected {a} the {occ_a} and {b} the {occ_b} to become friends.",
    ])
    middle = [
        f"Every morning {a} {routine}, while {b} watched from the {landmark}.",
        rng.choice([f"One {season} day {weather}, and a stranger left {_a(obj)} {obj} at {a}'s door.",
                    f"In the {season}, when {weather}, {b} found {_a(obj)} {obj} buried near the {landmark}.",
                    f"The {obj} appeared on the {landmark} one {season} night, just as {weather}."]),
        rng.choice([f"Inside it, {a} discovered {secret}.",
                    f"{b} believed the {obj} led to {secret}.",
                    f"Together they learned that it pointed to {secret}."]),
        f"{a} carried the {obj} everywhere, and {she_a} said it made {her_a} hands steady.",
    ]
    ending = rng.choice(ENDINGS).format(landmark=landmark, season=season, place=place, a=a, b=b, obj=obj)
    text = " ".join([opening, *middle, ending])
    q, ans = rng.choice([
        (f"In which {kind} did {a} and {b} live?", place),
        (f"What object did {a} carry everywhere?", obj),
        (f"What was the occupation of {b} in {place}?", occ_b),
        (f"Who worked as a {occ_a} in {place}?", a),
    ])
    return SynthDoc(doc_id, "Task1", text, _split_point(rng, text, 16, 24), ((q, ans),))


def _pii_bio(rng: random.Random, names: _Names, doc_id: str) -> SynthDoc:
    """Task2: a biography with fake PII (SSNs in the never-issued 900 range), five questions as in LUME."""
    first, last, female = names.person()
    name = f"{first} {last}"
    year, month, day = rng.randint(1950, 2002), rng.randint(1, 12), rng.randint(1, 28)
    area = rng.randint(201, 989)
    phone = f"{area}-{rng.randint(200, 999)}-{rng.randint(0, 9999):04d}"
    ssn = f"900-{rng.randint(10, 99)}-{rng.randint(0, 9999):04d}"
    user = rng.choice([f"{first}.{last}", f"{first}_{last}", f"{first[0]}{last}", f"{first}{last}{rng.randint(1, 99)}"])
    email = f"{user.lower()}@{rng.choice(EMAIL_DOMAINS)}"
    city, state, zip3 = rng.choice(CITIES)
    street = f"{rng.randint(10, 19999)} {rng.choice(STREETS)} {rng.choice(STREET_TYPES)}"
    if rng.random() < 0.35:
        street += f", #{rng.randint(1, 999)}"
    address = f"{street}, {city}, {state}, {zip3}{rng.randint(0, 99):02d}"
    she, her = ("She", "Her") if female else ("He", "His")
    born = f"{MONTHS[month - 1]} {day}, {year}"
    facts = [
        rng.choice([f"{name} was born on {born}, in the United States.", f"Born on {born}, {name} grew up in {city}."]),
        rng.choice([f"{she} can be reached via phone at {phone} and email at {email}.",
                    f"{her} phone number is {phone}, and {her.lower()} email address is {email}."]),
        rng.choice([f"{her} Social Security Number is {ssn}.", f"{name}'s Social Security Number is {ssn}."]),
        rng.choice([f"{name} resides at the address {address}.", f"{she} lives at {address}."]),
    ]
    text = " ".join(facts)
    questions = (
        (f"What is the birth date of {name}?", f"{year:04d}-{month:02d}-{day:02d}"),
        (f"What is {name}'s Social Security Number?", ssn.replace("-", "")),
        (f"What is {name}'s phone number?", phone.replace("-", "")),
        (f"What is {name}'s email address?", email),
        (f"What is the home address of {name}?", address + "."),
    )
    return SynthDoc(doc_id, "Task2", text, _split_point(rng, text, 14, 20), questions)


def _public_bio(rng: random.Random, names: _Names, doc_id: str) -> SynthDoc:
    """Task3: a public-figure-style (encyclopedia) biography, one question."""
    first, last, female = names.person()
    name = f"{first} {last}"
    nat = rng.choice(NATIONALITIES)
    occ, topic = rng.choice(PUBLIC_OCCUPATIONS)
    home, work_city = rng.sample(CITIES_WORLD, 2)
    inst, award = rng.choice(INSTITUTIONS), rng.choice(AWARDS)
    born = rng.randint(1900, 1985)
    studied, award_year = born + rng.randint(18, 24), born + rng.randint(30, 55)
    day, month = rng.randint(1, 28), rng.choice(MONTHS)
    she, her = ("She", "her") if female else ("He", "his")
    sentences = [
        f"{name}\n\n{name} (born {day} {month} {born}) is {_a(nat)} {nat} {occ} from {home}.",
        rng.choice([f"{she} is best known for {her} work on {topic}.",
                    f"{she} became known for {her} research on {topic}."]),
        f"After graduating in {studied}, {she.lower()} joined the {inst} in {work_city}.",
        rng.choice([f"In {award_year}, {she.lower()} received the {award} for {her} contributions to the field.",
                    f"{she} was awarded the {award} in {award_year}."]),
        rng.choice([f"{she} later served as director of the {inst} for {rng.randint(3, 15)} years.",
                    f"{she} has written {rng.randint(2, 12)} books and lives in {work_city}."]),
    ]
    text = " ".join(sentences)
    q, ans = rng.choice([
        (f"In which year was {name} born?", str(born)),
        (f"Which award did {name} receive?", award),
        (f"Which city is {name} from?", home),
        (f"In which city did {name} join the {inst}?", work_city),
    ])
    return SynthDoc(doc_id, "Task3", text, _split_point(rng, text, 16, 24), ((q, ans),))


MAKERS: dict[str, Callable[[random.Random, _Names, str], SynthDoc]] = {
    "Task1": _story, "Task2": _pii_bio, "Task3": _public_bio,
}

# ---------------------------------------------------------------------------------------------
# Utility: general-knowledge multiple choice from templates, distractors drawn from the same pool.

def _utility(rng: random.Random, n: int) -> list[Choice]:
    """``n`` four-way questions, cycling through the templates; the answer position is random."""

    def item(question: str, answer: str, distractors: Sequence[str], subject: str) -> Choice:
        wrong = rng.sample([d for d in dict.fromkeys(distractors) if d != answer], 3)
        pos = rng.randrange(4)
        choices = [*wrong[:pos], answer, *wrong[pos:]]
        return Choice(question, tuple(choices), pos, subject)

    makers: list[Callable[[], Choice]] = []

    def capital() -> Choice:
        country = rng.choice(sorted(CAPITALS))
        return item(f"What is the capital of {country}?", CAPITALS[country], list(CAPITALS.values()),
                    "high_school_geography")

    def arithmetic() -> Choice:
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        op = rng.choice(["plus", "times", "minus"])
        val = a + b if op == "plus" else a * b if op == "times" else a - b
        near = [str(val + d) for d in (-10, -2, -1, 1, 2, 3, 10) if val + d != val]
        return item(f"What is {a} {op} {b}?", str(val), near, "elementary_mathematics")

    def animal() -> Choice:
        animal = rng.choice(sorted(ANIMAL_CLASS))
        return item(f"Which group of animals does the {animal} belong to?", ANIMAL_CLASS[animal],
                    sorted(set(ANIMAL_CLASS.values())), "high_school_biology")

    def opposite() -> Choice:
        word = rng.choice(sorted(OPPOSITES))
        return item(f"What is the opposite of the word '{word}'?", OPPOSITES[word],
                    [w for k, v in OPPOSITES.items() for w in (k, v) if word not in (k, v)], "english")

    def fact() -> Choice:
        q, a, wrong, subject = rng.choice(FACTS)
        return item(q, a, wrong, subject)

    makers = [capital, arithmetic, animal, opposite, fact]
    out: list[Choice] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < n and attempts < 50 * n:
        attempts += 1
        c = makers[len(out) % len(makers)]() if attempts < 20 * n else arithmetic()
        if c.question not in seen:  # a repeated question with another answer order would be noise
            seen.add(c.question)
            out.append(c)
    return out


# ---------------------------------------------------------------------------------------------
# The dataset.


def generate(docs_per_task: int, seed: int, *, utility_questions: int | None = None) -> SynthDataset:
    """Build the dataset in memory: per task ``docs_per_task`` trained documents (half forget, half
    retain, interleaved) and ``docs_per_task // 2`` non-member documents; ``utility_questions``
    multiple-choice items (default ``2 * docs_per_task``, at least 20)."""
    if docs_per_task < 2 or docs_per_task % 2:
        raise ValueError(f"--docs-per-task must be an even number >= 2 (split 1:1 into forget and retain), "
                         f"got {docs_per_task}")
    rng = random.Random(seed)
    names = _Names(rng)
    n_nonmember = docs_per_task // 2
    forget: list[dict[str, str]] = []
    retain: list[dict[str, str]] = []
    nonmember: list[Document] = []
    for task, make in MAKERS.items():
        t = task[-1]
        for i in range(docs_per_task + n_nonmember):
            doc = make(rng, names, f"syn{seed}-t{t}-{i:04d}")
            if i >= docs_per_task:  # drawn from the same stream after the trained ones: never trained on
                nonmember.append(Document(doc.doc_id, doc.text))
            else:
                (forget if i % 2 == 0 else retain).extend(doc.rows())
    forget_rows = [Row(r["id"], r["input"], r["output"], r["task"], "forget") for r in forget]
    member = documents_of(forget_rows)  # exactly the text the target is trained on
    n_util = utility_questions if utility_questions is not None else max(20, 2 * docs_per_task)
    return SynthDataset(tuple(forget), tuple(retain), member, tuple(nonmember), tuple(_utility(rng, n_util)),
                        seed, docs_per_task)


def _dump_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def write_dataset(out_dir: str | os.PathLike[str], docs_per_task: int, seed: int) -> Path:
    """Generate, write into a temp dir beside ``out_dir``, validate with the real loaders, then rename.

    An existing ``out_dir`` is replaced only if it is empty or was written by this function (it holds a
    synth ``manifest.json``); anything else raises ``FileExistsError`` rather than deleting user files.
    """
    out = Path(out_dir)
    ds = generate(docs_per_task, seed)
    if out.exists():
        _check_replaceable(out)
    with atomic_dir(out) as tmp:
        _dump_jsonl(tmp / "forget.jsonl", ds.forget)
        _dump_jsonl(tmp / "retain.jsonl", ds.retain)
        _dump_jsonl(tmp / "member.jsonl", [{"id": d.id, "document": d.document} for d in ds.member])
        _dump_jsonl(tmp / "nonmember.jsonl", [{"id": d.id, "document": d.document} for d in ds.nonmember])
        _dump_jsonl(tmp / "utility.jsonl", [{"question": c.question, "choices": list(c.choices),
                                             "answer": c.answer, "subject": c.subject} for c in ds.utility])
        manifest = {"kind": "lume-ray synth", "generator_version": GENERATOR_VERSION, "seed": seed,
                    "docs_per_task": docs_per_task, "counts": ds.counts()}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        validate(tmp, ds)
    return out


def _check_replaceable(out: Path) -> None:
    if not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a directory")
    manifest = out / "manifest.json"
    ours = False
    if manifest.is_file():
        try:
            ours = json.loads(manifest.read_text()).get("kind") == "lume-ray synth"
        except (json.JSONDecodeError, AttributeError):
            ours = False
    if not ours and any(out.iterdir()):
        raise FileExistsError(f"{out}: exists, is not empty and was not written by `lume-ray data synth`; "
                              "choose another OUT_DIR")


def validate(directory: Path, ds: SynthDataset | None = None) -> LumeData:
    """Load what was written with the project's own loaders; check the invariants the generator promises."""
    data = load_lume(directory)
    member = load_documents(directory / "member.jsonl")
    nonmember = load_documents(directory / "nonmember.jsonl")
    load_utility(directory / "utility.jsonl")
    overlap = {d.id for d in member} & {d.id for d in nonmember}
    trained = {r.doc_id for r in data.rows}
    leaked = {d.id for d in nonmember} & trained
    if overlap or leaked:
        raise ValueError(f"{directory}: non-member documents overlap members or training rows: "
                         f"{sorted(overlap | leaked)[:3]}")
    if ds is not None and (len(data.forget), len(data.retain)) != (len(ds.forget), len(ds.retain)):
        raise ValueError(f"{directory}: wrote {len(ds.forget)}/{len(ds.retain)} rows but read back "
                         f"{len(data.forget)}/{len(data.retain)}")
    return data


def summary_line(out_dir: str | os.PathLike[str]) -> str:
    """The line `lume-ray data synth` prints: rows, documents and questions of a written dataset."""
    counts = json.loads((Path(out_dir) / "manifest.json").read_text())["counts"]
    return (f"{out_dir}: forget {counts['forget_rows']} rows / {counts['forget_documents']} documents, "
            f"retain {counts['retain_rows']} rows / {counts['retain_documents']} documents, "
            f"{counts['member']} members, {counts['nonmember']} non-members, {counts['utility']} utility questions")
