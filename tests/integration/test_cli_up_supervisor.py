"""`up`'s supervisor, real processes: reverse-order stop, SIGKILL at the deadline, no leftovers."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectome_sse.localrun.processes import group_members, wait_pid_gone
from connectome_sse.localrun.wait import wait_for
from connectome_sse.stack.children import Child
from connectome_sse.stack.supervisor import Supervisor, death_report

# Records its name in ORDER on SIGTERM, then exits; says "ready" once the handler is in place.
POLITE = """
import os, signal, sys, time
def bye(*_):
    with open(os.environ["ORDER"], "a") as f:
        f.write(sys.argv[1] + "\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""

# Ignores SIGTERM and starts a grandchild (same process group) that ignores it too.
STUBBORN = """
import os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
print("ready", grandchild.pid, flush=True)
if sys.argv[1] == "leave":
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def supervisor() -> Iterator[Supervisor]:
    sup = Supervisor(log=lambda _: None)
    yield sup
    sup.hurry.set()
    sup.stop_all()


def child(tmp_path: Path, name: str, code: str, arg: str, timeout: float = 5.0) -> Child:
    env = {**os.environ, "ORDER": str(tmp_path / "order")}
    made = Child(name, [sys.executable, "-c", code, arg], tmp_path / f"{name}.log", env, timeout)
    made.start()
    wait_for(lambda: "ready" in "".join(made.tail()), timeout=30, what=f"{name} ready")
    return made


def test_members_stop_in_reverse_order(tmp_path: Path, supervisor: Supervisor) -> None:
    for name in ("redis", "gateway", "publisher", "demo"):
        supervisor.add(child(tmp_path, name, POLITE, name))
    supervisor.stop_all()
    assert (tmp_path / "order").read_text().split() == ["demo", "publisher", "gateway", "redis"]


@pytest.mark.parametrize("mode", ["stay", "leave"])
def test_stubborn_group_is_killed_after_the_deadline(
    tmp_path: Path, supervisor: Supervisor, mode: str
) -> None:
    """'stay': the leader ignores SIGTERM; 'leave': it exits but leaves a grandchild behind."""
    member = child(tmp_path, "stubborn", STUBBORN, mode, timeout=0.5)
    grandchild = int(member.tail()[0].split()[1])
    assert member.pid is not None
    supervisor.add(member)
    supervisor.stop_all()
    assert member.exit_code() is not None
    wait_pid_gone(grandchild)
    assert group_members(member.pid) == []


def test_a_dead_member_is_found_with_its_log(tmp_path: Path, supervisor: Supervisor) -> None:
    code = "print('loading'); print('boom: bad thing', flush=True); raise SystemExit(3)"
    member = Child("publisher", [sys.executable, "-c", code], tmp_path / "p.log", dict(os.environ))
    member.start()
    supervisor.add(member)
    dead = wait_for(supervisor.first_dead, timeout=30, what="the member to die")
    assert dead == (member, 3)
    report = death_report(member, 3)
    assert report.startswith("publisher exited with status 3")
    assert report.endswith("    boom: bad thing")
