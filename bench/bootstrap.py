"""What the benchmark needs on the machine, installed when missing. Standard library only.

Debian packages: redis-server always, nginx + libnginx-mod-nchan for Nchan.
Python packages: the project's `bench` extra (`pip install -e '.[bench]'`).
Also raises this process's open-file limit to its hard limit; children inherit it.
"""

from __future__ import annotations

import importlib.util
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
NCHAN_MODULE = Path("/usr/lib/nginx/modules/ngx_nchan_module.so")
PYTHON_MODULES = ("uvloop", "redis", "sse_starlette", "starlette", "uvicorn", "granian")


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def missing_debian_packages(need_nchan: bool) -> list[str]:
    missing = []
    if shutil.which("redis-server") is None:
        missing.append("redis-server")
    if need_nchan:
        if shutil.which("nginx") is None:
            missing.append("nginx")
        if not NCHAN_MODULE.exists():
            missing.append("libnginx-mod-nchan")
    return missing


def _apt(args: list[str]) -> int:
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.call([*sudo, "apt-get", *args], env=env, stdout=subprocess.DEVNULL)


def ensure_debian_packages(need_nchan: bool) -> None:
    missing = missing_debian_packages(need_nchan)
    if not missing:
        return
    say(f"installing {' '.join(missing)} (apt-get)")
    if _apt(["install", "-y", "-q", *missing]) != 0:
        _apt(["update", "-q"])
        if _apt(["install", "-y", "-q", *missing]) != 0:
            raise SystemExit(f"bench: could not install {' '.join(missing)} with apt-get")
    still = missing_debian_packages(need_nchan)
    if still:
        raise SystemExit(f"bench: still missing after apt-get: {' '.join(still)}")


def ensure_python_packages(need_py_spy: bool) -> None:
    missing = [m for m in PYTHON_MODULES if importlib.util.find_spec(m) is None]
    py_spy = shutil.which("py-spy") or (Path(sys.executable).parent / "py-spy").exists()
    if not missing and (py_spy or not need_py_spy):
        return
    say(f"installing the bench extra (missing: {' '.join(missing) or 'py-spy'})")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if subprocess.call([*cmd, "-e", ".[bench]"], cwd=REPO_DIR) != 0:
        raise SystemExit("bench: pip install -e '.[bench]' failed")
    importlib.invalidate_caches()


def raise_open_files() -> int:
    """Soft limit up to the hard limit (and the hard one to 65,536 where allowed)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 65536:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (65536, 65536))
            return 65536
        except (ValueError, OSError):
            pass
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
