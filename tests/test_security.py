"""Security guarantees (README, Security): what `lume-ray submit` uploads, experiment names, the searcher's state
without pickle, credentials redacted wherever they are written or shown, the Ray token only over https or to the
loopback, and the local head's token authentication."""

from __future__ import annotations

import json
import os
import pickletools
import secrets
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pathspec
import pytest
import yaml

from lume_ray import cli, console
from lume_ray.cluster import ClusterError, jobs, upload
from lume_ray.cluster.auth import headers_for, is_loopback
from lume_ray.config import ConfigError, experiment_from_dict, load_experiment
from lume_ray.redact import redact_secrets
from lume_ray.run_dir import RunDir
from lume_ray.search.searcher import StudySearcher

ROOT = Path(__file__).resolve().parents[1]
SECRETS = [".env", ".env.prod", ".ssh/id_rsa", ".aws/credentials", ".ray/auth_token", "x.pem", "x.key", ".netrc",
           ".git-credentials", ".docker/config.json", "data/.env.local", "data/server.key"]
EXPERIMENT = """\
name: homey
data: {path: data}
target: {model: allenai/OLMo-1B-hf}
algorithms: {ga: {lr: 1.0e-5, steps: 10}}
"""


def home_like(tmp_path: Path) -> Path:
    """A home directory: secrets, unrelated files, the experiment and the data it names."""
    home = tmp_path / "home"
    for rel in [*SECRETS, "notes.txt", "other/project.py", "data/forget.jsonl", "data/sub/retain.jsonl"]:
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text(f"content of {rel}\n")
    (home / "exp.yaml").write_text(EXPERIMENT)
    return home


# -- 1. what `lume-ray submit` uploads --------------------------------------------------------------


def test_submit_outside_a_project_uploads_the_experiment_and_its_files_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    home = home_like(tmp_path)
    monkeypatch.chdir(home)
    sub = jobs.build_submission("exp.yaml")
    try:
        staged = Path(sub.runtime_env["working_dir"])
        assert staged != home and stat.S_IMODE(staged.stat().st_mode) == 0o700  # a private copy
        shipped = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
        assert shipped == ["data/forget.jsonl", "data/sub/retain.jsonl", "exp.yaml"]
        assert sub.upload is not None and sub.upload.files == shipped
    finally:
        sub.cleanup()
    assert not staged.exists()

    # The command prints what it uploads (file count, size) before it connects; nothing of the secrets.
    monkeypatch.delenv("LUME_RAY_DEBUG", raising=False)
    before = set(Path("/tmp").glob("lume-ray-submit-*"))
    assert cli.main(["submit", "exp.yaml", "--address", "http://127.0.0.1:1"]) == 2  # nothing listens there
    out = capsys.readouterr()
    assert "[submit] working directory: 3 file(s), " in out.out and "the experiment and the files it names" in out.out
    assert "cannot reach the Ray dashboard" in out.err
    assert not any(name in out.out for name in (".ssh", ".aws", ".env", "pem", ".key", "notes.txt"))
    assert set(Path("/tmp").glob("lume-ray-submit-*")) == before  # the private copy is gone


def test_secrets_are_never_uploaded_from_a_named_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = home_like(tmp_path)
    monkeypatch.chdir(tmp_path)
    sub = jobs.build_submission(home / "exp.yaml", root=home)  # --working-dir HOME: the whole directory, but
    assert sub.upload is not None and sub.upload.mode == "explicit"
    assert sorted(sub.upload.files) == ["data/forget.jsonl", "data/sub/retain.jsonl", "exp.yaml", "notes.txt",
                                        "other/project.py"]
    # Ray applies the excludes itself, with pathspec's gitwildmatch: every secret is matched, nothing else.
    spec = pathspec.PathSpec.from_lines("gitwildmatch", sub.runtime_env["excludes"])
    assert all(spec.match_file(rel) for rel in SECRETS)
    assert not any(spec.match_file(rel) for rel in sub.upload.files)


def test_an_upload_over_the_limit_is_refused_unless_the_directory_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    home = home_like(tmp_path)
    monkeypatch.chdir(home)
    monkeypatch.setattr(upload, "MAX_UPLOAD_BYTES", 64)
    monkeypatch.delenv("LUME_RAY_DEBUG", raising=False)
    assert cli.main(["submit", "exp.yaml", "--address", "http://127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lume-ray: error: the upload for the job would be") and "--working-dir DIR" in err
    assert len(err.splitlines()) == 1
    sub = jobs.build_submission("exp.yaml", root=home)  # named explicitly: no limit
    assert sub.upload is not None and sub.upload.size > 64


def test_a_project_checkout_is_uploaded_without_its_secrets(tmp_path: Path) -> None:
    sub = jobs.build_submission(ROOT / "experiments" / "quickstart.yaml")
    assert sub.upload is not None and sub.upload.mode == "project" and sub.runtime_env["working_dir"] == str(ROOT)
    assert "lume_ray/cli.py" in sub.upload.files and not any(f.startswith((".git/", ".venv/")) for f in sub.upload.files)
    spec = pathspec.PathSpec.from_lines("gitwildmatch", sub.runtime_env["excludes"])
    assert all(spec.match_file(rel) for rel in SECRETS)


# -- 2. experiment names ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", "two words", ""])
def test_an_experiment_name_is_one_safe_path_component(name: str, tmp_path: Path) -> None:
    raw = {"name": name, "algorithms": {"ga": {"lr": 1e-5, "steps": 10}}}
    with pytest.raises(ConfigError) as e:
        experiment_from_dict(raw, "exp.yaml")
    assert len(str(e.value).splitlines()) == 1 and str(e.value).startswith("exp.yaml: name:")
    assert experiment_from_dict({**raw, "name": "lume-1b_v2.1"}).output_dir == "runs/lume-1b_v2.1"


def test_a_bad_name_from_the_command_line_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "exp.yaml").write_text(EXPERIMENT)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LUME_RAY_DEBUG", raising=False)
    assert cli.main(["sweep", "exp.yaml", "--set", "name=../../escaped"]) == 2
    assert "name: '../../escaped'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp.yaml"]


# -- 3. the searcher's state -----------------------------------------------------------------------


def search_experiment(tmp_path: Path) -> Any:
    return experiment_from_dict({
        "name": "state-test", "output_dir": str(tmp_path / "run"), "seed": 3,
        "sweep": {"sampler": "tpe", "num_samples": 4, "eval_points": 3,
                  "objectives": ["forget_efficacy", "retain_score"]},
        "algorithms": {"ga": {"lr": {"loguniform": [1e-4, 1e-2]}, "steps": {"max": 30}},
                       "gd": {"lr": {"loguniform": [1e-4, 1e-2]}, "steps": {"max": 30},
                              "alpha": {"loguniform": [1.0, 4.0]}}},
    })


def trials_of(searcher: StudySearcher) -> dict[str, list[tuple[Any, ...]]]:
    return {algo: [(t.number, t.state.name, t.params, t.values, t.user_attrs) for t in study.trials]
            for algo, study in searcher.studies.items()}


def test_the_searcher_state_is_json_and_a_restore_rebuilds_the_same_studies(tmp_path: Path) -> None:
    exp = search_experiment(tmp_path)
    searcher = StudySearcher(exp)
    for i in range(3):  # proposals, points (one trial still running), a finished trial
        searcher.suggest(f"t{i}")
        for step in (10, 20):
            searcher.on_trial_result(f"t{i}", {"step": step, "forget_efficacy": 0.1 * i + step / 100,
                                               "retain_score": 0.9 - step / 100})
    searcher.on_trial_complete("t0")
    path = tmp_path / "searcher-state-x.pkl"  # Tune's name for it
    searcher.save(str(path))
    raw = path.read_bytes()
    assert raw.startswith(b"{") and not raw.startswith(b"\x80")  # JSON, not a pickle
    with pytest.raises(ValueError):
        list(pickletools.genops(raw))  # not a pickle stream either
    source = (ROOT / "lume_ray" / "search" / "searcher.py").read_text()
    assert "import pickle" not in source and "cloudpickle" not in source

    restored = [StudySearcher(exp) for _ in range(2)]
    for r in restored:
        r.restore(str(path))
    assert trials_of(restored[0]) == trials_of(searcher)  # same trials, same numbers, states and values
    assert restored[0].state() == searcher.state()
    assert restored[0].started == searcher.started and restored[0].assigned.keys() == searcher.assigned.keys()
    # a restored running trial gets its config back and is closed as before; new trials are deterministic
    assert restored[0].suggest("t1") == searcher.suggest("t1")
    restored[0].on_trial_complete("t1")
    assert restored[0].studies["gd" if searcher.assigned["t1"].algorithm == "gd" else "ga"].trials[
        searcher.assigned["t1"].number].state.name == "FAIL"
    assert restored[0].suggest("t9") == restored[1].suggest("t9")

    path.write_bytes(b"\x80\x04K\x01.")  # a pickle planted in the run directory is refused, never loaded
    with pytest.raises(ValueError, match="not a lume-ray searcher state"):
        StudySearcher(exp).restore(str(path))


def test_a_new_run_dir_is_private(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "run")
    rd.write_study({"name": "x"}, {"name": "x"})
    assert stat.S_IMODE(rd.root.stat().st_mode) == 0o700


# -- 4. credentials redacted -----------------------------------------------------------------------


PASSWORD, TOKEN = "s3cr3t-pw", "tok-" + "9" * 12
CRED_URI = f"https://alice:{PASSWORD}@mlflow.example:5000/?access_token={TOKEN}"


def test_redaction_covers_passwords_query_tokens_and_bearer_headers() -> None:
    assert redact_secrets(CRED_URI) == "https://alice:***@mlflow.example:5000/?access_token=***"
    assert redact_secrets("https://h/x?a=1&token=abc&b=2") == "https://h/x?a=1&token=***&b=2"
    assert redact_secrets("Authorization: Bearer abc.def") == "Authorization: Bearer ***"
    for plain in ("sqlite:////tmp/x/mlflow.db", "https://user@host/x", "runs/quickstart", "https://h/?monkey=1"):
        assert redact_secrets(plain) == plain


def test_credentials_are_not_written_to_experiment_yaml_or_tracking_json(tmp_path: Path) -> None:
    from lume_ray.tracking import MlflowTracker

    exp = load_experiment(ROOT / "experiments" / "quickstart.yaml",
                          [("tracking.mlflow.uri", CRED_URI), ("output_dir", str(tmp_path / "run"))])
    assert exp.tracking.mlflow is not None and exp.tracking.mlflow.uri == CRED_URI  # the real value is used
    rd = RunDir(tmp_path / "run")
    rd.write_study({"name": exp.name}, exp.dump())
    written = rd.experiment_path.read_text()
    assert PASSWORD not in written and TOKEN not in written
    assert yaml.safe_load(written)["tracking"]["mlflow"]["uri"] == redact_secrets(CRED_URI)

    tracker = MlflowTracker(exp, rd.root)
    assert tracker.uri == CRED_URI
    tracker.state = tracker._load_state()
    tracker.state["runs"] = {"t0": {"run_id": "r", "steps": [10], "ended": None}}
    tracker._save()
    saved = (rd.root / "tracking.json").read_text()
    assert PASSWORD not in saved and TOKEN not in saved and "alice:***@" in saved
    assert MlflowTracker(exp, rd.root)._load_state()["runs"] == tracker.state["runs"]  # a resume finds its runs


def test_credentials_are_not_shown_on_the_console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from lume_ray.tracking import MlflowTracker

    console.say(f"[tracking] MLflow {CRED_URI}")
    (tmp_path / "exp.yaml").write_text(EXPERIMENT)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LUME_RAY_DEBUG", raising=False)
    assert cli.main(["sweep", "exp.yaml", "--set", f"name={CRED_URI}"]) == 2  # an error that quotes the value
    # an MLflow server that cannot be reached: the error names the URI, redacted
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    exp = experiment_from_dict({**yaml.safe_load(EXPERIMENT), "output_dir": str(tmp_path / "run"),
                                "tracking": {"mlflow": {"uri": f"http://alice:{PASSWORD}@127.0.0.1:1/?token={TOKEN}"}}})
    with pytest.raises(ConfigError) as e:
        MlflowTracker(exp, tmp_path / "run").open()
    out = capsys.readouterr()
    text = out.out + out.err + str(e.value)
    assert "alice:***@" in out.out and "name: 'https://alice:***@" in out.err and "alice:***@127.0.0.1" in str(e.value)
    assert PASSWORD not in text and TOKEN not in text


def test_credentials_reach_a_submitted_job_in_its_environment_only(tmp_path: Path) -> None:
    sub = jobs.build_submission(ROOT / "experiments" / "quickstart.yaml", [
        ("tracking.mlflow.uri", f"https://alice:{PASSWORD}@mlflow.example/"),
        ("data.path", f"https://data.example/lume?token={TOKEN}")])
    shown = sub.entrypoint + json.dumps(sub.metadata)
    assert PASSWORD not in shown and TOKEN not in shown
    assert "tracking.mlflow.uri=https://mlflow.example/" in sub.entrypoint
    env = sub.runtime_env["env_vars"]
    assert env["MLFLOW_TRACKING_USERNAME"] == "alice" and env["MLFLOW_TRACKING_PASSWORD"] == PASSWORD
    # the job's shell expands the variable: the sweep gets the real value
    sets = sub.entrypoint.split("--set ", 1)[1]
    echoed = subprocess.run(["bash", "-c", f"printf '%s\\n' {sets}"], capture_output=True, text=True,
                            env={**os.environ, **env}, check=True).stdout.splitlines()
    assert f"data.path=https://data.example/lume?token={TOKEN}" in echoed


# -- 5. the Ray token only over https or to the loopback ---------------------------------------------


def test_the_token_goes_over_plain_http_to_the_loopback_only(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    token = secrets.token_hex(16)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    for host in ("127.0.0.1", "127.3.4.5", "[::1]", "localhost", "[::ffff:127.0.0.1]"):
        assert is_loopback(host.strip("[]"))
        assert headers_for(f"http://{host}:8265") == {"Authorization": f"Bearer {token}"}
    assert headers_for("https://head.example:8265") == {"Authorization": f"Bearer {token}"}
    for url in ("http://head.example:8265", "http://10.0.0.5:8265", "http://[2001:db8::1]:8265"):
        with pytest.raises(ClusterError, match="sent over https only"):
            headers_for(url)
    monkeypatch.delenv("LUME_RAY_DEBUG", raising=False)
    assert cli.main(["jobs", "list", "--address", "http://10.0.0.5:8265"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "https" in err and token not in err
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # no token: plain http to anywhere, as before
    assert headers_for("http://head.example:8265") == {}


# -- 6. the local head runs with token authentication --------------------------------------------------


def test_prepare_auth_leaves_a_chosen_mode_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from lume_ray.local_ray import prepare_auth

    assert os.environ["RAY_AUTH_MODE"] == "disabled" and prepare_auth() is None  # the suite's choice
    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.setenv("LUME_RAY_AUTH", "off")
    assert prepare_auth() is None and "RAY_AUTH_MODE" not in os.environ


AUTH_ON = textwrap.dedent("""
    import json, os, stat, subprocess, sys, urllib.error, urllib.request
    from lume_ray.local_ray import start_local, stop_local

    head = start_local(num_cpus=1)  # Ray not imported yet: token auth is prepared first
    import ray
    try:
        path = os.environ["RAY_AUTH_TOKEN_PATH"]
        out = {"mode": os.environ["RAY_AUTH_MODE"], "file": oct(stat.S_IMODE(os.stat(path).st_mode)),
               "dir": oct(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode)),
               "task": ray.get(ray.remote(lambda: 41 + 1).remote())}
        url = "http://" + head.dashboard_url
        try:
            urllib.request.urlopen(url + "/api/jobs/", timeout=30)
            out["anonymous"] = 200
        except urllib.error.HTTPError as e:
            out["anonymous"] = e.code
        def jobs_list(env):
            r = subprocess.run([sys.executable, "-m", "lume_ray.cli", "jobs", "list", "--address", url],
                               capture_output=True, text=True, env=env, timeout=120)
            return [r.returncode, r.stdout + r.stderr]
        out["with_token"] = jobs_list(dict(os.environ))
        out["without_token"] = jobs_list({k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")})
        out["token_path"] = path
        print("RESULT " + json.dumps(out), flush=True)
    finally:
        ray.shutdown()
        stop_local()
""")


@pytest.mark.ray
@pytest.mark.slow
def test_a_local_head_requires_its_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "LUME_RAY_AUTH"))}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(ROOT))  # no ~/.ray/auth_token to fall back on
    r = subprocess.run([sys.executable, "-c", AUTH_ON], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=400)
    lines = [line for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    assert r.returncode == 0 and lines, r.stderr[-3000:]
    out = json.loads(lines[0][len("RESULT "):])
    assert out["mode"] == "token" and out["file"] == "0o600" and out["dir"] == "0o700"
    assert out["task"] == 42  # this driver and the head's workers hold the token
    assert out["anonymous"] == 401  # the dashboard refuses a request without it
    # `lume-ray jobs list` with the command's token: the table (this driver is listed as a running job)
    assert out["with_token"][0] == 0 and "RUNNING" in out["with_token"][1], out["with_token"][1][-2000:]
    assert out["without_token"][0] == 2 and "requires token authentication" in out["without_token"][1]
    assert not Path(out["token_path"]).exists()  # removed with the command
    assert not (tmp_path / ".ray").exists()  # the user's own token untouched
