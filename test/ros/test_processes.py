"""Child processes and the private DDS set-up shared by the demo, the node benchmark and the
end-to-end tests: installed-file lookup, ROS environment, start and stop with escalation."""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest

from sharpeye_ros.ros.processes import (DOMAINS, claim_domain, installed_executable, installed_file, isolate_dds,
                                        ros_environment, start_child, stop_children)


def test_ros_environment_keeps_user_choices_and_isolates_otherwise() -> None:
    fresh = ros_environment({"PATH": "/bin"}, random.Random(3))
    assert 1 <= int(fresh["ROS_DOMAIN_ID"]) <= 100
    assert fresh["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and fresh["PATH"] == "/bin"
    assert ros_environment({"ROS_DISTRO": "humble"})["ROS_LOCALHOST_ONLY"] == "1"
    mine = ros_environment({"ROS_DOMAIN_ID": "7", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"})
    assert (mine["ROS_DOMAIN_ID"], mine["ROS_AUTOMATIC_DISCOVERY_RANGE"]) == ("7", "SUBNET")
    assert "ROS_AUTOMATIC_DISCOVERY_RANGE" not in ros_environment({"ROS_LOCALHOST_ONLY": "0"})


def test_ros_environment_applies_the_fastdds_profile_unless_one_is_set(tmp_path: Path) -> None:
    profile = tmp_path / "p.xml"
    assert ros_environment({}, profile=profile)["FASTRTPS_DEFAULT_PROFILES_FILE"] == str(profile)
    mine = {"FASTDDS_DEFAULT_PROFILES_FILE": "/mine.xml"}
    assert "FASTRTPS_DEFAULT_PROFILES_FILE" not in ros_environment(mine, profile=profile)
    assert ros_environment({"FASTRTPS_DEFAULT_PROFILES_FILE": "/mine.xml"},
                           profile=profile)["FASTRTPS_DEFAULT_PROFILES_FILE"] == "/mine.xml"


def test_isolate_dds_picks_a_private_domain(monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", "0")
    monkeypatch.delenv("ROS_AUTOMATIC_DISCOVERY_RANGE", raising=False)
    domain = isolate_dds()
    assert 1 <= domain <= 100 and os.environ["ROS_DOMAIN_ID"] == str(domain)
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"


def test_claim_domain_skips_domains_held_by_other_runs(monkeypatch, tmp_path):
    # Two suites at once picked the same random domain about once in a hundred runs, and
    # each saw the other's captions.
    import fcntl
    import tempfile

    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    claimed: dict[int, int] = {}
    monkeypatch.setattr("sharpeye_ros.ros.processes._claimed_domains", claimed)
    first, second = random.Random(5).sample(list(DOMAINS), len(DOMAINS))[:2]
    folder = tmp_path / "sharpeye_ros-ros-domains"
    folder.mkdir()
    other_run = os.open(folder / f"{first}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(other_run, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run holds `first`
    try:
        assert claim_domain(random.Random(5)) == second
        # held now: a second claim (this process or another) gets yet another domain
        third = claim_domain(random.Random(5))
        assert third not in (first, second) and third in DOMAINS
    finally:
        for fd in [other_run, *claimed.values()]:
            os.close(fd)


def test_missing_executable_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="scripts/setup"):
        installed_executable("captioner")


def test_installed_files_are_found_on_every_prefix(monkeypatch, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    (second / "lib" / "sharpeye_ros").mkdir(parents=True)
    (second / "lib" / "sharpeye_ros" / "captioner").write_text("#!/bin/sh\n")
    (second / "share" / "sharpeye_ros" / "config").mkdir(parents=True)
    (second / "share" / "sharpeye_ros" / "config" / "captioner.yaml").write_text("{}\n")
    monkeypatch.setenv("AMENT_PREFIX_PATH", os.pathsep.join([str(first), str(second)]))
    assert installed_executable("captioner") == second / "lib" / "sharpeye_ros" / "captioner"
    assert installed_file("share", "config/captioner.yaml") == second / "share/sharpeye_ros/config/captioner.yaml"
    with pytest.raises(FileNotFoundError, match=f"lib/sharpeye_ros/demo.*{first}"):
        installed_executable("demo")


# A child that reports it is ready, then ignores the signals named on its command line.
# It takes Python's KeyboardInterrupt handler back first: a suite started as a shell's
# background job (``.ci/run &``) passes SIGINT on ignored, and Python then installs none.
STUBBORN = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
for name in sys.argv[1:]:
    signal.signal(getattr(signal, name), lambda *_: print("ignored", flush=True))
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


def _wait_ready(child, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while "ready" not in child.output():
        assert time.monotonic() < deadline and child.process.poll() is None, child.output()
        time.sleep(0.02)


def test_children_stop_on_sigint_and_escalate_when_they_ignore_it(tmp_path):
    # Started as a background job's children are (SIGINT ignored, inherited), whatever
    # way this suite itself was started.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        polite = start_child("polite", [sys.executable, "-c", STUBBORN], tmp_path)
        deaf = start_child("deaf", [sys.executable, "-c", STUBBORN, "SIGINT"], tmp_path)
        deafer = start_child("deafer", [sys.executable, "-c", STUBBORN, "SIGINT", "SIGTERM"], tmp_path)
    finally:
        signal.signal(signal.SIGINT, previous)
    children = [polite, deaf, deafer]
    for child in children:
        _wait_ready(child)
        assert os.getpgid(child.process.pid) == child.process.pid  # its own process group
    started = time.monotonic()
    codes = stop_children(children, timeout=1.0)
    assert time.monotonic() - started < 10.0
    assert codes[1:] == [None, None]  # SIGINT was not enough for these two
    assert codes[0] not in (None, 0)  # KeyboardInterrupt: a non-zero exit, but on SIGINT
    assert deaf.process.returncode == -signal.SIGTERM and deafer.process.returncode == -signal.SIGKILL
    assert "ignored" in deaf.output() and deaf.log == tmp_path / "deaf.log"
    assert polite.stop() == codes[0]  # stopping an exited child reports its code again


def test_a_child_that_exits_on_sigint_reports_its_code(tmp_path):
    child = start_child("clean", [sys.executable, "-c",
                                  "import signal, sys, time\n"
                                  "signal.signal(signal.SIGINT, lambda *_: sys.exit(0))\n"
                                  "print('ready', flush=True)\n"
                                  "time.sleep(60)\n"], tmp_path, cwd=tmp_path)
    _wait_ready(child)
    assert child.stop(timeout=10.0) == 0
    assert child.tail(1) == "ready"
