"""The demo runner: its pure helpers, and the installed ``demo`` end to end with a tiny model."""

from __future__ import annotations

import os
import random
import re
import signal
import time
from pathlib import Path
from types import SimpleNamespace as NS
from typing import Any

import cv2
import pytest

from sharpeye_ros.ros.demo import format_caption, ros_environment


def test_ros_environment_keeps_user_choices_and_isolates_otherwise() -> None:
    fresh = ros_environment({"PATH": "/bin"}, random.Random(3))
    assert 1 <= int(fresh["ROS_DOMAIN_ID"]) <= 100
    assert fresh["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and fresh["PATH"] == "/bin"
    assert ros_environment({"ROS_DISTRO": "humble"})["ROS_LOCALHOST_ONLY"] == "1"
    mine = ros_environment({"ROS_DOMAIN_ID": "7", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET"})
    assert (mine["ROS_DOMAIN_ID"], mine["ROS_AUTOMATIC_DISCOVERY_RANGE"]) == ("7", "SUBNET")
    assert "ROS_AUTOMATIC_DISCOVERY_RANGE" not in ros_environment({"ROS_LOCALHOST_ONLY": "0"})


def _caption(**kw: Any) -> NS:
    region = NS(roi=NS(x_offset=10, y_offset=20, width=30, height=40), score=0.625, phrase="large red star")
    fields = dict(header=NS(stamp=NS(sec=12, nanosec=500_000_000)), caption="a large red star.",
                  initial_caption="a large red circle.", refined=True, zoomed=True, regions=[region],
                  image_width=640, image_height=480, glance_seconds=0.5, refine_seconds=0.25,
                  latency_seconds=1.0)
    fields.update(kw)
    return NS(**fields)


def test_format_caption_shows_glance_refinement_regions_and_truth() -> None:
    text = format_caption(3, _caption(), truth="a large red star on the left.")
    assert text.splitlines()[0] == ("[3] frame 12.500 (640x480), latency 1.00 s "
                                    "(glance 0.50 s, refine 0.25 s with zoom)")
    assert "    truth:   a large red star on the left." in text
    assert "    glance:  a large red circle." in text and "    refined: a large red star." in text
    assert '    regions: "large red star" 0.62 [10, 20, 40, 60]' in text
    plain = format_caption(1, _caption(refined=False, zoomed=False, initial_caption="a large red star.",
                                       regions=[]))
    assert "caption: a large red star." in plain and "glance:" not in plain and "regions" not in plain
    assert "refine" not in plain.splitlines()[0]


def _wait_for(proc: Any, pattern: str, timeout: float) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, proc.output())
        if found:
            return found
        assert proc.process.poll() is None, f"demo exited early:\n{proc.output()}"
        time.sleep(0.2)
    raise AssertionError(f"no {pattern!r} in demo output after {timeout} s:\n{proc.output()}")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.ros
@pytest.mark.slow
def test_demo_captions_saves_frames_and_stops_cleanly_on_sigint(
        tmp_path: Path, start_process: Any, installed: Any, tiny_model_dir: Path) -> None:
    pytest.importorskip("rclpy")
    out = tmp_path / "out"
    demo = start_process([str(installed("demo")), "--model-path", str(tiny_model_dir), "--output", str(out),
                          "--captions", "100", "--max-rate", "2", "--scene-period", "2", "--timeout", "120"],
                         "demo")
    pids = [int(p) for p in _wait_for(demo, r"started synthetic_camera \(pid (\d+)\) and captioner "
                                            r"\(pid (\d+)\)", 30).groups()]
    _wait_for(demo, r"saved .*caption_002\.png", 90)
    os.kill(demo.process.pid, signal.SIGINT)  # the demo only, as a terminal's Ctrl-C would reach it
    assert demo.process.wait(30) == 0, demo.output()
    text = demo.output()
    assert "stopped by SIGINT" in text and "Traceback" not in text
    summary = r"demo: (\d+) caption\(s\); \d+ annotated frame\(s\) saved in "
    assert re.search(summary + re.escape(str(out)), text)
    assert all(_gone(pid) for pid in pids), "the demo must stop its camera and captioner"
    assert re.search(r"\[1\] frame \d+\.\d{3} \(640x480\), latency", text)
    assert "truth:   a " in text  # the scene's reference caption from /ground_truth
    frames = sorted(out.glob("caption_*.png"))
    assert len(frames) >= 2
    image = cv2.imread(str(frames[0]))
    assert image is not None and image.shape == (480, 640, 3)
    for log in ("captioner.log", "synthetic_camera.log"):
        assert "Traceback" not in (out / log).read_text()


@pytest.mark.ros
@pytest.mark.slow
def test_demo_fails_clearly_when_the_model_does_not_load(tmp_path: Path, start_process: Any,
                                                         installed: Any) -> None:
    pytest.importorskip("rclpy")
    broken = tmp_path / "not_a_model"
    broken.mkdir()
    demo = start_process([str(installed("demo")), "--model-path", str(broken),
                          "--output", str(tmp_path / "out"), "--timeout", "90"], "demo")
    assert demo.process.wait(120) == 1
    text = demo.output()
    assert "captioner exited with code 1" in text and "cannot load model" in text, text
    assert "Traceback" not in text


def test_demo_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from sharpeye_ros.ros.demo import main

    for argv, message in ((["--captions", "0"], "--captions must be > 0"),
                          (["--max-rate", "-1"], "--max-rate must be > 0"),
                          (["--model-path", str(tmp_path / "missing")], "no such directory")):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2 and message in capsys.readouterr().err
