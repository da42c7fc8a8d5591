"""Preflight: a command's inputs, checked before anything is written or started -> the checked inputs, or one
:class:`~lume_ray.config.ConfigError` line naming the file or flag, the key the user wrote and its value.

Input:  an :class:`~lume_ray.config.Experiment` (``sweep``, ``quickstart``), an
        :class:`~lume_ray.config.UnlearnJob` (``unlearn``), or ``eval``'s model, data and settings; and
        ``source`` (the experiment's file, or ``lume-ray COMMAND``) with the name of each key there
        (``target.model`` in a file, ``--model`` on the command line).
Output: :class:`Checked` (the model's config, tokenizer and context; the data), or ConfigError.

The rule: every input that can be checked without Ray is checked here, once, before any directory is created:

- A model or data path that looks local (starts with ``.``, ``/`` or ``~``, exists, its parent directory exists, or
  its first path component exists) is local: it must exist, and is read (config.json, the tokenizer, every data
  row). It never goes to the Hugging Face hub.
- Anything else must be a well-formed hub id ``owner/name``. It is looked up in the local Hugging Face cache first;
  with ``HF_HUB_OFFLINE`` set, not cached is an error; otherwise the hub is asked once, with a short timeout.
- A data row longer than the model's context (its ``max_position_embeddings``) is an error naming file and line.
- What the training and evaluation ask for (CPUs, GPUs) is compared with what the machine has
  (:func:`local_resources`: ``os.cpu_count()``, ``torch.cuda.device_count()``), or, on a cluster, with
  ``ray.cluster_resources()`` as soon as it is connected (:func:`check_resources`).
- A cluster address is probed (:func:`check_address`, a short TCP connect) before Ray is asked to connect to it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lume_ray.config import ConfigError
from lume_ray.local_ray import check_address
from lume_ray.train.job import absolute, preflight

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
HUB_TIMEOUT_S = 10.0
CHARS_PER_TOKEN = 64  # a row longer than context x this many characters is too long without tokenizing it
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")
TRIAL_DRIVER_CPUS = 0.25  # a sweep trial's driver (search.sweep.trial_trainable)


@dataclass(frozen=True)
class Checked:
    """What the preflight read: the model's config, tokenizer and context (None for a model still to be built or
    not cached here), and the data (None for data still to be written)."""

    model_config: Any = None
    tokenizer: Any = None
    context: int | None = None
    data: Any = None


def _fail(source: str, key: str, value: Any, message: str) -> ConfigError:
    return ConfigError(f"{source}: {key}: {value}: {message}")


def looks_local(text: str) -> bool:
    """Whether a model or data reference is a local path (never a hub id): it starts with ``.``, ``/`` or ``~``,
    exists, its parent directory exists, or it contains a path separator and its first component exists."""
    if text.startswith((".", "/", "~", os.sep)) or Path(text).exists():
        return True
    path = Path(text).expanduser()
    return len(path.parts) > 1 and (path.parent.is_dir() or Path(path.parts[0]).exists())


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_id(value: str, key: str, source: str, what: str) -> None:
    if not HUB_ID.match(value) or "--" in value or ".." in value:
        raise _fail(source, key, value, f"{what} path does not exist, and it is not a Hugging Face hub id 'owner/name'")


# ---------------------------------------------------------------------------------------------
# The model.


def check_model(value: str, key: str, source: str, *, trust_remote_code: bool = False,
                written: str | None = None) -> Checked:
    """A model directory or hub id -> its config, tokenizer and context, or ConfigError naming ``key`` and the value
    as the user ``written`` it (default: ``value``)."""
    if written is not None and written != value:
        try:
            return check_model(value, key, source, trust_remote_code=trust_remote_code)
        except ConfigError as e:
            raise ConfigError(str(e).replace(f"{key}: {value}:", f"{key}: {written}:", 1)) from None
    if looks_local(value):
        return _local_model(Path(value).expanduser(), value, key, source, trust_remote_code)
    _hub_id(value, key, source, "model")
    from huggingface_hub import try_to_load_from_cache  # heavy: huggingface_hub

    cached = try_to_load_from_cache(value, "config.json")
    if isinstance(cached, str):
        return _local_model(Path(cached).parent, value, key, source, trust_remote_code, cached_id=True)
    if _offline():
        raise _fail(source, key, value, "not a local directory, and not in the Hugging Face cache (HF_HUB_OFFLINE "
                    "is set: nothing is downloaded)")
    _ask_hub(value, key, source, "model")
    return Checked()


def _ask_hub(value: str, key: str, source: str, kind: str) -> None:
    from huggingface_hub import HfApi  # heavy: huggingface_hub
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    api = HfApi()
    try:
        (api.model_info if kind == "model" else api.dataset_info)(value, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        return  # exists; access is the download's business (a token)
    except RepositoryNotFoundError:
        raise _fail(source, key, value, f"no such local directory, and no such {kind} on the Hugging Face hub") from None
    except Exception as e:  # no network, a proxy, a timeout
        raise _fail(source, key, value, f"no such local directory, and the Hugging Face hub cannot be reached to "
                    f"look it up ({type(e).__name__}); set HF_HUB_OFFLINE=1 to use the cache only") from None


def _local_model(path: Path, value: str, key: str, source: str, trust_remote_code: bool,
                 cached_id: bool = False) -> Checked:
    if not path.exists():
        raise _fail(source, key, value, "model path does not exist")
    config_path = path / "config.json"
    if not path.is_dir() or not config_path.is_file():
        raise _fail(source, key, value, "not a Hugging Face model directory (no config.json)")
    try:
        raw = json.loads(config_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise _fail(source, key, value, f"{config_path} is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise _fail(source, key, value, f"{config_path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(raw, dict):
        raise _fail(source, key, value, f"{config_path} is not a JSON object")
    from transformers import AutoConfig, AutoTokenizer  # heavy: transformers

    if not cached_id and not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise _fail(source, key, value, f"no tokenizer in the model directory (none of {', '.join(TOKENIZER_FILES)})")
    where = value if cached_id else str(path)
    try:
        config = AutoConfig.from_pretrained(where, trust_remote_code=trust_remote_code, local_files_only=True)
    except Exception as e:
        raise _fail(source, key, value, f"{config_path}: not a model config transformers can load "
                    f"({type(e).__name__}: {_first(e)})") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code, local_files_only=True)
    except Exception as e:
        raise _fail(source, key, value, f"the tokenizer does not load ({type(e).__name__}: {_first(e)})") from None
    vocab = getattr(config, "vocab_size", None)
    if isinstance(vocab, int) and len(tokenizer) > vocab:
        raise _fail(source, key, value, f"the tokenizer has {len(tokenizer)} tokens but the model embeds only {vocab}; "
                    "model and tokenizer do not match")
    context = getattr(config, "max_position_embeddings", None)
    return Checked(config, tokenizer, int(context) if isinstance(context, int) and context > 0 else None)


def _first(e: BaseException) -> str:
    lines = [ln for ln in str(e).splitlines() if ln.strip()]
    return (lines[0] if lines else type(e).__name__)[:200]


# ---------------------------------------------------------------------------------------------
# The data.


def check_data(value: str, key: str, source: str, *, written: str | None = None) -> Any:
    """A LUME directory or hub dataset id -> its :class:`~lume_ray.data.LumeData`, or ConfigError naming ``key`` and
    the value as the user ``written`` it (default: ``value``)."""
    from lume_ray.data import load_lume

    if written is not None and written != value:
        try:
            return check_data(value, key, source)
        except ConfigError as e:
            raise ConfigError(str(e).replace(f"{key}: {value}:", f"{key}: {written}:", 1)) from None
    if looks_local(value):
        path = Path(value).expanduser()
        if not path.exists():
            raise _fail(source, key, value, "no such data directory")
        if not path.is_dir():
            raise _fail(source, key, value, "not a directory (a LUME directory holds forget.jsonl and retain.jsonl)")
        return _load(load_lume, str(path), value, key, source)
    _hub_id(value, key, source, "data")
    if not _dataset_cached(value):
        if _offline() or os.environ.get("HF_DATASETS_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
            raise _fail(source, key, value, "not a local directory, and not in the Hugging Face cache "
                        "(HF_HUB_OFFLINE is set: nothing is downloaded)")
        _ask_hub(value, key, source, "dataset")
    return _load(load_lume, value, value, key, source)


def _load(load: Any, where: str, value: str, key: str, source: str) -> Any:
    try:
        return load(where)
    except ValueError as e:  # DataError: names the file and line
        raise ConfigError(f"{source}: {key}: {_first(e)}") from None
    except OSError as e:
        raise _fail(source, key, value, f"cannot be read ({e.strerror or type(e).__name__}: {e.filename})") from None


def _dataset_cached(dataset_id: str) -> bool:
    from huggingface_hub.constants import HF_HUB_CACHE  # heavy: huggingface_hub

    owner, name = dataset_id.split("/", 1)
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE", Path(HF_HUB_CACHE).parent / "datasets"))
    return ((Path(HF_HUB_CACHE) / f"datasets--{owner}--{name}").is_dir()
            or (datasets_cache / f"{owner}___{name}").is_dir())


def check_rows_fit(data: str, checked: Checked, key: str, source: str) -> None:
    """Every forget/retain row's prompt within the model's context (its max_position_embeddings): a longer row is an
    error naming its file and line (a far longer one is caught by its length, before it is tokenized)."""
    if checked.context is None or checked.tokenizer is None or not Path(data).is_dir():
        return
    from lume_ray.data import SPLITS, _split_file, read_records

    context = checked.context
    for split in SPLITS:
        for where, rec in read_records(_split_file(Path(data), split)):
            text = str(rec.get("input", ""))
            longest = max(len(text), len(str(rec.get("output", ""))))
            if longest > context * CHARS_PER_TOKEN:
                raise ConfigError(f"{source}: {key}: {where}: a row of {longest} characters, far longer than the "
                                  f"model's context ({context} tokens)")
            n = len(checked.tokenizer(text)["input_ids"])
            if n > context:
                raise ConfigError(f"{source}: {key}: {where}: field 'input' is {n} tokens, longer than the model's "
                                  f"context ({context} tokens, max_position_embeddings)")


def check_documents(value: str | None, key: str, source: str, kind: str) -> None:
    """An MIA member/non-member file, or a utility file/directory: exists and parses (``kind``: documents or
    utility)."""
    if value in (None, "", "auto", "mmlu", False):
        return
    from lume_ray.data import load_documents, load_utility

    path = Path(str(value)).expanduser()
    if not path.exists():
        raise _fail(source, key, value, "no such file")
    if kind == "utility":
        if path.is_dir():
            return  # an MMLU directory: read by the evaluation's own check (resolve_utility)
        _load(load_utility, str(path), str(value), key, source)
    else:
        _load(load_documents, str(path), str(value), key, source)


# ---------------------------------------------------------------------------------------------
# Resources and addresses.


def local_resources(min_cpus: int = 1) -> dict[str, float]:
    """What this machine offers a local Ray: CPUs (at least ``min_cpus``: the sweep's local Ray offers 4) and GPUs."""
    import torch  # heavy: torch

    return {"CPU": float(max(min_cpus, os.cpu_count() or 1)), "GPU": float(torch.cuda.device_count())}


def check_resources(have: Mapping[str, float], where: str, source: str, *, train: Any = None,
                    evaluation: Any = None, keys: Mapping[str, str] | None = None) -> None:
    """What the training (Ray Train workers) and the evaluation (model actors) ask for, against ``have`` (a
    machine's or a cluster's CPUs and GPUs); ``where`` names it in the message ("this machine", "the cluster at
    ADDRESS"); ``keys``: how the user wrote each key (``train.gpus_per_worker`` or ``--gpus-per-worker``)."""
    keys = dict(keys or {})
    cpus, gpus = float(have.get("CPU", 0.0)), float(have.get("GPU", 0.0))
    pool_cpus = 0.0
    if evaluation is not None:
        n = evaluation.workers
        if evaluation.gpus_per_actor and n * evaluation.gpus_per_actor > gpus:
            k = keys.get("eval.gpus_per_actor", "eval.gpus_per_actor")
            raise ConfigError(f"{source}: {k}: {evaluation.gpus_per_actor:g} x {n} actor(s) needs "
                              f"{n * evaluation.gpus_per_actor:g} GPU(s); {where} has {gpus:g}")
        if evaluation.cpus_per_actor is not None and n * evaluation.cpus_per_actor >= cpus:
            k = keys.get("eval.cpus_per_actor", "eval.cpus_per_actor")
            raise ConfigError(f"{source}: {k}: {evaluation.cpus_per_actor:g} x {n} actor(s) needs "
                              f"{n * evaluation.cpus_per_actor:g} CPU(s) and one to spare; {where} has {cpus:g}")
        pool_cpus = n * (evaluation.cpus_per_actor or 1.0) if train is not None else 0.0
    if train is not None:
        need_gpus = train.workers * train.gpus_per_worker
        if need_gpus > gpus:
            k = keys.get("train.gpus_per_worker", "train.gpus_per_worker")
            raise ConfigError(f"{source}: {k}: {train.gpus_per_worker} x {train.workers} worker(s) needs "
                              f"{need_gpus} GPU(s); {where} has {gpus:g} (0 trains on CPUs)")
        need_cpus = train.workers * train.cpus_per_worker + (TRIAL_DRIVER_CPUS if evaluation is not None else 0)
        if need_cpus + pool_cpus > cpus:
            k = keys.get("train.cpus_per_worker", "train.cpus_per_worker")
            pool = f" beside the evaluation's {pool_cpus:g}" if pool_cpus else ""
            raise ConfigError(f"{source}: {k}: {train.cpus_per_worker:g} x {train.workers} worker(s) needs "
                              f"{need_cpus:g} CPU(s){pool}; {where} has {cpus:g}")


def check_jobs(exp: Any) -> None:
    """Every algorithm's job at the largest values of its space, checked against the data and the model (what a
    config cannot know before the target exists, e.g. rmu's layer beyond the model's depth): a one-line error
    before the sweep starts, never a failed trial."""
    for algo in exp.selected_algorithms():
        hp = {name: max(spec.concrete_values()) if spec.kind != "choice" else spec.values[0]
              for name, spec in exp.algorithms[algo].searched().items()}
        try:
            preflight(absolute(exp.unlearn_job(algo, hp, Path(exp.output_dir) / "check")))  # the algorithm's own check too
        except ValueError as e:
            raise ConfigError(f"algorithms.{algo}: {str(e).splitlines()[0]}") from None


# ---------------------------------------------------------------------------------------------
# Commands.


def check_output(value: str, key: str, source: str) -> None:
    """An output directory that can be made: it is a directory, or its nearest existing ancestor is a writable one."""
    path = Path(value).expanduser().absolute()
    if path.exists() and not path.is_dir():
        raise _fail(source, key, value, "exists and is not a directory")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise _fail(source, key, value, f"cannot be made: {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise _fail(source, key, value, f"cannot be written: {ancestor} is not writable")


def check_experiment(exp: Any, source: str, *, address: str | None = None, resume: bool | None = None) -> Checked:
    """A study's inputs (``sweep``, ``quickstart``): RUN_DIR against ``resume`` (None: either), the data (unless
    ``data.synth`` writes it), the target (unless ``target.build`` builds it), the MIA and utility files, the rows
    against the model's context, each algorithm's own check against the model, the resources (this machine's, when
    no cluster is given), the cluster's address."""
    from lume_ray.run_dir import RunDir

    check_output(exp.output_dir, "output_dir", source)
    rd = RunDir(exp.output_dir)
    if resume and not rd.exists():
        raise ConfigError(f"{source}: --resume: {rd.root}: no sweep to resume (no study.json); run without --resume")
    if resume is False and rd.exists():
        raise ConfigError(f"{source}: output_dir: {rd.root}: already holds a sweep; pass --resume to continue it, or "
                          "set another output_dir")
    remote = address or os.environ.get("RAY_ADDRESS")
    check_address(remote, "--address" if address else "RAY_ADDRESS", source)
    d, t = exp.data, exp.target
    data_path = exp.path(d.path)
    data = None
    if d.synth is None or Path(data_path).exists():
        data = check_data(data_path, "data.path", source, written=d.path)
    for field in ("member", "nonmember"):
        check_documents(getattr(d, field) and exp.path(getattr(d, field)), f"data.{field}", source, "documents")
    if d.utility not in (None, "auto", "mmlu"):
        check_documents(exp.path(d.utility), "data.utility", source, "utility")
    checked = Checked(data=data)
    if t.build is None:
        model = check_model(exp.path(t.model), "target.model", source, trust_remote_code=t.trust_remote_code,
                            written=t.model)
        checked = Checked(model.model_config, model.tokenizer, model.context, data)
        if data is not None:
            check_rows_fit(data_path, checked, "data.path", source)
            try:
                check_jobs(exp)
            except ConfigError as e:
                raise ConfigError(f"{source}: {e}") from None
    if not remote:
        check_resources(local_resources(min_cpus=4), "this machine", source, train=exp.train, evaluation=exp.eval)
    return checked


FLAGS = {"model": "--model", "data": "--data", "out": "--out", "train.gpus_per_worker": "--gpus-per-worker",
         "train.cpus_per_worker": "--cpus-per-worker", "eval.gpus_per_actor": "--gpus-per-actor",
         "eval.cpus_per_actor": "--cpus-per-actor"}


def check_job(job: Any, source: str, *, address: str | None = None, keys: Mapping[str, str] = FLAGS) -> Checked:
    """One unlearning job's inputs (``unlearn``): model, data, rows against the context, GPUs of this machine (a
    local Ray gets the CPUs the job asks for), the cluster's address."""
    check_output(job.out, keys.get("out", "out"), source)
    remote = address or os.environ.get("RAY_ADDRESS")
    check_address(remote, "--address" if address else "RAY_ADDRESS", source)
    data = check_data(job.data, keys.get("data", "data"), source)
    if not data.forget or not data.retain:
        raise _fail(source, keys.get("data", "data"), job.data, "forget and retain must both have rows")
    model = check_model(job.model, keys.get("model", "model"), source, trust_remote_code=job.trust_remote_code)
    checked = Checked(model.model_config, model.tokenizer, model.context, data)
    check_rows_fit(job.data, checked, keys.get("data", "data"), source)
    if not remote:
        have = local_resources()
        have["CPU"] = max(have["CPU"], job.train.workers * job.train.cpus_per_worker + 1)  # run_unlearning's Ray
        check_resources(have, "this machine", source, train=job.train, keys=keys)
    return checked


def check_eval(model: str, data: str, settings: Any, source: str, *, address: str | None = None,
               member: str | None = None, nonmember: str | None = None, utility: str | None = None,
               trust_remote_code: bool = False, out: str | None = None) -> Checked:
    """An evaluation's inputs (``eval``): model, data, the MIA and utility files, rows against the context, this
    machine's resources, the cluster's address."""
    check_address(address, "--address", source)
    if out is not None:
        check_output(out, "--out", source)
    lume = check_data(data, "--data", source)
    m = check_model(model, "--model", source, trust_remote_code=trust_remote_code)
    checked = Checked(m.model_config, m.tokenizer, m.context, lume)
    check_rows_fit(data, checked, "--data", source)
    check_documents(member, "--member", source, "documents")
    check_documents(nonmember, "--nonmember", source, "documents")
    if utility not in (None, "mmlu"):
        check_documents(utility, "--utility", source, "utility")
    if not address and not os.environ.get("RAY_ADDRESS"):
        check_resources(local_resources(), "this machine", source, evaluation=settings, keys=FLAGS)
    return checked
