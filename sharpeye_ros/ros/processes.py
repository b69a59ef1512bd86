"""Our nodes as child processes, on a private DDS set-up: what the ``demo``, the node
benchmark and the end-to-end tests share.

- :func:`installed_file` / :func:`installed_executable`: files of the installed package
  (``lib/sharpeye_ros/<name>``, ``share/sharpeye_ros/...``) on AMENT_PREFIX_PATH;
- :func:`ros_environment` / :func:`isolate_dds`: a random ROS_DOMAIN_ID that no other run
  of ours on this machine holds, and localhost-only discovery, so that a run neither sees
  nor disturbs other ROS traffic;
- :func:`start_child` / :func:`stop_children`: a child in its own process group with its
  output in a log file, stopped with SIGINT, then SIGTERM, then SIGKILL.

Pure Python (no rclpy).
"""

from __future__ import annotations

import fcntl
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

from sharpeye_ros.ros.launch_support import profile_environment

PACKAGE = "sharpeye_ros"
STOP_TIMEOUT = 10.0  # seconds a child gets to exit after SIGINT, then after SIGTERM, before SIGKILL
LOG_TAIL_LINES = 15
DOMAINS = range(1, 101)  # the ROS domains handed out (0, the default, is left to users)
# Held for the life of the process: a domain's lock file stays locked while its fd is open.
_claimed_domains: dict[int, int] = {}


def _prefixes() -> list[Path]:
    """Install prefixes to look in: AMENT_PREFIX_PATH's, then the prefix of the running
    program when it is one of this package's executables (``<prefix>/lib/sharpeye_ros/demo``
    started without a sourced workspace)."""
    prefixes = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    program = Path(sys.argv[0]).resolve().parent if sys.argv and sys.argv[0] else None
    if program is not None and program.name == PACKAGE and program.parent.name == "lib":
        prefixes.append(program.parent.parent)
    return prefixes


def installed_file(kind: str, name: str) -> Path:
    """``<prefix>/<kind>/sharpeye_ros/<name>`` of the installed package (``kind``: ``lib``
    for executables, ``share`` for data); FileNotFoundError saying how to build it."""
    prefixes = _prefixes()
    for prefix in prefixes:
        path = prefix / kind / PACKAGE / name
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in prefixes) or "nowhere: AMENT_PREFIX_PATH is empty"
    raise FileNotFoundError(f"'{kind}/{PACKAGE}/{name}' of the installed package not found (looked in "
                            f"{looked}): build with `scripts/setup` and `source scripts/env.sh` (or a "
                            "workspace's install/setup.bash)")


def installed_executable(name: str) -> Path:
    """The installed executable ``lib/sharpeye_ros/<name>``; FileNotFoundError if it is missing."""
    return installed_file("lib", name)


def ros_environment(env: Mapping[str, str], rng: Optional[random.Random] = None,
                    profile: Optional[Path] = None, keep_user_choice: bool = True) -> dict[str, str]:
    """``env`` plus a private DDS set-up: a random ROS_DOMAIN_ID (1..100), localhost-only
    discovery and the Fast DDS ``profile`` (with Fast DDS's defaults most 640x480 frames are
    lost). With ``keep_user_choice`` each is set only where ``env`` has none; without, the
    domain and the discovery range are replaced whatever ``env`` says. The domain comes
    from :func:`claim_domain`."""
    out = dict(env)
    out.update(profile_environment(out, profile or ""))
    if not keep_user_choice or not out.get("ROS_DOMAIN_ID"):
        out["ROS_DOMAIN_ID"] = str(claim_domain(rng))
    chosen = out.get("ROS_AUTOMATIC_DISCOVERY_RANGE") or out.get("ROS_LOCALHOST_ONLY")
    if not keep_user_choice or not chosen:
        out["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"  # Jazzy and newer
        if out.get("ROS_DISTRO") == "humble":  # before Jazzy's discovery range
            out["ROS_LOCALHOST_ONLY"] = "1"
    return out


def claim_domain(rng: Optional[random.Random] = None) -> int:
    """A random domain of :data:`DOMAINS` that no other process on this machine has claimed
    here, held until this process exits (a lock file per domain in the temp directory).
    Two test suites or benchmarks at once on one machine otherwise shared a domain one time
    in a hundred, and each saw the other's frames. When every domain is held, or locks
    cannot be taken, a random one."""
    rng = rng or random.SystemRandom()
    order = rng.sample(list(DOMAINS), len(DOMAINS))
    folder = Path(tempfile.gettempdir()) / f"{PACKAGE}-ros-domains"
    try:
        folder.mkdir(exist_ok=True)
    except OSError:
        return order[0]
    for domain in order:
        if domain in _claimed_domains:
            continue  # held by this process for an earlier run: a private one each call
        try:
            fd = os.open(folder / f"{domain}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _claimed_domains[domain] = fd
        return domain
    return order[0]


def isolate_dds(rng: Optional[random.Random] = None) -> int:
    """Give this process (and the children it starts) a random ROS domain and localhost-only
    discovery, whatever the environment says: for measurements that must neither see nor
    disturb other ROS traffic. Returns the domain."""
    os.environ.update(ros_environment(os.environ, rng, keep_user_choice=False))
    return int(os.environ["ROS_DOMAIN_ID"])


@dataclass
class Child:
    """A process started by :func:`start_child`; its stdout and stderr go to ``log``."""

    name: str
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        """Everything it wrote so far."""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of its log."""
        return "\n".join(self.output().splitlines()[-lines:])

    def signal(self, sig: int) -> None:
        """Send ``sig`` to its process group (nothing if it is gone)."""
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = STOP_TIMEOUT) -> Optional[int]:
        """:func:`stop_children` for this one child: its exit code, None if SIGINT did not end it."""
        return stop_children([self], timeout)[0]


def start_child(name: str, cmd: Sequence[str], log_dir: Path, env: Optional[Mapping[str, str]] = None,
                cwd: Optional[Path] = None) -> Child:
    """Start ``cmd`` with its output in ``log_dir/<name>.log``, stdin closed, in its own
    process group: a terminal's Ctrl-C then reaches only the parent, which stops its
    children in order, and a signal to the group reaches whatever the child started."""
    log = Path(log_dir) / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(list(cmd), env=None if env is None else dict(env), cwd=cwd, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    return Child(name, process, log)


def stop_children(children: Sequence[Child], timeout: float = STOP_TIMEOUT) -> list[Optional[int]]:
    """SIGINT to every running child's process group, then wait up to ``timeout`` seconds;
    SIGTERM, then SIGKILL, the stragglers likewise. Returns, per child, its exit code when
    SIGINT ended it (or it had exited already), None when it needed SIGTERM or SIGKILL."""
    codes: list[Optional[int]] = [c.process.poll() for c in children]
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        alive = [i for i, c in enumerate(children) if c.process.poll() is None]
        if not alive:
            break
        for i in alive:
            children[i].signal(sig)
        deadline = time.monotonic() + timeout
        for i in alive:
            try:
                code = children[i].process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                continue
            if sig == signal.SIGINT:
                codes[i] = code
    return codes


__all__ = ["PACKAGE", "STOP_TIMEOUT", "installed_file", "installed_executable", "ros_environment", "claim_domain",
           "isolate_dds",
           "Child", "start_child", "stop_children"]
