"""Local mode: every port Ray's processes listen on is on the loopback (the dashboard and its job server included),
and the head started for it is ours alone (stopped by pid, nothing left behind)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Any

import psutil
import pytest

from lume_ray.local_ray import SINGLE_MACHINE_ENV, is_loopback, local_head


@pytest.mark.ray
def test_local_ray_listens_on_loopback_only(ray_local: Any) -> None:
    ray = ray_local
    head = local_head()
    if head is None:
        pytest.skip("the session's Ray was not started by lume_ray.local_ray (RAY_ADDRESS or an earlier init)")

    @ray.remote(num_cpus=0)
    class Probe:
        def pid(self) -> int:
            return os.getpid()

    probe = Probe.remote()  # type: ignore[attr-defined]
    worker_pid = ray.get(probe.pid.remote())
    try:
        assert [n["NodeManagerAddress"] for n in ray.nodes()] == ["127.0.0.1"]
        # The dashboard (Ray's state API, which Train's placement-group cleaner needs) is on the loopback, port given
        host = (head.dashboard_url or "").rsplit(":", 1)[0]
        assert is_loopback(host), head.dashboard_url
        procs = [psutil.Process(p) for p in head.processes() if psutil.pid_exists(p)] + [psutil.Process()]
        names = {p.name() for p in procs}
        assert {"gcs_server", "raylet"} <= names and worker_pid in {p.pid for p in procs}
        listening = []
        for p in procs:  # the head's processes and this driver (its core worker's gRPC server)
            try:
                conns = p.net_connections(kind="inet")
            except psutil.Error:
                continue
            listening += [(p.name(), c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
        owners = {name for name, _, _ in listening}
        assert {"gcs_server", "raylet"} <= owners, listening
        assert len(listening) > 4, listening  # the dashboard's ports are among those checked
        exposed = [x for x in listening if not is_loopback(x[1])]
        assert not exposed, f"listening beyond the loopback: {exposed}"
    finally:
        ray.kill(probe)
    # The single-machine switch went to the head's environment only: this process may still start a
    # multi-node cluster (`ray start --address` refuses under the switch).
    assert SINGLE_MACHINE_ENV not in os.environ


@pytest.mark.ray
def test_start_and_stop_leave_nothing_behind(tmp_path: Any) -> None:
    # In a fresh interpreter (the session's Ray may be up here): ray_session starts a head, runs a task, stops it;
    # a second process that is SIGKILLed mid-session still takes its head down (the stdin pipe closes).
    code = f"""
import json, os, sys, time
import ray
from lume_ray.local_ray import local_head, ray_session, start_local
if sys.argv[1] == "clean":
    with ray_session(num_cpus=1, object_store_mb=100) as started:
        head = local_head()
        ray.get(ray.remote(num_cpus=0)(lambda: 1).remote())
        first = {{"started": started, "pids": head.processes(), "temp_dir": head.temp_dir}}
    assert local_head() is None
else:  # kill-me: a head left running when this process is SIGKILLed
    first = {{}}
    head = start_local(num_cpus=1, object_store_mb=100)
    first["orphan_pids"] = head.processes()
    first["orphan_temp_dir"] = head.temp_dir
    open({str(tmp_path / "out.json")!r}, "w").write(json.dumps(first))
    time.sleep(600)
open({str(tmp_path / "out.json")!r}, "w").write(json.dumps(first))
"""
    import json
    import signal
    import time

    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    run = subprocess.run([sys.executable, "-c", code, "clean"], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["started"] and len(out["pids"]) >= 3
    assert not [p for p in out["pids"] if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not os.path.exists(out["temp_dir"])

    (tmp_path / "out.json").unlink()
    proc = subprocess.Popen([sys.executable, "-c", code, "kill-me"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        while not (tmp_path / "out.json").exists():
            assert proc.poll() is None and time.monotonic() - t0 < 600
            time.sleep(0.5)
        out = json.loads((tmp_path / "out.json").read_text())
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    t0 = time.monotonic()
    left = out["orphan_pids"]
    while time.monotonic() - t0 < 120:
        left = [p for p in out["orphan_pids"] if psutil.pid_exists(p)
                and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not left:
            break
        time.sleep(1)
    assert not left, f"a SIGKILLed driver left its head's processes: {left}"
    shutil.rmtree(out["orphan_temp_dir"], ignore_errors=True)  # the one thing a SIGKILLed driver cannot remove
