"""`lume-ray export`: one evaluation point of a sweep -> a standalone Hugging Face model directory with a model card.

Input:  RUN_DIR (docs/run_dir.md) and ``--point TRIAL_ID@STEP`` or ``--best ALGORITHM`` [``--by OBJECTIVE``]
        [``--floor ...``], ``--out DIR`` (new, or an empty directory).
Output: DIR: the point's model directory as the unlearning job saved it (``model.safetensors``, ``config.json``,
        ``generation_config.json``, the tokenizer files; loads in transformers 4.45 and 5) and ``README.md``, its
        model card (:mod:`lume_ray.export.card`). Written into a temporary sibling and renamed into place.

    select.py   which point: TRIAL_ID@STEP checked, or the report's answer for an algorithm     RUN_DIR -> a point
    rerun.py    a deleted point: the trial re-run to its step, scored as the sweep did, checked  point -> model dir
    card.py     README.md: front matter (base_model, tags, model-index), setting, scores, provenance

A point whose model directory is still on disk (``sweep.keep_models``) is copied file by file. Sweeps delete
them by default: then the trial's trajectory is re-run to that step in a temporary directory beside DIR (removed
after) and every registered metric is compared with the recorded ones, exactly on CPU in float32, within
:data:`~lume_ray.export.rerun.GPU_TOLERANCE` on GPUs or in bfloat16 (``tolerance`` overrides).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lume_ray.export.rerun import GPU_TOLERANCE, Rerun, RerunFailed, RerunMismatch, rerun_point
from lume_ray.export.select import Selected, check_out, select

README = "README.md"


@dataclass(frozen=True)
class Exported:
    out: Path
    point: Selected
    rerun: Rerun | None  # None: the kept model directory was copied
    files: list[str]


def _copy_model(src: Path, dst: Path) -> list[str]:
    """The model directory's files (not the card: it is written after), byte for byte."""
    names = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if path.is_file() and rel.name != README and not any(p.startswith(".") for p in rel.parts):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dst / rel)
            names.append(str(rel))
    return names


def export_point(run_dir: str | Path, out: str | Path, *, point: str | None = None, best: str | None = None,
                 by: str | None = None, floors: Any = None, address: str | None = None,
                 tolerance: float | None = None, command: Sequence[str] | None = None,
                 log: Callable[[str], None] = print, console: Callable[[Path], Any] | None = None) -> Exported:
    """Export one point of RUN_DIR into ``out`` (see the module docstring). Bad input: a one-line ConfigError
    before anything is written. ``console(log_dir)``: a context manager wrapped around a re-run (the CLI's quiet
    console, its log in RUN_DIR/logs/export/)."""
    import contextlib

    from lume_ray.config import ConfigError
    from lume_ray.export import card
    from lume_ray.export.rerun import trial_job
    from lume_ray.files import atomic_dir
    from lume_ray.run_dir import RunDir

    out = check_out(out)
    chosen = select(run_dir, point=point, best=best, by=by, floors=floors)
    rd = RunDir(chosen.run_dir)
    study = rd.read_study()
    if not chosen.kept and not rd.experiment_path.is_file():
        raise ConfigError(f"{rd.experiment_path} not found: the point's model was deleted and re-running it needs "
                          "the sweep's experiment")
    log(f"[export] {chosen.label} ({chosen.algorithm}), {chosen.how}")
    name = f"{study.get('name') or rd.root.name}-{chosen.algorithm}-{chosen.trial_id}-step{chosen.step}"
    command = list(command) if command is not None else ["lume-ray", "export", str(run_dir), "--point", chosen.label,
                                                         "--out", str(out)]
    job = trial_job(rd, chosen, _experiment(rd, chosen), out)  # the trial's job, for the card
    out.parent.mkdir(parents=True, exist_ok=True)
    rerun: Rerun | None = None
    work: Path | None = None
    try:
        if chosen.kept:
            source = chosen.model_dir
            obtained = f"copied from the kept point `{source}`"
            log(f"[export] copying the kept model directory {source}")
        else:
            work = Path(tempfile.mkdtemp(prefix=f".{out.name}.rerun-", dir=out.parent))
            log(f"[export] the point's model was deleted after scoring (sweep.keep_models: false): re-running in "
                f"{work}")
            with console(rd.logs / "export") if console is not None else contextlib.nullcontext():
                rerun = rerun_point(chosen, work, address=address, tolerance=tolerance, log=log)
            source = rerun.model_dir
            obtained = f"the sweep deleted the point's model; {rerun.sentence(chosen)}, and these are its weights"
            log(f"[export] {rerun.sentence(chosen)}")
        data_hashes = card.file_hashes(job.data)
        target_hashes = card.file_hashes(job.model, weights_only=True)
        check_out(out)  # still new or empty after a long re-run: atomic_dir replaces what is there
        with atomic_dir(out) as tmp:
            files = _copy_model(source, tmp)
            (tmp / README).write_text(card.render(chosen, job, study, name=name, obtained=obtained,
                                                  export_command=command, data_hashes=data_hashes,
                                                  target_hashes=target_hashes), encoding="utf-8")
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    return Exported(out, chosen, rerun, [*files, README])


def _experiment(rd: Any, chosen: Selected) -> Any:
    """The sweep's experiment when RUN_DIR has it (the job of a trial without train/config.json is built from it)."""
    from lume_ray.config import load_experiment

    if (rd.trial(chosen.trial_id) / "train" / "config.json").is_file() or not rd.experiment_path.is_file():
        return None
    return load_experiment(rd.experiment_path).resolved()


__all__ = ["GPU_TOLERANCE", "Exported", "Rerun", "RerunFailed", "RerunMismatch", "Selected",
           "export_point", "rerun_point", "select"]
