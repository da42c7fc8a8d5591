"""[1] Data: LUME files -> typed, validated records.

Input:  a LUME directory (``forget.jsonl`` + ``retain.jsonl``, or ``forget.parquet`` + ``retain.parquet``),
        or a Hugging Face dataset id with ``forget``/``retain`` splits; optional membership files
        (``{"id", "document"}`` lines), a multiple-choice utility file (MMLU's shape), or MMLU itself (a local
        directory in Hendrycks' csv or cais/mmlu's parquet layout).
Output: :class:`LumeData` (two tuples of :class:`Row`), :class:`Document` lists, :class:`Choice` lists,
        :class:`MultipleChoiceSet` (questions + each subject's few-shot examples).

Every row is checked once, here, so later stages can trust it. A bad row raises :class:`DataError`
whose one-line message names the file, the line and the field (and the valid choices).
The synthetic generator that writes this format lives in :mod:`lume_ray.synth`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TASKS = ("Task1", "Task2", "Task3")
KINDS = ("sc", "qa")  # sentence completion (regurgitation), question answering (knowledge)
SPLITS = ("forget", "retain")
ROW_FIELDS = ("id", "input", "output", "task")
TASK_NAMES = {
    "Task1": "synthetic creative short stories",
    "Task2": "synthetic biographies with PII",
    "Task3": "real biographies",
}
_ID_RE = re.compile(r"^(?P<doc>.*)(?P<kind>sc|qa)(?P<num>\d+)$")


class DataError(ValueError):
    """A LUME input is malformed. The message is one line: ``file:line: field: what is wrong``."""


@dataclass(frozen=True)
class Row:
    """One LUME example: a document prefix to complete (``sc``) or a question (``qa``)."""

    id: str
    input: str
    output: str
    task: str
    split: str

    @property
    def kind(self) -> str:
        return _parse_id(self.id)[1]

    @property
    def doc_id(self) -> str:
        return _parse_id(self.id)[0]


@dataclass(frozen=True)
class Document:
    """A whole document for the membership-inference attack (``{"id", "document"}``)."""

    id: str
    document: str


@dataclass(frozen=True)
class Choice:
    """A four-way multiple-choice question in MMLU's shape."""

    question: str
    choices: tuple[str, ...]
    answer: int
    subject: str = ""


@dataclass(frozen=True)
class LumeData:
    forget: tuple[Row, ...]
    retain: tuple[Row, ...]
    source: str

    def split(self, name: str) -> tuple[Row, ...]:
        if name not in SPLITS:
            raise DataError(f"unknown split {name!r} (valid: {', '.join(SPLITS)})")
        return self.forget if name == "forget" else self.retain

    @property
    def rows(self) -> tuple[Row, ...]:
        return self.forget + self.retain

    def fingerprint(self) -> str:
        """A stable hash of the content (used to cache built targets and to tag results)."""
        h = hashlib.sha256()
        for r in self.rows:
            h.update(json.dumps([r.split, r.id, r.input, r.output, r.task]).encode())
        return h.hexdigest()[:16]


def _parse_id(row_id: str) -> tuple[str, str, int]:
    m = _ID_RE.match(row_id)
    if m is None:
        raise DataError(f"id {row_id!r} does not end in sc<N> or qa<N>")
    return m["doc"], m["kind"], int(m["num"])


# ---------------------------------------------------------------------------------------------
# Readers: each yields (where, record) pairs; `where` is "file:line" for error messages.


def _read_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{where}: not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1})") from None
            if not line.strip():
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
            except RecursionError:
                raise DataError(f"{where}: malformed JSON (nested too deeply)") from None


def _read_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    import pandas as pd  # heavy: pandas, only for parquet

    try:
        frame = pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types for a bad file
        raise DataError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
    for i, rec in enumerate(frame.to_dict(orient="records"), start=1):
        yield f"{path}:row {i}", rec


def read_records(path: str | Path) -> Iterator[tuple[str, Any]]:
    """Records of a .jsonl / .json-lines or .parquet file, with their location."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {'a directory, not a file' if path.is_dir() else 'file not found'}")
    if path.suffix == ".parquet":
        return _read_parquet(path)
    return _read_jsonl(path)


def _field(where: str, rec: Any, name: str, kind: type = str) -> Any:
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if name not in rec or rec[name] is None:
        required = f" (required: {', '.join(ROW_FIELDS)})" if name in ROW_FIELDS else ""
        raise DataError(f"{where}: missing field {name!r}{required}")
    value = rec[name]
    if not isinstance(value, kind):
        raise DataError(f"{where}: field {name!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def parse_rows(records: Iterable[tuple[str, Any]], split: str) -> tuple[Row, ...]:
    """Validate records into rows of one split (field presence and types, task, id suffix, unique ids)."""
    rows: list[Row] = []
    seen: dict[str, str] = {}
    for where, rec in records:
        row_id = _field(where, rec, "id")
        task = _field(where, rec, "task")
        if task not in TASKS:
            raise DataError(f"{where}: field 'task': unknown task {task!r} (valid: {', '.join(TASKS)})")
        if _ID_RE.match(row_id) is None:
            raise DataError(f"{where}: field 'id': {row_id!r} does not end in sc<N> or qa<N>")
        if row_id in seen:
            raise DataError(f"{where}: field 'id': duplicate id {row_id!r} (first at {seen[row_id]})")
        seen[row_id] = where
        rows.append(Row(row_id, _field(where, rec, "input"), _field(where, rec, "output"), task, split))
    return tuple(rows)


def _split_file(directory: Path, split: str) -> Path:
    for ext in (".jsonl", ".parquet", ".json"):
        candidate = directory / f"{split}{ext}"
        if candidate.is_file():
            return candidate
    raise DataError(f"{directory}: no {split}.jsonl or {split}.parquet in this directory")


def _check_pair(forget: tuple[Row, ...], retain: tuple[Row, ...], source: str) -> None:
    for name, rows in (("forget", forget), ("retain", retain)):
        if not rows:
            raise DataError(f"{source}: split {name!r} is empty")
    forget_docs = {r.doc_id for r in forget}
    shared = sorted(forget_docs & {r.doc_id for r in retain})
    if shared:
        raise DataError(
            f"{source}: document {shared[0]!r} is in both forget and retain "
            f"({len(shared)} shared document(s)); a document belongs to one split"
        )


def load_lume(source: str | Path) -> LumeData:
    """Load and validate a LUME dataset from a directory or a Hugging Face dataset id."""
    path = Path(source)
    if path.is_dir():
        forget = parse_rows(read_records(_split_file(path, "forget")), "forget")
        retain = parse_rows(read_records(_split_file(path, "retain")), "retain")
        _check_pair(forget, retain, str(path))
        return LumeData(forget, retain, str(path))
    if path.exists():
        raise DataError(f"{path}: expected a directory holding forget.jsonl and retain.jsonl")
    if "/" in str(source) and not str(source).startswith((".", "/", "~")):
        return _load_hub(str(source))
    raise DataError(f"{source}: no such directory (and not a Hugging Face dataset id 'owner/name')")


def _load_hub(dataset_id: str) -> LumeData:
    """A Hugging Face dataset with splits named forget/retain (or forget_train/retain_train)."""
    try:
        import datasets  # heavy: Hugging Face datasets, only for a hub id

        dd = datasets.load_dataset(dataset_id)
    except Exception as e:
        raise DataError(f"{dataset_id}: could not load Hugging Face dataset ({type(e).__name__}: {e})") from None
    out = {}
    for split in SPLITS:
        name = next((n for n in (split, f"{split}_train") if n in dd), None)
        if name is None:
            raise DataError(f"{dataset_id}: no split {split!r} or {split + '_train'!r} (has: {', '.join(dd)})")
        out[split] = parse_rows(((f"{dataset_id}[{name}]:row {i}", r) for i, r in enumerate(dd[name], 1)), split)
    _check_pair(out["forget"], out["retain"], dataset_id)
    return LumeData(out["forget"], out["retain"], dataset_id)


def load_documents(path: str | Path) -> tuple[Document, ...]:
    """Membership-inference documents: one ``{"id", "document"}`` per line (the challenge's format)."""
    docs = []
    seen: set[str] = set()
    for where, rec in read_records(path):
        doc_id, text = str(_field(where, rec, "id", object)), _field(where, rec, "document")
        if doc_id in seen:
            raise DataError(f"{where}: field 'id': duplicate id {doc_id!r}")
        seen.add(doc_id)
        docs.append(Document(doc_id, text))
    if not docs:
        raise DataError(f"{path}: no documents")
    return tuple(docs)


def load_utility(path: str | Path) -> tuple[Choice, ...]:
    """A multiple-choice file in MMLU's shape: ``{"question", "choices": [4 strings], "answer": 0..3}``."""
    items = []
    for where, rec in read_records(path):
        question = _field(where, rec, "question")
        choices = _field(where, rec, "choices", object)
        if not isinstance(choices, list | tuple) or len(choices) != 4 or not all(isinstance(c, str) for c in choices):
            raise DataError(f"{where}: field 'choices' must be a list of 4 strings")
        answer = _field(where, rec, "answer", object)
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < 4:
            raise DataError(f"{where}: field 'answer' must be an integer 0..3, got {answer!r}")
        items.append(Choice(question, tuple(choices), int(answer), str(rec.get("subject", ""))))
    if not items:
        raise DataError(f"{path}: no questions")
    return tuple(items)


# ---------------------------------------------------------------------------------------------
# MMLU (the challenge's utility): a test split scored, a dev split giving each subject's few-shot examples.

MMLU_SPLITS = ("dev", "test")
_LETTERS = "ABCD"


@dataclass(frozen=True)
class MultipleChoiceSet:
    """Questions to score and, per subject, the few-shot examples that precede them (MMLU's dev split, in
    file order; empty for a plain utility file). ``mmlu``: read as MMLU (its directory layouts or ``datasets``)."""

    questions: tuple[Choice, ...]
    shots: dict[str, tuple[Choice, ...]]
    source: str
    mmlu: bool = False


def _answer_index(where: str, value: Any) -> int:
    if isinstance(value, str) and len(value.strip()) == 1 and value.strip() in _LETTERS:
        return _LETTERS.index(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 4:
        raise DataError(f"{where}: field 'answer' must be 0..3 or a letter A..D, got {value!r}")
    return int(value)


def _mmlu_csv(path: Path, subject: str) -> tuple[Choice, ...]:
    """Hendrycks' ``{subject}_{split}.csv`` (no header: question, A, B, C, D, answer letter), read exactly as
    open-instruct's ``eval/mmlu/run_eval.py`` reads it: ``pandas.read_csv(header=None)``, each cell formatted as
    ``"{}".format`` formats it (so pandas' type inference shows: in an all-numeric column "0.50" reads "0.5")."""
    import pandas as pd  # heavy: pandas, on first use

    frame = pd.read_csv(path, header=None)
    if frame.shape[1] != 6:
        raise DataError(f"{path}: expected 6 columns (question, A, B, C, D, answer), got {frame.shape[1]}")
    out = []
    for i in range(frame.shape[0]):
        where = f"{path}:row {i + 1}"
        choices = tuple(f"{frame.iloc[i, j + 1]}" for j in range(4))
        out.append(Choice(f"{frame.iloc[i, 0]}", choices, _answer_index(where, frame.iloc[i, 5]), subject))
    return tuple(out)


def _mmlu_records(records: Iterable[tuple[str, Any]], subject: str | None) -> list[Choice]:
    """cais/mmlu rows ``{question, subject, choices: [4], answer: 0..3}`` (parquet or json lines)."""
    out = []
    for where, rec in records:
        choices = _field(where, rec, "choices", object)
        if hasattr(choices, "tolist"):  # numpy array from parquet
            choices = choices.tolist()
        if not isinstance(choices, list | tuple) or len(choices) != 4 or not all(isinstance(c, str) for c in choices):
            raise DataError(f"{where}: field 'choices' must be a list of 4 strings")
        answer = rec.get("answer")
        answer = int(answer) if hasattr(answer, "item") else answer  # numpy int from parquet
        subj = str(rec.get("subject") or subject or "")
        out.append(Choice(_field(where, rec, "question"), tuple(choices), _answer_index(where, answer), subj))
    return out


def _split_files(directory: Path, split: str) -> list[Path]:
    """A cais/mmlu split inside one folder: ``{split}-00000-of-00001.parquet``, ``{split}.parquet``, ``.jsonl``..."""
    found = [p for p in sorted(directory.iterdir()) if p.is_file() and p.name.split("-")[0].split(".")[0] == split
             and p.suffix in (".parquet", ".jsonl", ".json")]
    return found


def _by_subject(choices: Iterable[Choice]) -> dict[str, list[Choice]]:
    groups: dict[str, list[Choice]] = {}
    for c in choices:
        groups.setdefault(c.subject, []).append(c)
    return groups


def load_mmlu_dir(path: str | Path) -> MultipleChoiceSet:
    """MMLU from a local directory, in any of the layouts it is distributed in:

    - Hendrycks' original (what open-instruct reads): ``dev/{subject}_dev.csv`` + ``test/{subject}_test.csv``,
      directly in ``path`` or in ``path/data``;
    - cais/mmlu (the Hugging Face repository): ``{subject}/dev-*.parquet`` + ``{subject}/test-*.parquet`` per
      subject, or ``all/dev-*.parquet`` + ``all/test-*.parquet`` with a ``subject`` column (``.jsonl`` too).

    Subjects come sorted and each split in file order, as open-instruct iterates them."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory (an MMLU directory holds dev/ and test/, or one folder per subject)")
    for base in (root, root / "data"):
        if (base / "test").is_dir() and (base / "dev").is_dir() and any((base / "test").glob("*_test.csv")):
            subjects = sorted(f.name[: -len("_test.csv")] for f in (base / "test").glob("*_test.csv"))
            test: list[Choice] = []
            shots: dict[str, tuple[Choice, ...]] = {}
            for subject in subjects:
                dev = base / "dev" / f"{subject}_dev.csv"
                if not dev.is_file():
                    raise DataError(f"{dev}: file not found (every test subject needs its dev split)")
                shots[subject] = _mmlu_csv(dev, subject)
                test += _mmlu_csv(base / "test" / f"{subject}_test.csv", subject)
            return MultipleChoiceSet(tuple(test), shots, str(root), mmlu=True)
    folders = [root / "all"] if (root / "all").is_dir() else [root] if _split_files(root, "test") else [
        d for d in sorted(root.iterdir()) if d.is_dir() and _split_files(d, "test")]
    if not folders:
        raise DataError(f"{root}: no MMLU here (expected dev/*_dev.csv + test/*_test.csv, or cais/mmlu's "
                        "{subject}/test-*.parquet + dev-*.parquet, or all/test-*.parquet)")
    splits: dict[str, list[Choice]] = {"dev": [], "test": []}
    for folder in folders:
        named = None if folder.name == "all" or folder == root else folder.name
        for split in MMLU_SPLITS:
            files = _split_files(folder, split)
            if not files:
                raise DataError(f"{folder}: no {split} split ({split}-*.parquet or {split}.jsonl)")
            for f in files:
                splits[split] += _mmlu_records(read_records(f), named)
    return mmlu_set(splits["test"], splits["dev"], str(root))


def mmlu_set(test: Iterable[Choice], dev: Iterable[Choice], source: str) -> MultipleChoiceSet:
    """Test questions and dev examples -> the set open-instruct scores: subjects sorted, file order within each."""
    tests, devs = _by_subject(test), _by_subject(dev)
    missing = sorted(set(tests) - set(devs))
    if missing:
        raise DataError(f"{source}: subject {missing[0]!r} has test questions but no dev examples "
                        f"({len(missing)} such subject(s))")
    questions = tuple(c for s in sorted(tests) for c in tests[s])
    if not questions:
        raise DataError(f"{source}: no test questions")
    return MultipleChoiceSet(questions, {s: tuple(devs[s]) for s in sorted(tests)}, source, mmlu=True)


def documents_of(rows: Iterable[Row]) -> tuple[Document, ...]:
    """Reassemble whole documents from sc rows (input + " " + output), e.g. as MIA members."""
    docs: dict[str, list[str]] = {}
    for r in rows:
        if r.kind == "sc":
            docs.setdefault(r.doc_id, []).append(join_text(r.input, r.output))
    return tuple(Document(d, " ".join(parts)) for d, parts in docs.items())


def join_text(prompt: str, completion: str, sep: str = " ") -> str:
    """The text a target is trained on: the prompt, one separator, the completion.

    The prompt alone is then a token-prefix of the training text (the outputs carry no leading
    space), which is what generation starts from. See docs/protocol.md section 1 for the trap this avoids.
    """
    return prompt + sep + completion


def summarize(data: LumeData) -> list[dict[str, Any]]:
    """Rows and documents per split x task x kind (the table `lume-ray data inspect` prints)."""
    table = []
    for split in SPLITS:
        rows = data.split(split)
        for task in TASKS:
            for kind in KINDS:
                sel = [r for r in rows if r.task == task and r.kind == kind]
                table.append(
                    {"split": split, "task": task, "kind": kind, "rows": len(sel),
                     "documents": len({r.doc_id for r in sel})}
                )
        table.append({"split": split, "task": "all", "kind": "all", "rows": len(rows),
                      "documents": len({r.doc_id for r in rows})})
    return table


def summary_lines(data: LumeData, table: list[dict[str, Any]]) -> list[str]:
    """The lines `lume-ray data inspect` prints: the source and its fingerprint, then :func:`summarize`'s table."""
    return [f"{data.source}  (fingerprint {data.fingerprint()}): valid",
            f"{'split':<8} {'task':<6} {'kind':<4} {'rows':>6} {'docs':>6}",
            *(f"{t['split']:<8} {t['task']:<6} {t['kind']:<4} {t['rows']:>6} {t['documents']:>6}" for t in table)]
