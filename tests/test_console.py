"""The quiet console: lume-ray's lines on the terminal, everything else in OUT/logs/lume-ray.log.

Fast tests drive :class:`lume_ray.console.Console` with the kinds of output Ray and its libraries produce (C-level
writes to the file descriptors, prints, ``logging``, Ray's "(raylet)" lines) and the sweep's view with hand-made
trials. The real CLI's console (a tiny sweep in a subprocess, interrupted and resumed) is read in
test_tracking.py::test_cli_sweep_interrupted_and_resumed, with the patterns below.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from lume_ray.console import EVAL, Console, plain, quiet, say
from lume_ray.run_dir import RunDir
from lume_ray.search.view import Relay, SweepView, relay

OOM = ("(raylet) Task was killed due to the node running low on memory. Memory on the node (IP: 127.0.0.1) where the "
       "task was running was 7.5GB / 7.8GB (0.96), which exceeds the memory usage threshold of 0.95.")
STOP = ("WARNING tune.py:219 -- Stop signal received (e.g. via SIGINT/Ctrl+C), ending Ray Tune run. This will try to "
        "checkpoint the experiment state one last time. Press CTRL+C (or send SIGINT/SIGKILL/SIGTERM) to skip.")
NOISE = "(raylet) WARNING: 8 PYTHON worker processes have been started on node: 19bc with address: 127.0.0.1"


def _emit_library_output() -> None:
    print("a library's print")
    os.write(1, b"C-level stdout line\n")
    os.write(2, b"C-level stderr line\n")
    logging.getLogger("ray.tune").warning("Tune says something")
    logging.getLogger("optuna").warning("A new study created in memory with name: x")
    print(NOISE)
    print(STOP)  # names SIGKILL, but is Tune's answer to the user's Ctrl-C: not an alert
    print(OOM)
    print(OOM)  # the same warning twice is shown once
    sys.stderr.write("eval:  50%|#####     | 5/10\r")
    sys.stderr.flush()


def test_quiet_console_shows_our_lines_and_real_warnings_only(capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    handler = logging.StreamHandler(sys.stderr)  # a handler made before the console, like Ray's and Optuna's
    logging.getLogger("optuna").addHandler(handler)
    try:
        with quiet(tmp_path / "logs") as con:
            say("[sweep] ours")
            _emit_library_output()
            say("[sweep] ours again")
        assert con.alerts == 1
    finally:
        logging.getLogger("optuna").removeHandler(handler)
    out, err = capfd.readouterr()
    lines = out.splitlines()
    assert lines == [f"logs: {tmp_path / 'logs'}/", "[sweep] ours", f"[ray] {plain(OOM)}", "[sweep] ours again"] or \
        sorted(lines) == sorted([f"logs: {tmp_path / 'logs'}/", "[sweep] ours", f"[ray] {plain(OOM)}",
                                 "[sweep] ours again"]), out  # the reader thread may show the alert a bit later
    assert err == ""
    log = (tmp_path / "logs" / "lume-ray.log").read_text()
    for text in ("a library's print", "C-level stdout line", "C-level stderr line", "Tune says something",
                 "A new study created in memory", NOISE, "[sweep] ours", "eval:  50%"):
        assert text in log, text
    # Afterwards the process writes where it did before.
    print("after")
    assert capfd.readouterr().out == "after\n"


def test_verbose_shows_everything(capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with quiet(tmp_path / "logs", verbose=True):
        _emit_library_output()
    out = capfd.readouterr().out
    for text in ("a library's print", "C-level stderr line", "Tune says something", NOISE):
        assert text in out, out
    assert "C-level stdout line" in (tmp_path / "logs" / "lume-ray.log").read_text()


def test_progress_lines_of_a_command_are_thinned_off_a_terminal(capfd: pytest.CaptureFixture[str],
                                                                tmp_path: Path) -> None:
    with quiet(tmp_path / "logs", passthrough=EVAL):
        print("eval: 40 items -> 1 model actor(s)")
        for i in range(0, 101, 5):
            sys.stderr.write(f"\reval: {i:3d}%|###| {i}/100 [00:01<00:02, 1.3item/s]")
            if i == 0:  # a log line written right after a bar, on the same line
                sys.stderr.write("2026-01-01 10:00:00,000 INFO streaming_executor.py:215 -- Starting execution\n")
        sys.stderr.write("\n")
        sys.stderr.flush()
    lines = capfd.readouterr().out.splitlines()[1:]
    assert lines[0] == "eval: 40 items -> 1 model actor(s)"
    shown = [int(m.group(1)) for ln in lines[1:] if (m := re.match(r"eval:\s+(\d+)%", ln))]
    assert shown == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100], lines
    assert not any("INFO" in ln for ln in lines), lines


def test_an_error_inside_the_console_goes_to_the_log(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    from lume_ray.console import error_hint

    with pytest.raises(RuntimeError), quiet(tmp_path / "logs"):
        raise RuntimeError("boom in a Ray actor")
    capfd.readouterr()
    assert error_hint() == f" (details: {tmp_path / 'logs' / 'lume-ray.log'})"
    assert "RuntimeError: boom in a Ray actor" in (tmp_path / "logs" / "lume-ray.log").read_text()


# -- the sweep's view -------------------------------------------------------------------------------------

def _exp(tmp_path: Path) -> object:
    return SimpleNamespace(name="test", sweep=SimpleNamespace(objectives=("forget_efficacy", "retain_score")),
                           selected_algorithms=lambda: ["ga", "gd"])


def _trial(trial_id: str, algorithm: str, **hp: object) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config={"algorithm": algorithm, "origin": "design", **hp},
                           last_result={}, error_file=None)


def test_sweep_view_lines_and_table(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "run")
    lines: list[str] = []
    view = SweepView(_exp(tmp_path), rd, {"ga": 2, "gd": 1}, log=lines.append)
    view.setup()
    ga1, gd1 = _trial("ga_0001", "ga", lr=1e-3), _trial("gd_0001", "gd", lr=5e-5, alpha=2.0)
    view.on_trial_start(0, [], ga1)
    view.on_trial_start(0, [], gd1)
    for step, fe in ((100, 0.5), (200, 0.91)):
        result = {"status": "ok", "step": step, "forget_efficacy": fe, "retain_score": 0.7, "wall_s": 41.2}
        ga1.last_result = result
        view.on_trial_result(0, [], ga1, result)
    view.on_trial_complete(0, [], ga1)
    rd.write_trial("gd_0001", {"trial_id": "gd_0001", "algorithm": "gd", "hp": {}, "status": "failed",
                               "error": "TrialFailed: a worker died"})
    view.on_trial_error(0, [], gd1)
    assert lines[0] == "[ga] trial ga_0001 completed: forget_efficacy 0.91 retain_score 0.70 at step 200 (lr 1e-3), 41 s"
    assert lines[1].startswith("[sweep] 1/3 trials done (ga 1/2, gd 0/1), 1 running, 0 failed;")
    assert lines[2].startswith("[gd] trial gd_0001 FAILED: TrialFailed: a worker died (lr 5e-5, alpha 2); log: ")
    assert "ETA ~" in lines[3]
    assert view.algos["ga"].best["forget_efficacy"] == (0.91, 200, "ga_0001")
    from rich.console import Console as RichConsole

    rich = RichConsole(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    rich.print(view.render())
    table = rich.export_text()
    assert "sweep test: 2/3 trials" in table and "0.91 @200" in table, table


def test_sweep_view_says_a_trial_early_stopping_ended_was_stopped(tmp_path: Path) -> None:
    # Tune ends a stopped trial on its last result, status "ok": the line must not call it completed
    rd = RunDir(tmp_path / "run")
    lines: list[str] = []
    view = SweepView(_exp(tmp_path), rd, {"ga": 2, "gd": 1}, log=lines.append)
    view.setup()
    ga2 = _trial("ga_0002", "ga", lr=1e-2)
    view.on_trial_start(0, [], ga2)
    ga2.last_result = {"status": "ok", "step": 50, "forget_efficacy": 0.4, "retain_score": 0.2, "wall_s": 12.0}
    view.on_trial_result(0, [], ga2, ga2.last_result)
    rd.write_trial("ga_0002", {"trial_id": "ga_0002", "algorithm": "ga", "hp": {}, "status": "stopped",
                               "error": "stopped at rung 50: position 3 of 3 points (keeping 1)"})
    view.on_trial_complete(0, [], ga2)
    assert lines[0] == "[ga] trial ga_0002 stopped: stopped at rung 50: position 3 of 3 points (keeping 1) (lr 0.01), 12 s"
    view.on_experiment_end([])
    assert "trials ended (0 failed, 1 stopped early at a rung) in" in lines[-1]


def test_sweep_view_counts_what_an_earlier_session_finished(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "run")
    rd.write_trial("ga_0001", {"trial_id": "ga_0001", "algorithm": "ga", "hp": {"lr": 1e-3}, "status": "completed"})
    rd.write_trial("ga_0002", {"trial_id": "ga_0002", "algorithm": "ga", "hp": {"lr": 1e-4}, "status": "running"})
    (rd.point("ga_0001", 4)).mkdir(parents=True)
    (rd.point("ga_0001", 4) / "metrics.json").write_text('{"forget_efficacy": 0.8, "retain_score": 0.6}')
    view = SweepView(_exp(tmp_path), rd, {"ga": 2, "gd": 1}, log=lambda line: None)
    view.setup()
    assert (view.algos["ga"].done, view.algos["ga"].failed, view.done) == (1, 0, 1)
    assert view.algos["ga"].best["retain_score"] == (0.6, 4, "ga_0001")


def test_relay_pickles_empty_and_forwards_to_the_current_listeners() -> None:
    seen: list[str] = []

    class Listener(SweepView):
        def __init__(self) -> None:
            pass

        def on_trial_start(self, iteration: int, trials: list, trial: object, **info: object) -> None:
            seen.append(trial.trial_id)  # type: ignore[attr-defined]

    old = pickle.loads(pickle.dumps(Relay()))  # what a restored Tuner brings back
    with relay([Listener()]) as hooks:
        assert isinstance(hooks, Relay)
        old.on_trial_start(iteration=0, trials=[], trial=SimpleNamespace(trial_id="t1"))
    old.on_trial_start(iteration=0, trials=[], trial=SimpleNamespace(trial_id="t2"))  # nobody listens any more
    assert seen == ["t1"]


def test_console_without_a_file_descriptor_writes_to_the_given_stdout(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with Console(tmp_path / "logs") as con:
        print("library")
        con.say("ours")
    assert capsys.readouterr().out.splitlines()[-1] == "ours"


# -- the CLI ----------------------------------------------------------------------------------------------

def test_sweep_out_is_output_dir(tmp_path: Path) -> None:
    """`lume-ray sweep EXP --out DIR` and `--set output_dir=DIR` give the same RUN_DIR."""
    from lume_ray.cli import _experiment, build_parser

    exp_file = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"
    out = str(tmp_path / "run")
    a = _experiment(build_parser().parse_args(["sweep", str(exp_file), "--out", out]), exp_file).resolved()
    b = _experiment(build_parser().parse_args(["sweep", str(exp_file), "--set", f"output_dir={out}"]),
                    exp_file).resolved()
    assert a.output_dir == b.output_dir == str(Path(out).resolve())
    assert a.dump() == b.dump()


def test_mlflow_flag_turns_tracking_on(tmp_path: Path) -> None:
    from lume_ray.cli import _experiment, build_parser

    exp_file = Path(__file__).resolve().parents[1] / "experiments" / "quickstart.yaml"
    plain_run = _experiment(build_parser().parse_args(["sweep", str(exp_file)]), exp_file)
    local = _experiment(build_parser().parse_args(["sweep", str(exp_file), "--mlflow"]), exp_file)
    server = _experiment(build_parser().parse_args(["sweep", str(exp_file), "--mlflow", "http://mlflow:5000"]),
                         exp_file)
    assert plain_run.tracking.mlflow is None
    assert local.tracking.mlflow is not None and local.tracking.mlflow.uri is None
    assert server.tracking.mlflow is not None and server.tracking.mlflow.uri == "http://mlflow:5000"
