"""The console: lume-ray's own lines on the terminal; Ray, Tune, Ray Data, DeepSpeed and Optuna in OUT/logs/.

Input:  a command's output directory (RUN_DIR for a sweep, OUT for ``unlearn`` / ``eval``), ``verbose``.
Output: ``OUT/logs/lume-ray.log`` with everything this process printed or logged (Ray's workers too, when Ray
        forwards their output to the driver); on the terminal only lume-ray's lines, a live view (a sweep) or a
        progress line (``unlearn``, ``eval``), errors as one line naming the log, and the few Ray warnings that
        are real (:data:`ALERTS`: out of memory, a dead node or worker). ``verbose`` shows every line as well.

How: the process's stdout and stderr file descriptors point at a pipe whose reader thread appends every byte to
the log and picks out what the terminal should see; ``sys.stdout`` / ``sys.stderr``, and the stream handlers
that loggers created before (Ray's, Optuna's, DeepSpeed's) hold, point there too. So C++ output (Ray's core
worker), Python prints, ``logging`` and Ray's log_to_driver lines land in one file, in order. The terminal is
a duplicate of the original stdout, taken before the redirection.

A sweep's view is :class:`SweepView`, a ``ray.tune.Callback`` reached through :class:`Relay` (see there why).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from ray.tune import Callback

from lume_ray.status import fmt_metric, fmt_param

LOG_NAME = "lume-ray.log"

# Lines of Ray (and the OS) that the terminal still shows in quiet mode: a run that is about to fail or slow
# down for a reason outside lume-ray. Matched case-insensitively, after the "(raylet) " style prefix.
ALERTS = re.compile("|".join([
    r"out of memory", r"OutOfMemory", r"\bOOM\b", r"memory monitor", r"Memory on the node",
    r"\bnode\b.*\b(died|dead|failed|lost|removed|unhealthy)\b", r"NodeDiedError",
    r"\bworker\b.*\b(died|crashed|killed)\b", r"WorkerCrashedError", r"ActorDiedError", r"SIGKILL", r"SIGSEGV",
    r"segmentation fault", r"No space left on device",
]), re.IGNORECASE)
# ... unless they are one of these: Tune's answer to the user's own Ctrl-C names SIGKILL without one happening.
NOT_ALERTS = re.compile(r"Stop signal received|Press CTRL\+C")
MAX_ALERTS = 20  # then one line saying the rest are in the log
_PREFIX = re.compile(r"^\((?:[^()]|\([^()]*\))*\)\s+")  # Ray's "(RayTrainWorker pid=12, ip=...) " prefix
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_SPLIT = re.compile(rb"(\r\n|\r|\n)")

_STACK: list[Console] = []
_LAST_LOG: list[Path] = []
_LOGGED: set[int] = set()  # errors whose traceback a console wrote


def current() -> Console | None:
    """The console this process is writing through, if one is open."""
    return _STACK[-1] if _STACK else None


def say(message: str) -> None:
    """A line of lume-ray's: on the terminal (and in the log) when a console is open, else printed."""
    con = current()
    if con is not None:
        con.say(message)
    else:
        print(message, flush=True)


def error_hint(error: BaseException | None = None) -> str:
    """" (details: OUT/logs/lume-ray.log)" after a command that wrote a log, else ""; ``error``'s traceback is
    appended to that log unless it passed through the console already."""
    if not _LAST_LOG:
        return ""
    if error is not None and id(error) not in _LOGGED:
        with _LAST_LOG[-1].open("a") as f:
            f.write("".join(traceback.format_exception(type(error), error, error.__traceback__)))
    return f" (details: {_LAST_LOG[-1]})"


def plain(line: str) -> str:
    """A log line without Ray's process prefix and colour codes."""
    return _PREFIX.sub("", _ANSI.sub("", line)).strip()


@dataclass
class Passthrough:
    """Lines of a command's own output (which goes to the log with everything else) that the terminal shows.

    ``show``: shown as they are. ``progress``: a progress line with groups ``n`` and ``total`` (or ``pct``): on
    a terminal it replaces the previous one in place; elsewhere one in ten is shown, and the last."""

    show: re.Pattern[str] | None = None
    progress: re.Pattern[str] | None = None
    shown_decile: int = field(default=-1, init=False)


# What each command shows of its own output (the rest is in the log).
STUDY = Passthrough(show=re.compile(r"^target: "), progress=re.compile(r"^memorizing:\s+(?P<pct>\d+)%"))
UNLEARN = Passthrough(show=re.compile(r"^\[unlearn\] (?!step )"),
                      progress=re.compile(r"^\[unlearn\] step (?P<n>\d+)/(?P<total>\d+)"))
EVAL = Passthrough(show=re.compile(r"^eval: "), progress=re.compile(r"^eval:\s+(?P<pct>\d+)%\|"))


class Console:
    """One command's quiet console (use :func:`quiet`)."""

    def __init__(self, log_dir: str | os.PathLike[str], *, verbose: bool = False,
                 passthrough: Passthrough | None = None, to_stderr: bool = False) -> None:
        self.log_dir = Path(log_dir)
        self.to_stderr = to_stderr  # the console's lines on stderr (stdout is the command's data, e.g. --json)
        self.log_path = self.log_dir / LOG_NAME
        self.verbose = verbose
        self.passthrough = replace(passthrough) if passthrough else Passthrough()  # its own progress state
        self.term: IO[str] = sys.stdout
        self.rich: Any = None
        self.alerts = 0
        self._seen_alerts: set[str] = set()
        self._lock = threading.RLock()
        self._live: Any = None
        self._status: Any = None  # what the live area shows: a callable returning a rich renderable
        self._progress_line: str | None = None

    # -- output -----------------------------------------------------------------------------------
    @property
    def is_terminal(self) -> bool:
        return bool(self.rich is not None and self.rich.is_terminal)

    def say(self, message: str) -> None:
        """One of lume-ray's lines: terminal and log."""
        self._to_log(message)
        self._to_terminal(message)

    def _to_log(self, message: str) -> None:
        with self._lock:
            if self._log is not None and not self._log.closed:
                self._log.write((message + "\n").encode("utf-8", "replace"))

    def _to_terminal(self, message: str) -> None:
        with self._lock:
            if self.rich is not None:
                self.rich.print(message, markup=False, highlight=False, emoji=False, soft_wrap=True)
            else:
                self.term.write(message + "\n")
                self.term.flush()

    def show(self, render: Callable[[], Any] | None) -> None:
        """Keep ``render()`` (a rich renderable) in a live area under the lines, refreshed twice a second; on
        something that is not a terminal (a file, a pipe, a Ray job's log) nothing is drawn. ``None`` ends it."""
        with self._lock:
            self._status = render
            if render is None:
                if self._live is not None:
                    self._live.stop()
                    self._live = None
                return
            if self._live is None and self.is_terminal:
                from rich.live import Live

                self._live = Live(console=self.rich, get_renderable=self._render, refresh_per_second=2,
                                  redirect_stdout=False, redirect_stderr=False, transient=True)
                self._live.start()

    def _render(self) -> Any:
        from rich.text import Text

        try:
            return self._status() if self._status is not None else Text("")
        except Exception as e:  # a view must never take the sweep down
            return Text(f"(view: {type(e).__name__}: {e})")

    # -- the redirection --------------------------------------------------------------------------
    _log: Any = None

    def __enter__(self) -> Console:
        from rich.console import Console as RichConsole

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab", buffering=0)  # noqa: SIM115  (closed by the reader thread)
        self._log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}: "
                        f"{' '.join(sys.argv)}\n".encode())
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        self._saved_sys = (sys.stdout, sys.stderr)
        stream = sys.stderr if self.to_stderr else sys.stdout
        try:
            self.term = open(os.dup(stream.fileno()), "w", buffering=1, encoding="utf-8",  # noqa: SIM115
                             errors="replace")
            self._owns_term = True
        except (AttributeError, OSError, ValueError):  # a stream without a file descriptor (a notebook, capsys)
            self.term, self._owns_term = stream, False
        self.rich = RichConsole(file=self.term, soft_wrap=True, highlight=False)
        self._saved_fds = (os.dup(1), os.dup(2))
        read, write = os.pipe()
        os.dup2(write, 1)
        os.dup2(write, 2)
        os.close(write)
        self._reader = threading.Thread(target=self._pump, args=(read,), name="lume-ray-console", daemon=True)
        self._reader.start()
        sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)  # noqa: SIM115
        self._handlers = _retarget_handlers({id(s) for s in (*self._saved_sys, sys.__stdout__, sys.__stderr__)},
                                            sys.stderr)
        _STACK.append(self)
        self.say(f"logs: {self.log_dir}/" + (" (also shown here: --verbose)" if self.verbose else ""))
        return self

    def __exit__(self, kind: Any, error: BaseException | None, tb: Any) -> None:
        self.show(None)
        if error is not None and not isinstance(error, KeyboardInterrupt | SystemExit):
            self._to_log("".join(traceback.format_exception(kind, error, tb)).rstrip())
            _LOGGED.add(id(error))
        for stream in (sys.stdout, sys.stderr):
            with suppress(OSError, ValueError):
                stream.flush()
        for handler, stream in self._handlers:
            handler.setStream(stream)
        redirected = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = self._saved_sys
        for stream in redirected:
            stream.close()
        for fd, saved in zip((1, 2), self._saved_fds, strict=True):
            os.dup2(saved, fd)
            os.close(saved)
        # The pipe's last write ends are gone (unless a child process still holds one): the reader ends.
        self._reader.join(timeout=5)
        if self._owns_term:
            self.term.flush()
            self.term.close()
        self.rich = None
        self.term = sys.stdout
        if self in _STACK:
            _STACK.remove(self)
        _LAST_LOG.append(self.log_path)

    def _pump(self, read: int) -> None:
        """The reader thread: every byte to the log; the lines the terminal should see, to the terminal."""
        pending = b""
        try:
            while True:
                try:
                    chunk = os.read(read, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                with self._lock:
                    self._log.write(chunk)
                parts = _SPLIT.split(pending + chunk)
                pending = parts.pop()  # the incomplete tail
                for text, sep in zip(parts[::2], parts[1::2], strict=True):
                    self._inspect(text.decode("utf-8", "replace"), transient=sep == b"\r")
            if pending:
                self._inspect(pending.decode("utf-8", "replace"), transient=False)
        finally:
            os.close(read)
            with self._lock:
                self._log.close()

    def _inspect(self, raw: str, *, transient: bool) -> None:
        line = plain(raw)
        if not line:
            return
        rule = self.passthrough
        if rule.progress is not None and (m := rule.progress.search(line)):
            self._progress(line, m)
            return
        if self.verbose:
            if not transient:
                self._to_terminal(raw.rstrip())
            return
        if rule.show is not None and rule.show.search(line):
            self._to_terminal(line)
        elif (not raw[:1].isspace() and ALERTS.search(line) and not NOT_ALERTS.search(line)
              and line not in self._seen_alerts):
            self._seen_alerts.add(line)
            self.alerts += 1
            if self.alerts <= MAX_ALERTS:
                self._to_terminal(f"[ray] {line[:300]}")
            elif self.alerts == MAX_ALERTS + 1:
                self._to_terminal(f"[ray] more warnings in {self.log_path}")

    def _progress(self, line: str, m: re.Match[str]) -> None:
        end = line.find("]", m.end())  # a tqdm bar ends at its [elapsed<left, rate]; a log line may stick to it
        line = line[:end + 1] if end >= 0 else line
        groups = m.groupdict()
        if groups.get("pct") is not None:
            fraction = float(groups["pct"]) / 100
        elif groups.get("n") is not None and groups.get("total"):
            fraction = int(groups["n"]) / max(1, int(groups["total"]))
        else:
            fraction = 0.0
        if self.is_terminal:
            self._progress_line = line
            if fraction >= 1.0:
                if self._status == self._progress_text:
                    self.show(None)
                self._to_terminal(line)
            elif self._status is None:
                self.show(self._progress_text)
            return
        decile = int(fraction * 10)
        rule = self.passthrough
        if decile > rule.shown_decile:
            rule.shown_decile = decile
            self._to_terminal(line)

    def _progress_text(self) -> Any:
        from rich.text import Text

        return Text(self._progress_line or "")


# Loggers whose stream handlers always write into the console's pipe, whatever stream they were made with
# (Ray's handler keeps the stderr of the moment Ray was imported).
LIBRARY_LOGGERS = ("ray", "optuna", "deepspeed", "DeepSpeed", "torch", "transformers", "mlflow", "alembic",
                   "filelock", "urllib3", "py.warnings")


def _retarget_handlers(old: set[int], new: IO[str]) -> list[tuple[logging.StreamHandler[Any], Any]]:
    """Point the stream handlers of the libraries' loggers, and every other one that writes to one of the ``old``
    streams, at ``new``; returns what to restore."""
    loggers: list[Any] = [logging.getLogger(),
                          *(lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger))]
    changed: dict[int, tuple[logging.StreamHandler[Any], Any]] = {}
    for lg in loggers:
        library = lg.name.split(".")[0] in LIBRARY_LOGGERS
        for h in lg.handlers:
            if id(h) in changed or not isinstance(h, logging.StreamHandler) or isinstance(h, logging.FileHandler):
                continue
            own = type(h).__module__.split(".")[0] in ("logging", *LIBRARY_LOGGERS)  # not a test runner's
            if (library and own) or id(h.stream) in old:
                changed[id(h)] = (h, h.stream)
                h.setStream(new)
    return list(changed.values())


@contextmanager
def quiet(log_dir: str | os.PathLike[str], *, verbose: bool = False, passthrough: Passthrough | None = None,
          to_stderr: bool = False) -> Iterator[Console]:
    """Open a :class:`Console` for the ``with`` block: everything into ``log_dir/lume-ray.log``."""
    with Console(log_dir, verbose=verbose, passthrough=passthrough, to_stderr=to_stderr) as con:
        yield con


# -------------------------------------------------------------------------------------------------------
# The sweep's events: a relay that survives Tune's pickling, and the live view.

_LISTENERS: list[Callback] = []


class Relay(Callback):
    """Forwards Tune's events to the callbacks the running sweep registered with :func:`relay`.

    Tune pickles the run config's callbacks into the experiment directory, and ``Tuner.restore`` brings back
    those pickled objects (it takes no new callbacks). This relay holds no state, so a resumed sweep gets the
    live view and the tracking of the command that resumed it, not of the one that started it."""

    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        for cb in list(_LISTENERS):
            cb.setup(stop=stop, num_samples=num_samples, total_num_samples=total_num_samples, **info)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        for cb in list(_LISTENERS):
            cb.on_trial_start(iteration=iteration, trials=trials, trial=trial, **info)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        for cb in list(_LISTENERS):
            cb.on_trial_result(iteration=iteration, trials=trials, trial=trial, result=result, **info)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        for cb in list(_LISTENERS):
            cb.on_trial_complete(iteration=iteration, trials=trials, trial=trial, **info)

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        for cb in list(_LISTENERS):
            cb.on_trial_recover(iteration=iteration, trials=trials, trial=trial, **info)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        for cb in list(_LISTENERS):
            cb.on_trial_error(iteration=iteration, trials=trials, trial=trial, **info)

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        for cb in list(_LISTENERS):
            cb.on_experiment_end(trials=trials, **info)


@contextmanager
def relay(callbacks: Sequence[Callback]) -> Iterator[Relay]:
    """Register ``callbacks`` for the ``with`` block; yields the :class:`Relay` to give Tune."""
    _LISTENERS[:] = list(callbacks)
    try:
        yield Relay()
    finally:
        _LISTENERS.clear()


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


@dataclass
class _Algo:
    planned: int = 0
    done: int = 0
    failed: int = 0
    stopped: int = 0  # of done: ended by early stopping at a rung
    running: set[str] = field(default_factory=set)
    best: dict[str, tuple[float, int, str]] = field(default_factory=dict)  # objective -> (value, step, trial)


class SweepView(Callback):
    """The sweep's console: per algorithm trials done / running / failed and the best point so far on each
    objective, elapsed time and ETA (a live table on a terminal; a progress line after each trial elsewhere),
    and one line per trial that ends."""

    def __init__(self, exp: Any, run_dir: Any, planned: Mapping[str, int],
                 log: Callable[[str], None] = say) -> None:
        from lume_ray.evaluate.metrics import direction

        self.name = exp.name
        self.objectives = list(exp.sweep.objectives)
        self.sign = {o: 1.0 if direction(o) == "max" else -1.0 for o in self.objectives}
        self.rd = run_dir
        self.log = log
        self.algos = {a: _Algo(planned=int(planned.get(a, 0))) for a in exp.selected_algorithms()}
        self.t0 = time.time()
        self.ended_here = 0  # trials that ended in this session (the ETA's rate)
        self.last_ok: dict[str, dict[str, Any]] = {}

    # -- state ----------------------------------------------------------------------------------
    def _algo(self, trial: Any) -> tuple[str, _Algo]:
        name = str(trial.config.get("algorithm", "?"))
        return name, self.algos.setdefault(name, _Algo())

    def _offer(self, algo: _Algo, metrics: Mapping[str, Any], step: int, trial_id: str) -> None:
        for o in self.objectives:
            v = metrics.get(o)
            if isinstance(v, int | float) and not isinstance(v, bool) and v == v and (
                    o not in algo.best or self.sign[o] * v > self.sign[o] * algo.best[o][0]):
                algo.best[o] = (float(v), step, trial_id)

    @property
    def planned(self) -> int:
        return sum(a.planned for a in self.algos.values())

    @property
    def done(self) -> int:
        return sum(a.done + a.failed for a in self.algos.values())

    def eta(self) -> float | None:
        left = self.planned - self.done
        if not self.ended_here or left <= 0:
            return None
        return (time.time() - self.t0) / self.ended_here * left

    # -- Tune's events --------------------------------------------------------------------------
    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        """Counts what an earlier session of this sweep finished (a resume), then starts the live view."""
        self.t0 = time.time()
        for rec in self.rd.trial_records():
            algo = self.algos.setdefault(rec["algorithm"], _Algo())
            if rec.get("status") == "failed":
                algo.failed += 1
            elif rec.get("status") != "running":
                algo.done += 1
                algo.stopped += rec.get("status") == "stopped"
            for step, metrics in self.rd.point_metrics(rec["trial_id"]).items():
                self._offer(algo, metrics, step, rec["trial_id"])
        con = current()
        if con is not None:
            con.show(self.render)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._algo(trial)[1].running.add(trial.trial_id)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any],
                        **info: Any) -> None:
        _, algo = self._algo(trial)
        algo.running.add(trial.trial_id)
        if result.get("status") == "ok":
            self.last_ok[trial.trial_id] = dict(result)
            self._offer(algo, result, int(result.get("step", 0)), trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        name, algo = self._algo(trial)
        algo.running.discard(trial.trial_id)
        algo.done += 1
        self.ended_here += 1
        last = trial.last_result or {}
        status = str(last.get("status") or "completed")
        status = "completed" if status == "ok" else status
        rec = self.rd.read_trial(trial.trial_id) or {}
        if rec.get("status") == "stopped":  # early stopping's verdict (Tune ends the trial on its last result)
            status = "stopped"
            algo.stopped += 1
        point = self.last_ok.get(trial.trial_id)
        if status == "completed" and point is not None:
            values = " ".join(f"{o} {fmt_metric(point[o])}" for o in self.objectives if o in point)
            what = f"{values} at step {point.get('step')}"
        elif status == "stopped":
            what = str(rec.get("error") or "")
        else:
            what = (rec.get("error") or last.get("error") or "") + (f" at step {last['step']}" if "step" in last else "")
        wall = last.get("wall_s")
        self.log(f"[{name}] trial {trial.trial_id} {status}: {what.strip()} ({self._hp(trial)})"
                 + (f", {wall:.0f} s" if isinstance(wall, int | float) else ""))
        self._progress_line()

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        name, _ = self._algo(trial)
        self.log(f"[{name}] trial {trial.trial_id} failed ({self._reason(trial)}); retrying from its last "
                 "checkpoint")

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        name, algo = self._algo(trial)
        algo.running.discard(trial.trial_id)
        algo.failed += 1
        self.ended_here += 1
        con = current()
        where = getattr(trial, "error_file", None) or (con.log_path if con is not None else self.rd.logs)
        self.log(f"[{name}] trial {trial.trial_id} FAILED: {self._reason(trial)} ({self._hp(trial)}); log: {where}")
        self._progress_line()

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        con = current()
        if con is not None:
            con.show(None)
        failed = sum(a.failed for a in self.algos.values())
        stopped = sum(a.stopped for a in self.algos.values())
        self.log(f"[sweep] {self.done}/{self.planned} trials ended ({failed} failed"
                 + (f", {stopped} stopped early at a rung" if stopped else "") + f") in "
                 f"{duration(time.time() - self.t0)}")

    # -- lines ----------------------------------------------------------------------------------
    def _reason(self, trial: Any) -> str:
        rec = self.rd.read_trial(trial.trial_id) or {}
        if rec.get("error"):
            return str(rec["error"])
        path = getattr(trial, "error_file", None)
        if path and Path(path).is_file():
            lines = [ln for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
            return lines[-1][:300] if lines else "unknown error"
        return "unknown error"

    @staticmethod
    def _hp(trial: Any) -> str:
        return ", ".join(f"{k} {fmt_param(v)}" for k, v in trial.config.items() if k not in ("algorithm", "origin"))

    def _progress_line(self) -> None:
        con = current()
        if con is not None and con.is_terminal:
            return  # the live table says it
        running = sum(len(a.running) for a in self.algos.values())
        failed = sum(a.failed for a in self.algos.values())
        per_algo = ", ".join(f"{n} {a.done + a.failed}/{a.planned}" for n, a in self.algos.items())
        eta = self.eta()
        self.log(f"[sweep] {self.done}/{self.planned} trials done ({per_algo}), {running} running, {failed} failed; "
                 f"{duration(time.time() - self.t0)} elapsed" + (f", ETA ~{duration(eta)}" if eta else ""))

    def render(self) -> Any:
        """The live table."""
        from rich.table import Table

        eta = self.eta()
        title = (f"sweep {self.name}: {self.done}/{self.planned} trials, {duration(time.time() - self.t0)} elapsed"
                 + (f", ETA ~{duration(eta)}" if eta else "") + "; best so far: value @step")
        table = Table(title=title, title_justify="left", box=None, pad_edge=False)
        for col in ("algorithm", "done", "running", "failed", "planned"):
            table.add_column(col, justify="left" if col == "algorithm" else "right")
        for o in self.objectives:
            table.add_column(o, justify="right", overflow="fold")
        for name, a in self.algos.items():
            best = [f"{fmt_metric(a.best[o][0])} @{a.best[o][1]}" if o in a.best else "-" for o in self.objectives]
            table.add_row(name, str(a.done), str(len(a.running)), str(a.failed), str(a.planned), *best)
        return table
