"""The target build: a LUME directory -> the embedded target model as a Hugging Face directory with a manifest.

Input:  a LUME directory (forget + retain, optional utility.jsonl and member/non-member documents), a size
        preset, a seed.
Output: a normal Hugging Face model directory (``from_pretrained`` loads it) with ``manifest.json`` (data hash,
        seed, config, measured memorization). A rebuild with the same inputs is a cache hit.

The inputs are read once (:func:`read_inputs`) and hashed into the cache key (:func:`inputs_hash`); the
tokenizer, model and training loop are :mod:`lume_ray.target.memorize`'s; :func:`summary_lines` are the
lines ``lume-ray target build`` prints.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from lume_ray.data import (
    Choice,
    Document,
    LumeData,
    documents_of,
    join_text,
    load_documents,
    load_lume,
    load_utility,
)
from lume_ray.files import atomic_dir
from lume_ray.model import save_model, save_tokenizer
from lume_ray.target.memorize import measure, memorization_summary, memorize, tiny_olmo, train_tokenizer
from lume_ray.target.presets import Preset, get_preset

BUILD_VERSION = 1  # bump when the training recipe changes, so an old cached build is not reused
MANIFEST = "manifest.json"
MANIFEST_KIND = "lume-ray target"
OPTIONAL_FILES = ("utility.jsonl", "mia/member.jsonl", "mia/nonmember.jsonl", "member.jsonl", "nonmember.jsonl")


# ---------------------------------------------------------------------------------------------
# The inputs: what a build reads from the data directory, and its cache key.


@dataclass(frozen=True)
class TargetInputs:
    """What a build trains on and measures with, read once from the data directory."""

    data: LumeData
    utility: tuple[Choice, ...]
    member: tuple[Document, ...]
    nonmember: tuple[Document, ...]
    files: dict[str, str]  # optional file name -> content hash (part of the cache key)


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def read_inputs(data_dir: str | os.PathLike[str]) -> TargetInputs:
    """The LUME rows plus, when the directory has them, utility questions and member/non-member documents.

    Members: ``mia/member.jsonl`` (the challenge's layout) or ``member.jsonl``; without either, the forget
    documents reassembled from their sc rows. Non-members likewise.
    """
    data = load_lume(os.fspath(data_dir))
    d = Path(data_dir)
    files = {name: _file_hash(d / name) for name in OPTIONAL_FILES if (d / name).is_file()}
    utility = load_utility(d / "utility.jsonl") if "utility.jsonl" in files else ()
    # The challenge's layout (DATA/mia/) first, then the synthetic generator's (DATA/member.jsonl).
    member_file = next((n for n in ("mia/member.jsonl", "member.jsonl") if n in files), None)
    nonmember_file = next((n for n in ("mia/nonmember.jsonl", "nonmember.jsonl") if n in files), None)
    member = load_documents(d / member_file) if member_file else documents_of(data.forget)
    nonmember = load_documents(d / nonmember_file) if nonmember_file else ()
    return TargetInputs(data, utility, member, nonmember, files)


def inputs_hash(inputs: TargetInputs, preset_name: str, preset: Preset, seed: int) -> str:
    key = {"build_version": BUILD_VERSION, "data": inputs.data.fingerprint(), "files": inputs.files,
           "preset_name": preset_name, "preset": asdict(preset), "seed": seed}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def training_texts(inputs: TargetInputs) -> list[tuple[str, str]]:
    """(prompt, completion) pairs the target memorizes: every row, and each utility question with its
    correct choice (the evaluator scores options by the likelihood of ``" " + choice`` after the question)."""
    pairs = [(r.input, r.output) for r in inputs.data.rows]
    pairs += [(c.question, c.choices[c.answer]) for c in inputs.utility]
    return pairs


# ---------------------------------------------------------------------------------------------
# The build.


def _read_manifest(out: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("kind") == MANIFEST_KIND else None


def build_target(
    out_dir: str | os.PathLike[str], data_dir: str | os.PathLike[str], *, preset: str = "tiny", seed: int = 0,
    epochs: int | None = None, force: bool = False, progress: bool = True, threads: int = 1,
) -> dict[str, Any]:
    """Train the embedded target on a LUME directory and save it as a Hugging Face model directory.

    Returns the manifest (also written to ``out_dir/manifest.json``). When ``out_dir`` already holds a
    build of the same inputs (data, optional files, preset, epochs, seed, recipe version) it is returned
    as is ("cached") unless ``force``. The build happens in a temp dir beside ``out_dir`` and is renamed
    into place, so ``out_dir`` is never half-written; an existing ``out_dir`` is replaced only if it is
    empty or an earlier target build. ``threads`` is the torch thread count while building (see below).
    """
    started = time.perf_counter()
    out = Path(out_dir)
    cfg = get_preset(preset)
    if epochs is not None:
        if epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {epochs}")
        cfg = replace(cfg, epochs=epochs)
    inputs = read_inputs(data_dir)
    key = inputs_hash(inputs, preset, cfg, seed)
    if out.exists():
        previous = _read_manifest(out)
        if previous is None and (not out.is_dir() or any(out.iterdir())):
            raise FileExistsError(f"{out}: exists and is not a target build (no {MANIFEST}); choose another OUT_DIR")
        if previous is not None and previous.get("inputs_hash") == key and not force and (out / "config.json").is_file():
            if progress:
                print(f"{out}: cached (inputs {key})")
            return previous

    threads_before = torch.get_num_threads()
    # One thread: a model this small gains little from intra-op parallelism, and on a shared 2-core
    # machine two OpenMP threads per process spin-wait: measured 8x the CPU time and 4x the wall time
    # per step under load (0.20 vs 1.59 CPU s/step).
    torch.set_num_threads(threads)
    try:
        pairs = training_texts(inputs)
        tokenizer = train_tokenizer((join_text(p, c) for p, c in pairs), cfg.vocab_size)
        model = tiny_olmo(tokenizer, cfg, seed=seed)
        n_params = sum(p.numel() for p in model.parameters())
        if progress:
            print(f"target: {n_params / 1e6:.2f}M parameters, {len(pairs)} texts, up to {cfg.epochs} epochs")
        t0, cpu0 = time.perf_counter(), time.process_time()
        training = memorize(model, tokenizer, pairs, cfg, seed=seed, progress=progress)
        train_seconds, train_cpu = time.perf_counter() - t0, time.process_time() - cpu0

        t0 = time.perf_counter()
        completion_tokens = max(len(tokenizer(c)["input_ids"]) for _, c in pairs)
        max_new = min(256, completion_tokens + 8)  # room for the longest answer and its eos
        measured = measure(model, tokenizer, inputs, max_new_tokens=max_new)
        measure_seconds = time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads_before)

    manifest: dict[str, Any] = {
        "kind": MANIFEST_KIND,
        "build_version": BUILD_VERSION,
        "inputs_hash": key,
        "data": {"source": str(data_dir), "fingerprint": inputs.data.fingerprint(), "files": inputs.files,
                 "rows": {"forget": len(inputs.data.forget), "retain": len(inputs.data.retain)},
                 "utility_questions": len(inputs.utility)},
        "seed": seed,
        "preset": preset,
        "preset_config": asdict(cfg),
        "model_config": {k: getattr(model.config, k) for k in (
            "model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
            "intermediate_size", "max_position_embeddings")},
        "parameters": n_params,
        "training": {k: v for k, v in training.items() if k != "history"},
        "history": training["history"],
        "memorization": {**memorization_summary(measured), "max_new_tokens": max_new},
        "mia": {"member_nll": measured["member_nll"], "nonmember_nll": measured["nonmember_nll"],
                "members": measured["counts"]["members"], "nonmembers": measured["counts"]["nonmembers"],
                "auc": measured["mia_auc"]},  # the loss attack as LUME scores it: members 1, score = -NLL
        "utility_accuracy": measured["utility"],
        "metrics": {k: v for k, v in measured.items() if k not in ("settings", "notes")},
        "seconds": {"train": round(train_seconds, 1), "measure": round(measure_seconds, 1),
                    "train_cpu": round(train_cpu, 1)},
        "versions": {"torch": torch.__version__, "transformers": _transformers_version()},
    }

    with atomic_dir(out) as tmp:  # loads in transformers 5 and in 4.45, the challenge's pin
        save_model(model, tmp)
        save_tokenizer(tokenizer, tmp)
        manifest["build_seconds"] = round(time.perf_counter() - started, 1)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _transformers_version() -> str:
    import transformers  # heavy: on first use, as in lume_ray.model

    return str(transformers.__version__)


def summary_lines(manifest: dict[str, Any]) -> list[str]:
    """The few lines `lume-ray target build` prints: size, time, memorization, membership gap."""
    mem, mia = manifest["memorization"], manifest["mia"]
    lines = [f"parameters {manifest['parameters']:,}  preset {manifest['preset']}  seed {manifest['seed']}  "
             f"built in {manifest['build_seconds']} s ({manifest['training']['epochs_run']} epochs)"]
    for split in ("forget", "retain"):
        lines.append(f"{split:<7} sc ROUGE-L recall {mem[split]['sc_rougeL_recall']:.3f}   "
                     f"qa exact match {mem[split]['qa_exact_match']:.3f}")
    non = "n/a" if mia["nonmember_nll"] is None else f"{mia['nonmember_nll']:.3f}"
    auc = "n/a" if mia["auc"] is None else f"{mia['auc']:.3f}"
    lines.append(f"document NLL: members {mia['member_nll']:.3f}  non-members {non}  (loss-attack AUC {auc})")
    if manifest.get("utility_accuracy") is not None:
        lines.append(f"utility accuracy {manifest['utility_accuracy']:.3f}")
    return lines
