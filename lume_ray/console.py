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

A sweep's live view, fed by Tune's events, is :class:`lume_ray.search.view.SweepView`; it draws through
:meth:`Console.show`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

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
        from lume_ray.redact import redact_secrets  # a password or token in a URL is never shown

        print(redact_secrets(message), flush=True)


def new_command() -> None:
    """Forget the logs of earlier commands in this process: an error's hint names only this command's log."""
    _LAST_LOG.clear()
    _LOGGED.clear()


def error_hint(error: BaseException | None = None) -> str:
    """" (details: OUT/logs/lume-ray.log)" after a command that wrote a log, else ""; ``error``'s traceback is
    appended to that log unless it passed through the console already."""
    if not _LAST_LOG:
        return ""
    if error is not None and id(error) not in _LOGGED:
        with _LAST_LOG[-1].open("a") as f:
            from lume_ray.redact import redact_secrets  # a password or token in a URL is never filed

            f.write(redact_secrets("".join(traceback.format_exception(type(error), error, error.__traceback__))))
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
        from lume_ray.redact import redact_secrets  # a password or token in a URL is never shown or filed

        message = redact_secrets(message)
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
