"""A real multi-node Ray cluster on this machine, for tests and benchmarks (not shipped in the package).

``LocalRayCluster``: ``ray start --head`` + N x ``ray start --address``, each a ``--block`` process we own by
pid, with every port explicit (several clusters, and other people's, coexist on one machine), the dashboard
and job server on 127.0.0.1, and one temp root per node. ``stop()`` ends exactly the processes it started
(never ``ray stop``: that stops every Ray on the machine).

Unlike lume_ray's own local Ray (:mod:`lume_ray.local_ray`, single-machine mode, loopback only), a multi-node
cluster cannot use Ray's single-machine mode: Ray then refuses ``ray start --address``. Its nodes take the
host's IP and their gRPC ports listen on all interfaces (the dashboard stays on 127.0.0.1).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lume_ray.local_ray import free_port, ray_cli, ray_processes


class NodeExited(RuntimeError):
    """A ``ray start`` process ended during start-up."""


def _node_ports() -> list[str]:
    # Every listening port explicit: defaults (10001, 52365, 8076 ...) collide between two nodes on one
    # machine and with other people's clusters on it.
    flags = ("--node-manager-port", "--object-manager-port", "--dashboard-agent-grpc-port",
             "--dashboard-agent-listen-port", "--metrics-export-port", "--runtime-env-agent-port")
    return [f"{f}={free_port()}" for f in flags]


class LocalRayCluster:
    """``ray start --head`` + ``workers`` x ``ray start --address`` on 127.0.0.1, each a process we hold.

    Dashboard and job server listen on 127.0.0.1 only. ``stop()`` ends exactly the processes started
    here: the ``ray start --block`` processes, their process groups, their descendants, and any
    daemon that names our private temp dir (agents that re-parent themselves), never ``ray stop``.
    """

    def __init__(self, workers: int = 1, cpus_per_node: int = 2, env: dict[str, str] | None = None,
                 head_resources: dict[str, float] | None = None, object_store_mib: int = 256,
                 timeout_s: float = 90.0) -> None:
        self.workers, self.cpus, self.timeout_s = workers, cpus_per_node, timeout_s
        self.head_resources = head_resources or {}
        self.object_store_bytes = object_store_mib * 2**20  # default is 30 % of RAM per node
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})}
        self.env.setdefault("RAY_AUTH_MODE", "disabled")
        self.env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")  # as lume_ray.local_ray's head
        # A raylet waits this long for its dashboard agent to start; the default (20 s) was measured to run
        # out on a loaded 2-core machine (the node then dies with "timed out during startup").
        self.env.setdefault("RAY_agent_register_timeout_ms", "120000")
        self.procs: list[subprocess.Popen[bytes]] = []
        # Short path: Ray's unix sockets live under it and must stay below ~107 characters.
        self.temp_dir = tempfile.mkdtemp(prefix="lr", dir="/tmp")
        self.port = free_port()
        self.dashboard_port = free_port()
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.gcs_address = f"127.0.0.1:{self.port}"
        self._pids: set[int] = set()

    def _start(self, args: list[str], tag: str) -> subprocess.Popen[bytes]:
        log = open(Path(self.temp_dir) / f"{tag}.out", "wb")  # noqa: SIM115 (lives as long as the process)
        # stdin: a pipe we hold; if this process dies (even SIGKILL), the node stops itself (lume_ray.local_ray).
        proc = subprocess.Popen([*ray_cli(stop_with_parent=True), "start", *args, "--block"], stdin=subprocess.PIPE,
                                stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.procs.append(proc)
        return proc

    def _wait_started(self, proc: subprocess.Popen[bytes], tag: str) -> None:
        out = Path(self.temp_dir) / f"{tag}.out"
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.timeout_s:
            text = out.read_text(errors="replace")
            if "Ray runtime started" in text:
                return
            if proc.poll() is not None:
                raise NodeExited(f"ray start ({tag}) exited {proc.returncode}: {text[-2000:]}")
            time.sleep(0.3)
        raise RuntimeError(f"ray start ({tag}) did not come up in {self.timeout_s:.0f} s")

    def _start_node(self, args: Callable[[], list[str]], tag: str, attempts: int = 2) -> None:
        """Start one node, once more (fresh ports, fresh log) if it exits during start-up: Ray gives a raylet a
        fixed 30 s to register, which nodes on a loaded 2-core machine were measured to miss now and then."""
        for attempt in range(1, attempts + 1):
            name = tag if attempt == 1 else f"{tag}-retry{attempt - 1}"
            proc = self._start(args(), name)
            try:
                self._wait_started(proc, name)
                return
            except NodeExited:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)  # whatever it started before giving up
                if attempt == attempts:
                    raise

    def _head_args(self, common: list[str]) -> list[str]:
        self.port, self.dashboard_port = free_port(), free_port()  # fresh on every attempt
        self.address = f"http://127.0.0.1:{self.dashboard_port}"
        self.gcs_address = f"127.0.0.1:{self.port}"
        args = [f"--port={self.port}", "--head", "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={free_port()}",
                *common, *_node_ports()]
        if self.head_resources:
            args.append(f"--resources={json.dumps(self.head_resources)}")
        return args

    def start(self) -> LocalRayCluster:
        common = ["--node-ip-address=127.0.0.1", f"--num-cpus={self.cpus}", "--num-gpus=0",
                  f"--object-store-memory={self.object_store_bytes}",
                  "--disable-usage-stats", f"--temp-dir={self.temp_dir}"]
        try:
            self._start_node(lambda: self._head_args(common), "head")
            for i in range(self.workers):
                tag = f"worker{i}"
                # Each node its own temp root, as on real machines: a shared one lets a node's runtime-env
                # agent garbage-collect the unpacked working dir another node's job driver runs in.
                own = [a for a in common if not a.startswith("--temp-dir=")] + [f"--temp-dir={self.temp_dir}/{tag}"]
                self._start_node(lambda own=own: [f"--address={self.gcs_address}", *own, *_node_ports()], tag)
            self._wait_nodes(1 + self.workers)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_nodes(self, n: int) -> None:
        import requests

        t0 = time.monotonic()
        alive = 0
        while time.monotonic() - t0 < self.timeout_s:
            try:
                r = requests.get(f"{self.address}/nodes?view=summary", timeout=5)
                if r.status_code in (401, 403):
                    return  # token auth: every `ray start` already said it joined; we never handle the token
                nodes = r.json()["data"]["summary"]
                alive = sum(1 for x in nodes if x.get("raylet", {}).get("state") == "ALIVE")
                if alive >= n:
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"only {alive} of {n} Ray nodes alive after {self.timeout_s:.0f} s")

    def _ours(self) -> set[int]:
        return ray_processes([*self._pids, *(proc.pid for proc in self.procs)], self.temp_dir)

    def stop(self, grace_s: float = 15.0, keep_temp: bool = False) -> None:
        import psutil

        self._pids = self._ours()
        # Workers first, then the head: `ray start --block` shuts its node down on SIGTERM.
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        self._pids |= self._ours()
        for proc in self.procs:  # each node's whole process group (raylet, gcs, workers, agents)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        victims = []
        for pid in self._pids:
            with contextlib.suppress(psutil.Error):
                victim = psutil.Process(pid)
                victim.kill()
                victims.append(victim)
        psutil.wait_procs(victims, timeout=10)  # so alive_pids() is empty once stop() returns
        for proc in self.procs:
            if proc.poll() is None:
                proc.wait(timeout=10)
        for proc in self.procs:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        self.procs = []
        if not keep_temp:  # session logs, sockets, spilled objects: ours alone, by construction
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def alive_pids(self) -> list[int]:
        """Processes started by this cluster that still run (empty after ``stop``)."""
        import psutil

        return sorted(p for p in self._pids | self._ours() if psutil.pid_exists(p)
                      and psutil.Process(p).status() != psutil.STATUS_ZOMBIE)

    def __enter__(self) -> LocalRayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
