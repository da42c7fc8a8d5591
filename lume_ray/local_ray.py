"""Local Ray: the one place that starts Ray on this machine when no cluster is connected.

Input:  nothing connected (``ray.is_initialized()`` false) and how many CPUs / how much object store to offer.
Output: a single-machine Ray whose every process (GCS, raylet, dashboard and its job server, workers, this
        driver) listens on 127.0.0.1 only; :func:`ray_session` stops it again when the work that needed it ends.
        A connected Ray is used as it is. (The dashboard is on because Ray's state API, which Ray Train's
        placement-group cleaner needs to free a stopped trial's CPUs, is served by it.)

How, with Ray's public interfaces only:
1. The head is the ``ray start --head --block`` command, run as a child process we own, with Ray's
   single-machine switch (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the default on Windows and macOS) in *its*
   environment: left to itself, Ray on Linux rewrites a loopback node address to the host's routable IP and
   listens on all interfaces (docs/ray.md section 5). Ray reads the switch once, at ``import ray``, which is why it goes
   to a fresh process and never into this one (this process's own ``ray start --address`` calls, e.g. a
   multi-node test cluster, stay allowed).
2. This process connects with ``ray.init(address="[::ffff:127.0.0.1]:PORT")``, the loopback address in its
   IPv4-mapped form. A driver whose Ray was imported in multi-node mode rewrites the literal ``127.0.0.1`` (and
   ``localhost``) of a bootstrap address to the host IP, where nothing listens; the mapped form is the same
   socket (the GCS listens dual-stack on it) and is taken as given.
3. The child reads its stdin, a pipe this process holds: when this process ends in any way (even SIGKILL) the
   pipe closes and the head stops itself with SIGTERM, as ``ray start --block`` expects; a normal end stops it
   at once (:func:`stop_local`, called by :func:`ray_session` and at interpreter exit).
Measured: every listening socket of every Ray process on the loopback (tests/test_local_ray.py).

Token auth, on by default: before Ray is first imported in this process (Ray reads ``RAY_AUTH_MODE`` once, at
import), :func:`prepare_auth` generates a random token, writes it to a file only this user can read (0600, in a
0700 temporary directory removed at exit) and sets ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN_PATH`` to it: the
head, its workers and this driver all use it, and any other local user's client is refused (no token) on the GCS
and the dashboard alike. ``lume-ray`` calls it for the commands that may start a local head; :func:`ray_session`
and :func:`start_local` call it too. It leaves the mode alone when the user set ``RAY_AUTH_MODE`` (``token``: their
own token, ``ray get-auth-token --generate`` makes one when none exists; ``disabled``: no auth) or
``LUME_RAY_AUTH=off``, and when Ray is already imported here (then the head runs in this process's mode).
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from lume_ray.cluster.auth import find_token
from lume_ray.errors import ConfigError

SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
AUTH_SWITCH = "LUME_RAY_AUTH"  # "off": a local head without token auth (as RAY_AUTH_MODE=disabled)
_OFF = ("off", "0", "false", "no", "disabled")
LOOPBACK = "127.0.0.1"
MAPPED_LOOPBACK = "::ffff:127.0.0.1"  # the same address, in a form Ray does not rewrite (see the docstring)
START_TIMEOUT_S = 180.0  # a head on a loaded 2-core machine was measured to need 20-30 s
STARTED = "Ray runtime started"

# The `ray` command (the console script Ray's package declares) in a child process; with "watch", plus a thread
# that turns the end of stdin (our end of the pipe closed: this process is gone) into the SIGTERM on which
# `ray start --block` shuts its node down.
_BOOT = """
import os, signal, sys, threading
from importlib.metadata import entry_points

def _watch():
    while os.read(0, 512):  # unbuffered: no lock left held at interpreter exit
        pass
    os.kill(os.getpid(), signal.SIGTERM)

if sys.argv[1] == "watch":
    threading.Thread(target=_watch, daemon=True).start()
main = next(iter(entry_points(group="console_scripts", name="ray"))).load()
sys.argv = ["ray", *sys.argv[2:]]
main()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback or host.strip("[]") == MAPPED_LOOPBACK
    except ValueError:
        return host == "localhost"


def ray_processes(roots: list[int], temp_dir: str) -> set[int]:
    """Pids of the Ray processes started from ``roots`` (their process trees) and of any process whose command
    line names ``temp_dir`` (Ray's daemons re-parent themselves), never this process."""
    import psutil

    pids = set(roots)
    for root in roots:
        with contextlib.suppress(psutil.Error):
            pids.update(c.pid for c in psutil.Process(root).children(recursive=True))
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if temp_dir in " ".join(p.info["cmdline"] or []):
                pids.add(p.info["pid"])
                pids.update(c.pid for c in p.children(recursive=True))
        except psutil.Error:
            continue
    pids.discard(os.getpid())
    return pids


@dataclass
class LocalHead:
    """A ``ray start --head --block`` process of this process, and what it owns (its temp dir)."""

    proc: subprocess.Popen[bytes]
    temp_dir: str
    port: int
    log: Path
    dashboard_url: str | None = None  # as ray.init() reports it (127.0.0.1:PORT)
    pids: set[int] = field(default_factory=set)  # Ray processes seen for this head (filled by stop())

    @property
    def address(self) -> str:
        return f"[{MAPPED_LOOPBACK}]:{self.port}"

    def processes(self) -> list[int]:
        """Pids of the head's Ray processes: its process tree and any daemon naming its temp dir."""
        return sorted(ray_processes([self.proc.pid], self.temp_dir))

    def stop(self, grace_s: float = 40.0) -> None:
        """End the head: SIGTERM (Ray drains and stops its processes), then kill what is left of ours."""
        import psutil

        self.pids |= set(self.processes())
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=grace_s)
        self.pids |= set(self.processes())
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own process group (start_new_session)
        victims = []
        for pid in self.pids - {os.getpid()}:
            with contextlib.suppress(psutil.Error):
                victim = psutil.Process(pid)
                victim.kill()
                victims.append(victim)
        psutil.wait_procs(victims, timeout=10)
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)  # session logs, sockets, spilled objects: ours alone


_heads: list[LocalHead] = []  # started by this process and not stopped yet


def local_head() -> LocalHead | None:
    """The head :func:`start_local` started in this process (None when none runs)."""
    return _heads[-1] if _heads else None


def ray_cli(*, stop_with_parent: bool = False) -> list[str]:
    """The ``ray`` command of this interpreter's Ray, as an argv prefix; ``stop_with_parent``: it SIGTERMs itself
    when its stdin (a pipe the caller holds) closes."""
    return [sys.executable, "-c", _BOOT, "watch" if stop_with_parent else "plain"]


def prepare_auth() -> Path | None:
    """Token auth for the local heads of this process: a fresh token in a private file, ``RAY_AUTH_MODE=token`` and
    ``RAY_AUTH_TOKEN_PATH`` set here (so the head and this driver use it). Returns the token file, or None when the
    user chose the mode (``RAY_AUTH_MODE`` set, ``LUME_RAY_AUTH=off``) or Ray is already imported (too late: Ray
    read its mode at import). Call before anything imports Ray; a second call returns the same file."""
    if os.environ.get(AUTH_SWITCH, "").strip().lower() in _OFF:
        return None
    if os.environ.get("RAY_AUTH_MODE", "").strip():
        named = os.environ.get("RAY_AUTH_TOKEN_PATH", "")
        return Path(named) if _prepared and named == str(_prepared[0]) else None
    if "ray" in sys.modules:
        return None
    import secrets

    private = Path(tempfile.mkdtemp(prefix="lume-ray-auth-"))  # 0700
    atexit.register(shutil.rmtree, private, True)
    path = private / "auth_token"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)
    _prepared.append(path)
    return path


_prepared: list[Path] = []  # the token file prepare_auth wrote in this process


def _ensure_token() -> None:
    """Token auth needs a token before ``ray start``; ``ray get-auth-token --generate`` makes one (~/.ray/auth_token)
    when none of Ray's sources has one, as a local ``ray.init()`` would."""
    if find_token(required=True) is None:
        subprocess.run([*ray_cli(), "get-auth-token", "--generate"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=120)


class HeadExited(RuntimeError):
    """``ray start --head`` ended during start-up (the message holds the end of its log)."""


def start_head(*, num_cpus: int | None = None, object_store_mb: int | None = None,
               timeout_s: float = START_TIMEOUT_S, attempts: int = 2) -> LocalHead:
    """Start a single-machine Ray head on 127.0.0.1 (dashboard included) as a child process; returns once it is up.

    A head that exits during start-up is started once more, on fresh ports: Ray gives its raylet a fixed 30 s to
    register, which a 2-core machine under load was measured to miss now and then (as it can a free port taken
    between our probe and Ray's bind)."""
    token_auth = os.environ.get("RAY_AUTH_MODE", "").strip().lower() == "token"
    if token_auth:
        _ensure_token()
    for attempt in range(1, attempts + 1):
        try:
            return _launch_head(num_cpus, object_store_mb, timeout_s, token_auth)
        except HeadExited as e:
            if attempt == attempts:
                raise
            print(f"[ray] local Ray head failed to start ({str(e).strip().splitlines()[-1][:200]}); "
                  "starting it again", file=sys.stderr)
    raise AssertionError("unreachable")


def _launch_head(num_cpus: int | None, object_store_mb: int | None, timeout_s: float,
                 token_auth: bool) -> LocalHead:
    # Short path: Ray's unix sockets live under it and must stay below ~107 characters.
    temp_dir = tempfile.mkdtemp(prefix="lr", dir="/tmp")
    port, dashboard_port = free_port(), free_port()
    args = ["start", "--head", "--block", f"--node-ip-address={LOOPBACK}", f"--port={port}",
            # The dashboard on the loopback: Ray's state API lives there, and Ray Train's placement-group cleaner
            # asks it whether a run's controller is alive. Without it, a trial that Tune stops (early stopping,
            # Ctrl-C) leaves its workers' placement group, and their CPUs, reserved until Ray stops.
            "--include-dashboard=true", f"--dashboard-host={LOOPBACK}", "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
            # Every port explicit: defaults (10001, 52365, 8265 ...) collide with other clusters on the machine.
            f"--dashboard-port={dashboard_port}", f"--ray-client-server-port={free_port()}",
            f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]
    if num_cpus is not None:
        args.append(f"--num-cpus={num_cpus}")
    if object_store_mb is not None:
        args.append(f"--object-store-memory={object_store_mb * 2**20}")
    env = {**os.environ, SINGLE_MACHINE_ENV: "0", "RAY_USAGE_STATS_ENABLED": "0",
           # Its workers' state-API calls (Train's placement-group cleaner) go to this head's dashboard: left to
           # find one, they fail when a second Ray runs on the machine ("Found multiple active Ray instances").
           "RAY_API_SERVER_ADDRESS": f"http://{LOOPBACK}:{dashboard_port}",
           "RAY_AUTH_MODE": "token" if token_auth else "disabled",  # this process's mode (a token file alone
           # would otherwise turn the head's on: `ray start` does that when the mode is unset)
           # On SIGTERM Ray drains the node first (for Serve replicas on Kubernetes): up to 30 s here, because Ray
           # Train's detached helper actors keep it from ever going idle. A local head has nothing to drain: off,
           # so a command that started one ends ~30 s sooner (stop measured 32 s -> ~2 s after a Train run).
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    # One machine is never preempted: Ray Train's preemption watcher (one more actor per Train run, ~3 CPU-s of
    # imports here) has nothing to watch. Its workers inherit this head's environment; the user's value wins.
    env.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    log = Path(temp_dir) / "head.out"
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([*ray_cli(stop_with_parent=True), *args], stdin=subprocess.PIPE, stdout=out,
                                stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)  # Ctrl-C reaches the driver (it stops the head), not the head
    head = LocalHead(proc, temp_dir, port, log)
    _heads.append(head)
    try:
        t0 = time.monotonic()
        while STARTED not in log.read_text(errors="replace"):
            if proc.poll() is not None:
                raise HeadExited(f"ray start --head exited {proc.returncode}: "
                                   f"{log.read_text(errors='replace')[-2000:]}")
            if time.monotonic() - t0 > timeout_s:
                raise RuntimeError(f"ray start --head did not come up in {timeout_s:.0f} s (log: {log})")
            time.sleep(0.1)
        try:
            with socket.create_connection((MAPPED_LOOPBACK, port), timeout=5):
                pass
        except OSError as e:
            raise RuntimeError(f"the local Ray head listens on {LOOPBACK}:{port} but {head.address} does not "
                               f"reach it ({e}); this machine needs IPv4-mapped IPv6 on the loopback") from None
    except BaseException:
        stop_local(head)
        raise
    return head


def stop_local(head: LocalHead | None = None) -> None:
    """Stop ``head`` (default: every head this process started). Call after ``ray.shutdown()``."""
    for h in [head] if head is not None else list(reversed(_heads)):
        if h in _heads:
            _heads.remove(h)
        h.stop()


atexit.register(stop_local)  # a driver that never called ray_session's cleanup (e.g. a test fixture)


def start_local(*, num_cpus: int | None = None, object_store_mb: int | None = None, log_to_driver: bool = False,
                configure_logging: bool = True) -> LocalHead:
    """Start a local Ray on 127.0.0.1 only (its dashboard too), ``num_cpus`` logical CPUs (default:
    what Ray detects, container limits included), and connect this process to it. Stop it with
    ``ray.shutdown()`` then :func:`stop_local` (or use :func:`ray_session`)."""
    prepare_auth()  # before Ray's import: token auth for the head and this driver
    import ray  # heavy: Ray, only when a session starts

    head = start_head(num_cpus=num_cpus, object_store_mb=object_store_mb)
    try:
        ctx = ray.init(address=head.address, log_to_driver=log_to_driver, configure_logging=configure_logging)
        head.dashboard_url = ctx.dashboard_url
        exposed = [n["NodeManagerAddress"] for n in ray.nodes() if not is_loopback(n["NodeManagerAddress"])]
        if exposed:
            raise RuntimeError(f"the local Ray node took a non-loopback address {exposed[0]}")
    except BaseException:
        ray.shutdown()
        stop_local(head)
        raise
    return head


def ray_session(*, address: str | None = None, num_cpus: int | None = None, object_store_mb: int | None = None,
                log_to_driver: bool = False, configure_logging: bool = True,
                runtime_env: dict[str, Any] | None = None) -> AbstractContextManager[bool]:
    """Use the connected Ray; else connect to ``address`` (or ``RAY_ADDRESS``, set inside a Ray job); else start
    a local one for the ``with`` block. Yields True if it started or connected one (and so stops it after).
    ``runtime_env``: the job's on a cluster connected to (e.g. plugins' ``py_modules``, so every node's workers
    can import them); a local Ray's processes read this machine's files and need none.

    An address is probed here, at the call, before the ``with`` block and before ``ray.init`` (which waits on an
    address where nothing answers): nothing answering within a few seconds is a one-line ConfigError naming it
    (``--address`` when given here, else ``RAY_ADDRESS``)."""
    if not (address or os.environ.get("RAY_ADDRESS")):
        prepare_auth()  # before Ray's import: token auth for a local head and this driver
    import ray  # heavy: Ray, only when a session starts

    if not ray.is_initialized():
        check_address(address or os.environ.get("RAY_ADDRESS"), "--address" if address else "RAY_ADDRESS", "")
    return _session(address=address, num_cpus=num_cpus, object_store_mb=object_store_mb,
                    log_to_driver=log_to_driver, configure_logging=configure_logging, runtime_env=runtime_env)


@contextmanager
def _session(*, address: str | None, num_cpus: int | None, object_store_mb: int | None, log_to_driver: bool,
             configure_logging: bool, runtime_env: dict[str, Any] | None) -> Iterator[bool]:
    import ray  # heavy: Ray, only when a session starts

    if ray.is_initialized():
        yield False
        return
    address = address or os.environ.get("RAY_ADDRESS")
    head = None
    if address:
        ray.init(address=address, log_to_driver=log_to_driver, configure_logging=configure_logging,
                 runtime_env=runtime_env or None)
    else:
        head = start_local(num_cpus=num_cpus, object_store_mb=object_store_mb, log_to_driver=log_to_driver,
                           configure_logging=configure_logging)
    try:
        yield True
    finally:
        ray.shutdown()
        if head is not None:
            stop_local(head)


# ---------------------------------------------------------------------------------------------
# A cluster address, probed before ray.init (which waits on an address where nothing answers).

ADDRESS_TIMEOUT_S = 5.0
RAY_GCS_PORT = 6379


def address_endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) a Ray address connects to first (GCS ``host:port``, ``ray://host:port``, a dashboard
    ``http(s)://host:port``); None for ``auto``/``local`` (Ray finds its own)."""
    text = address.strip()
    if text in ("auto", "local", ""):
        return None
    parsed = urlparse(text if "://" in text else f"tcp://{text}")
    try:
        port = parsed.port
    except ValueError:
        raise ValueError(f"{address!r}: not an address (HOST:PORT)") from None
    if not parsed.hostname:
        raise ValueError(f"{address!r}: not an address (HOST:PORT)")
    default = {"http": 80, "https": 443, "ray": 10001}.get(parsed.scheme, RAY_GCS_PORT)
    return parsed.hostname, port or default


def check_address(address: str | None, flag: str, source: str, timeout_s: float = ADDRESS_TIMEOUT_S) -> None:
    """A cluster address where a Ray cluster answers within ``timeout_s``, or ConfigError naming ``flag``.

    A GCS address (``HOST:PORT``) is asked for its cluster id over gRPC (the first call ``ray.init`` makes; an
    authentication error still means a Ray cluster answered): a TCP connect alone is not enough where a proxy
    accepts every connection. ``ray://`` and ``http(s)://`` addresses get a TCP connect."""
    if not address:
        return
    prefix = f"{source}: " if source else ""
    try:
        endpoint = address_endpoint(address)
    except ValueError as e:
        raise ConfigError(f"{prefix}{flag}: {e}") from None
    if endpoint is None:
        return
    host, port = endpoint
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as e:
        why = "no answer" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__)
        raise ConfigError(f"{prefix}{flag}: {address!r}: nothing answers at {host}:{port} ({why} within "
                          f"{timeout_s:g} s); is the cluster up?") from None
    if "://" in address:
        return
    import grpc  # heavy: grpcio (Ray's own dependency)

    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary("/ray.rpc.NodeInfoGcsService/GetClusterId")
        try:
            call(b"", timeout=timeout_s)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            if code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                name = code.name if code is not None else type(e).__name__
                raise ConfigError(f"{prefix}{flag}: {address!r}: no Ray cluster answers at {host}:{port} ({name} "
                                  f"within {timeout_s:g} s); is the cluster up, and is this its GCS port?") from None
