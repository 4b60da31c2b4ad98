"""`connectome-sse up`: the whole stack on one machine, for a first look.

Redis first (``REDIS_URL`` if set; else a ``redis-server`` from PATH on a free
port in a temp dir; else the packaged valkey-server, run the same way), then ``sse-gateway``,
``health-publisher`` and ``connectome-sse demo-engine`` as real OS processes,
each in its own process group with its log in the temp dir. Once ``/readyz``
answers 200 the banner is printed. A child that dies is reported at once with
the end of its log and ``up`` exits 1; Ctrl-C or SIGTERM stops the children
in reverse order and removes the temp dir.

The publisher gets ``HEALTH_WINDOW=15`` unless the environment sets it: with
SPEC's default of 300 s one demo violation would hold the dashboard at ERROR
for five minutes, and a first look should show health changing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar

import httpx
from pydantic import Field, field_validator
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from connectome_core.redis_connect import SentinelSyncRedis, explain_error_sync, sync_client
from connectome_core.redis_target import RedisTarget
from connectome_core.settings import (
    RedisSettings,
    SettingsError,
    add_setting_flags,
    settings_from_args,
    to_environ,
)
from connectome_sse.stack.banner import StackView, render
from connectome_sse.stack.children import Child
from connectome_sse.stack.embedded_redis import packaged_redis
from connectome_sse.stack.local_redis import LocalRedis, StackError, free_port
from connectome_sse.stack.supervisor import Supervisor, death_report

READY_TIMEOUT = 60.0
DEMO_HEALTH_WINDOW = "15"


class UpSettings(RedisSettings):
    """What ``up`` reads itself; every other setting passes through to the children.

    The Redis settings (TLS files, ``REDIS_PASSWORD_FILE``, the sentinels'
    password) are checked here and reach the children through their environment,
    flags given to ``up`` included: never through a child's command line.
    """

    owned_prefixes: ClassVar[tuple[str, ...]] = ()

    # Optional here alone: without it ``up`` starts its own Redis.
    redis_url: str | None = Field(  # type: ignore[assignment]
        None,
        repr=False,  # may hold a password: never echoed
        validation_alias="REDIS_URL",
        description="use this Redis instead of starting one",
    )
    host: str = Field("127.0.0.1", validation_alias="SSE_HOST", description="gateway address")
    port: int = Field(
        8000, ge=0, le=65535, validation_alias="SSE_PORT", description="gateway port (0: any free)"
    )
    workers: int = Field(
        1, ge=1, le=64, validation_alias="SSE_WORKERS", description="gateway worker processes"
    )

    @field_validator("redis_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return value or None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_setting_flags(parser, UpSettings)
    parser.add_argument(
        "--no-demo", action="store_true", help="do not start the demo engine (no signals)"
    )
    parser.add_argument(
        "--embedded-redis",
        action="store_true",
        help="use the embedded Redis even when redis-server is on PATH",
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


def _display_host(host: str) -> str:
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _claim_port(host: str, port: int) -> int:
    """The port the gateway will use; a busy one is a one-line error rather than a dead child."""
    if port == 0:
        return free_port(host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise StackError(
                f"cannot listen on {host}:{port} ({exc.strerror}): pass --port N, or --port 0"
            ) from None
    return port


def _check_redis(target: RedisTarget) -> tuple[str, int] | None:
    """PING ``target``; for a Sentinel target, the master's address the sentinels gave."""
    # One try, as for any start-up check: retries only delay the one line.
    client = sync_client(
        target, socket_connect_timeout=3, socket_timeout=3, retry=Retry(NoBackoff(), retries=0)
    )
    try:
        client.ping()
        if isinstance(client, SentinelSyncRedis) and client.owned_sentinel is not None:
            sentinel = client.owned_sentinel
            host, port = sentinel.discover_master(str(target.master_name))  # type: ignore[no-untyped-call]
            return str(host), int(port)
        return None
    except (RedisError, OSError) as exc:
        raise StackError(explain_error_sync(exc, target)) from None
    finally:
        client.close()


def _redis_cli(target: RedisTarget, master: tuple[str, int] | None) -> list[str]:
    """How to reach ``target`` with redis-cli, for the banner (never with its password)."""
    if master is not None:
        # redis-cli does not follow sentinels: name the master they report now.
        host, port = master
        argv = ["redis-cli", "-h", host, "-p", str(port)]
    else:
        argv = ["redis-cli", "-u", target.display()]
    if target.tls:
        argv.append("--tls")
        if target.tls_ca_file:
            argv += ["--cacert", str(target.tls_ca_file)]
        if target.tls_cert_file and target.tls_key_file:
            argv += ["--cert", str(target.tls_cert_file), "--key", str(target.tls_key_file)]
    return argv


def _shutdown_grace() -> float:
    try:
        return float(os.environ.get("SSE_SHUTDOWN_GRACE", "5"))
    except ValueError:
        return 5.0


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(UpSettings, args)
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
    settings: UpSettings, args: argparse.Namespace, supervisor: Supervisor, workdir: Path
) -> int:
    port = _claim_port(settings.host, settings.port)
    redis_cli: list[str]
    redis_env = {k: v for k, v in to_environ(settings).items() if k.startswith("REDIS_")}
    if settings.redis_url:
        target = settings.redis_target()
        master = _check_redis(target)
        redis_url = settings.redis_url
        redis_text = f"Redis at {target.display()} (from REDIS_URL)"
        redis_cli = _redis_cli(target, master)
    else:
        local = None if args.embedded_redis else LocalRedis.find(workdir, os.environ)
        if local is None:
            why = "as asked" if args.embedded_redis else "no redis-server on PATH"
            local = packaged_redis(workdir, os.environ)
            _say(f"starting the packaged {local.name} {local.version} ({why})")
        else:
            _say(f"starting redis-server {local.version}")
        supervisor.add(local)
        local.start_and_wait(cancelled=supervisor.stop_requested.is_set)
        redis_url, redis_text = local.url, local.description
        redis_cli = ["redis-cli", "-p", str(local.port)]
        if settings.redis_password_file:
            _say("ignoring REDIS_PASSWORD_FILE: the Redis up starts has no password")
        redis_env["REDIS_PASSWORD_FILE"] = ""

    env = {**os.environ, **redis_env, "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}
    gateway_argv = [_console_script("sse-gateway"), "--host", settings.host, "--port", str(port)]
    gateway_argv += ["--workers", str(settings.workers)]
    gateway = Child(
        "sse-gateway",
        gateway_argv,
        workdir / "sse-gateway.log",
        env,
        stop_timeout=_shutdown_grace() + 3.0,
    )
    publisher_argv = [_console_script("health-publisher")]
    publisher_env = {"HEALTH_WINDOW": DEMO_HEALTH_WINDOW, **env}
    publisher_log = workdir / "health-publisher.log"
    publisher = Child("health-publisher", publisher_argv, publisher_log, publisher_env)
    children = [gateway, publisher]
    if not args.no_demo:
        children.append(
            Child(
                "demo-engine",
                [_console_script("connectome-sse"), "demo-engine"],
                workdir / "demo-engine.log",
                env,
            )
        )
    base_url = f"http://{_display_host(settings.host)}:{port}"
    for child in children:
        if supervisor.stop_requested.is_set():
            return 0
        child.start()
        supervisor.add(child)
    _say(f"waiting for the gateway at {base_url}/readyz")

    if not _wait_ready(base_url, supervisor):
        return _report_death(supervisor) if supervisor.first_dead() else 0

    workers = f"{settings.workers} worker{'s' if settings.workers != 1 else ''}"
    names = {"sse-gateway": f"sse-gateway ({workers}, pid {gateway.pid})"}
    view = StackView(
        base_url=base_url,
        redis=redis_text,
        redis_cli=redis_cli,
        processes=[names.get(c.name, f"{c.name} (pid {c.pid})") for c in children],
        log_dir=str(workdir) + ("" if args.log_dir else " (removed when up stops)"),
        # The gateway inherits SSE_AUTH_SECRET(_FILE); ready means it accepted the secret.
        auth=bool(env.get("SSE_AUTH_SECRET") or env.get("SSE_AUTH_SECRET_FILE")),
    )
    print(render(view), flush=True)

    while not supervisor.wait_for_stop(0.2):
        if supervisor.first_dead():
            return _report_death(supervisor)
    _say("stopping (Ctrl-C again to kill at once)")
    return 0


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
