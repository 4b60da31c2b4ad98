"""`connectome-sse up`: the whole stack on one machine, for a first look.

Every child's settings are checked first; then Redis (``REDIS_URL``, or one
``up`` starts), ``sse-gateway``, ``health-publisher`` and the demo engine as
real processes. Once ``/readyz`` answers the banner is printed; a child that
dies is reported with the end of its log; Ctrl-C stops them in reverse order.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import httpx

from connectome_core.listen_check import listen_problem
from connectome_core.settings import SettingsError, add_setting_flags
from connectome_sse.localrun.ports import free_port
from connectome_sse.stack.banner import StackView, render
from connectome_sse.stack.children import Child
from connectome_sse.stack.local_redis import StackError
from connectome_sse.stack.redis_choice import RedisChoice, start_own_redis, users_redis
from connectome_sse.stack.settings import (
    DEMO_HEALTH_WINDOW,
    GATEWAY_FLAGS,
    StackSettings,
    UpSettings,
    load_stack_settings,
)
from connectome_sse.stack.supervisor import Supervisor, death_report
from sse_gateway.settings import GatewaySettings

READY_TIMEOUT = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_setting_flags(parser, UpSettings)
    add_setting_flags(parser, GatewaySettings, GATEWAY_FLAGS)
    parser.add_argument(
        "--no-demo", action="store_true", help="do not start the demo engine (no signals)"
    )
    parser.add_argument(
        "--embedded-redis",
        action="store_true",
        help="use the packaged Redis even when redis-server is on PATH",
    )
    parser.add_argument(
        "--log-dir", type=Path, help="keep the children's logs here instead of a temp dir"
    )


def _say(message: str) -> None:
    print(f"up: {message}", file=sys.stderr, flush=True)


def _console_script(name: str) -> str:
    """The script installed next to this interpreter, so the children run the same install."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise StackError(f"{name} is not installed: run `pip install -e .` first")
    return found


def _tool_for_shell() -> str:
    """``connectome-sse`` when a shell finds this very script; else its path."""
    ours = _console_script("connectome-sse")
    found = shutil.which("connectome-sse")
    if found is not None and os.path.samefile(found, ours):
        return "connectome-sse"
    return ours


def _display_host(host: str) -> str:
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _claim_port(host: str, port: int) -> int:
    """The port the gateway will use; one that cannot be had is one line, not a dead child."""
    problem = listen_problem(host, port)
    if problem is not None:
        advice = (
            "pass --port N, or --port 0 for any free port"
            if problem.setting == "port"
            else "pass --host with an address of this machine, e.g. 127.0.0.1"
        )
        raise StackError(f"{problem} ({advice})")
    return free_port(host) if port == 0 else port


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_stack_settings(args, os.environ)
    except SettingsError as exc:
        print(f"connectome-sse up: {exc}", file=sys.stderr)
        return 2
    keep_logs = args.log_dir is not None
    if keep_logs:
        args.log_dir.mkdir(parents=True, exist_ok=True)
        workdir = args.log_dir.resolve()
    else:
        workdir = Path(tempfile.mkdtemp(prefix="connectome-sse-up-"))
    supervisor = Supervisor(_say)
    supervisor.install_signal_handlers()
    try:
        return _run(settings, args, supervisor, workdir)
    except StackError as exc:
        print(f"connectome-sse up: {exc}", file=sys.stderr)
        return 1
    finally:
        started = time.monotonic()
        had_members = bool(supervisor.members)
        supervisor.stop_all()
        supervisor.restore_signal_handlers()
        if not keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
        if had_members:
            _say(f"all stopped in {time.monotonic() - started:.1f} s")


def _run(
    settings: StackSettings, args: argparse.Namespace, supervisor: Supervisor, workdir: Path
) -> int:
    port = _claim_port(settings.gateway.host, settings.gateway.port)
    if settings.up.redis_url is None:
        redis = start_own_redis(workdir, os.environ, supervisor, args.embedded_redis, _say)
    else:
        redis = users_redis(settings.up.redis_target(), settings.up.redis_url)
    children = _children(settings, redis, port, workdir, demo=not args.no_demo)
    base_url = f"http://{_display_host(settings.gateway.host)}:{port}"
    for child in children:
        if supervisor.stop_requested.is_set():
            return 0
        child.start()
        supervisor.add(child)
    _say(f"waiting for the gateway at {base_url}/readyz")
    if not _wait_ready(base_url, supervisor):
        return _report_death(supervisor) if supervisor.first_dead() else 0
    view = _view(settings, redis, base_url, children, workdir, keep_logs=args.log_dir is not None)
    print(render(view), flush=True)
    while not supervisor.wait_for_stop(0.2):
        if supervisor.first_dead():
            return _report_death(supervisor)
    _say("stopping (Ctrl-C again to kill at once)")
    return 0


def _children(
    settings: StackSettings, redis: RedisChoice, port: int, workdir: Path, demo: bool
) -> list[Child]:
    env = {
        **os.environ,
        **settings.child_environ,
        "REDIS_URL": redis.url,
        "PYTHONUNBUFFERED": "1",
    }
    gateway = settings.gateway
    gateway_argv = [_console_script("sse-gateway"), "--host", gateway.host, "--port", str(port)]
    gateway_argv += ["--workers", str(gateway.workers)]
    stop_timeout = gateway.shutdown_grace + 3.0
    children = [
        Child("sse-gateway", gateway_argv, workdir / "sse-gateway.log", env, stop_timeout),
        Child(
            "health-publisher",
            [_console_script("health-publisher")],
            workdir / "health-publisher.log",
            {"HEALTH_WINDOW": DEMO_HEALTH_WINDOW, **env},
        ),
    ]
    if demo:
        engine = [_console_script("connectome-sse"), "demo-engine"]
        children.append(Child("demo-engine", engine, workdir / "demo-engine.log", env))
    return children


def _view(
    settings: StackSettings,
    redis: RedisChoice,
    base_url: str,
    children: list[Child],
    workdir: Path,
    keep_logs: bool,
) -> StackView:
    workers = settings.gateway.workers
    gateway = f"sse-gateway ({workers} worker{'s' if workers != 1 else ''}, pid {children[0].pid})"
    processes = [gateway] + [f"{c.name} (pid {c.pid})" for c in children[1:]]
    # Where the token command reads the secret, the gateway having accepted it (it is ready).
    auth = None
    if settings.gateway.auth_secret:
        auth = "SSE_AUTH_SECRET_FILE" if settings.gateway.auth_secret_file else "SSE_AUTH_SECRET"
    return StackView(
        base_url=base_url,
        redis=redis.description,
        processes=processes,
        log_dir=str(workdir) + ("" if keep_logs else " (removed when up stops)"),
        exports=redis.exports,
        auth=auth,
        tool=_tool_for_shell(),
    )


def _wait_ready(base_url: str, supervisor: Supervisor) -> bool:
    """True once /readyz answers 200; False on a stop request or a dead member."""
    deadline = time.monotonic() + READY_TIMEOUT
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if supervisor.stop_requested.is_set() or supervisor.first_dead():
                return False
            try:
                if client.get(f"{base_url}/readyz").status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            supervisor.wait_for_stop(0.1)
    gateway_log = "\n".join(
        f"    {line}" for m in supervisor.members if m.name == "sse-gateway" for line in m.tail(10)
    )
    raise StackError(
        f"the gateway was not ready after {READY_TIMEOUT:.0f} s; the end of its log:\n{gateway_log}"
    )


def _report_death(supervisor: Supervisor) -> int:
    dead = supervisor.first_dead()
    assert dead is not None
    member, code = dead
    print(f"connectome-sse up: {death_report(member, code)}", file=sys.stderr, flush=True)
    _say("stopping the others")
    return 1
