"""Both node executables under the signals supervisors send: SIGINT, SIGTERM and a double
SIGINT (``ros2 launch`` forwards SIGINT to the whole group, so a node often gets two), at
0.3 s, 2 s and 4 s after start (imports, model loading, idle) and in the middle of the
work (a caption in progress; frames being published). Each must exit 0 within 5 s of the
first signal, with no traceback and no C++ abort.

The 24 processes run a few at a time, so the sweep takes about a minute, not four.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pytest

from sharpeye_ros.ros.processes import installed_executable, start_child

rclpy = pytest.importorskip("rclpy")
pytestmark = [pytest.mark.ros, pytest.mark.slow]

KINDS = ("SIGINT", "SIGTERM", "double SIGINT")
MOMENTS = (0.3, 2.0, 4.0, "working")
# docs/robustness.md's signal table: its columns, and the exit code each cell documents.
DOC = Path(__file__).resolve().parents[2] / "docs" / "robustness.md"
COLUMNS = {0.3: "0.3 s after start", 2.0: "2 s after start", 4.0: "4 s after start", "working": "mid-work"}
EXIT_WITHIN = 5.0  # seconds from the first signal; `ros2 launch` escalates to SIGTERM after 5 s
DOUBLE_GAP = 0.1  # seconds between the two SIGINTs
PARALLEL = 4
BAD_OUTPUT = ("Traceback", "terminate called", "KeyboardInterrupt", "Aborted", "RCLError")


def documented_codes() -> dict[tuple[str, Any], int]:
    """(kind, moment) -> the exit code docs/robustness.md's "## Signals" table gives."""
    text = DOC.read_text().split("## Signals", 1)[1]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not set(line) <= set("|- ")]
    header, body = rows[0], rows[1:]
    assert header[1:] == [COLUMNS[m] for m in MOMENTS] and [r[0] for r in body] == list(KINDS), rows
    codes = {}
    for row in body:
        for moment, cell in zip(MOMENTS, row[1:]):
            assert cell.startswith("exit "), cell
            codes[(row[0], moment)] = int(cell.split()[1])
    return codes


@dataclass
class Outcome:
    name: str
    code: Optional[int]
    seconds: float
    output: str
    expected: int = 0

    def problem(self) -> Optional[str]:
        if self.code is None:
            return f"{self.name}: still running {EXIT_WITHIN} s after the signal"
        bad = [b for b in BAD_OUTPUT if b in self.output]
        if self.code != self.expected or bad or self.seconds > EXIT_WITHIN:
            return (f"{self.name}: exit {self.code} after {self.seconds:.2f} s, {bad or 'clean output'}:\n"
                    f"{self.output[-2000:]}")
        return None


def run_case(name: str, command: list[str], log: Path, kind: str, moment: Any,
             ready: Optional[Callable[[subprocess.Popen], bool]] = None) -> Outcome:
    """Start ``command``, signal it at ``moment`` (seconds, or once ``ready``), time its exit;
    the exit code expected is the documented one."""
    outcome = _run_case(name, command, log, kind, moment, ready)
    outcome.expected = documented_codes()[(kind, moment)]
    return outcome


def _run_case(name: str, command: list[str], log: Path, kind: str, moment: Any,
              ready: Optional[Callable[[subprocess.Popen], bool]]) -> Outcome:
    child = start_child(log.stem, command, log.parent, cwd=log.parent)  # writes to ``log``
    process = child.process
    started = time.monotonic()
    try:
        if ready is None:
            time.sleep(max(0.0, started + moment - time.monotonic()))
        else:
            deadline = started + 90
            while not ready(process) and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        if process.poll() is not None:
            return Outcome(name, process.returncode, -1.0, "exited before the signal: " + log.read_text())
        first = time.monotonic()
        process.send_signal(signal.SIGTERM if kind == "SIGTERM" else signal.SIGINT)
        if kind == "double SIGINT":
            time.sleep(DOUBLE_GAP)
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        try:
            code: Optional[int] = process.wait(timeout=EXIT_WITHIN + 10)
        except subprocess.TimeoutExpired:
            code = None
        return Outcome(name, code, time.monotonic() - first, log.read_text())
    finally:
        if process.poll() is None:
            child.signal(signal.SIGKILL)
            process.wait()


def sweep(cases: list[Callable[[], Outcome]]) -> None:
    with ThreadPoolExecutor(PARALLEL) as pool:
        outcomes = list(pool.map(lambda case: case(), cases))
    problems = [p for p in (o.problem() for o in outcomes) if p]
    assert not problems, "\n\n".join(problems)
    assert len(outcomes) == len(KINDS) * len(MOMENTS)


class Feeder:
    """An in-process camera for captioners in their own namespaces: frames on ``image``, and
    an event per namespace set once a frame arrived there and its caption is still running."""

    def __init__(self, context: Any) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        from sharpeye_ros.ros.image_conversion import fill_image_msg

        self.node = Node("signal_feeder", context=context)
        self.busy: dict[str, threading.Event] = {}
        self._qos, self._image_type = qos_profile_sensor_data, Image
        self._image = fill_image_msg(Image(), np.full((120, 160, 3), 90, np.uint8))
        self._pubs: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 50)
        self.node.create_timer(0.1, self._publish)
        self._executor = SingleThreadedExecutor(context=context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._executor.spin, daemon=True)
        self._thread.start()

    def add(self, namespace: str) -> threading.Event:
        with self._lock:
            self.busy[namespace] = threading.Event()
            self._pubs[namespace] = self.node.create_publisher(self._image_type, f"{namespace}/image", self._qos)
        return self.busy[namespace]

    def _publish(self) -> None:
        self._image.header.stamp = self.node.get_clock().now().to_msg()
        with self._lock:
            pubs = list(self._pubs.values())
        for pub in pubs:
            pub.publish(self._image)

    def _on_diagnostics(self, msg: Any) -> None:
        for status in msg.status:
            values = {v.key: v.value for v in status.values}
            for namespace, event in self.busy.items():
                if status.name.startswith(f"{namespace}/") and values.get("frames_received", "0") != "0" \
                        and values.get("frames_captioned") == "0":
                    event.set()  # a frame arrived and its caption is still being written

    def close(self) -> None:
        self._executor.shutdown(timeout_sec=5)
        self.node.destroy_node()


def _endless(config: Any) -> None:
    config.generation.max_new_tokens = 2000
    config.generation.stop = ()  # no early stop
    config.lm.config["max_position_embeddings"] = 2200


@pytest.fixture
def endless_model_dir(save_tiny_model: Callable[..., Path]) -> Path:
    """A tiny model that always writes 2000 tokens: its captions take many seconds."""
    return save_tiny_model("endless", _endless)


def test_captioner_exits_cleanly_on_every_signal_at_every_moment(rclpy_context, endless_model_dir, tmp_path):
    feeder = Feeder(rclpy_context)
    cases = []
    for i, (kind, moment) in enumerate((k, m) for k in KINDS for m in MOMENTS):
        name = f"captioner {kind} at {moment}" + ("" if moment == "working" else " s")
        namespace = f"/signals_{i}"
        log = tmp_path / f"case_{i}" / "captioner.log"
        log.parent.mkdir()
        command = [str(installed_executable("captioner")), "--ros-args", "-r", f"__ns:={namespace}"]
        ready = None
        if moment == "working":  # mid-caption: the endless model, fed frames
            command += ["-p", f"model_path:={endless_model_dir}", "-p", "diagnostics_period:=0.2"]
            busy = feeder.add(namespace)
            ready = (lambda busy: lambda process: busy.is_set())(busy)
        cases.append(lambda a=(name, command, log, kind, moment, ready): run_case(*a))
    try:
        sweep(cases)
    finally:
        feeder.close()


def test_synthetic_camera_exits_cleanly_on_every_signal_at_every_moment(tmp_path):
    cases = []
    for i, (kind, moment) in enumerate((k, m) for k in KINDS for m in MOMENTS):
        name = f"synthetic_camera {kind} at {moment}" + ("" if moment == "working" else " s")
        log = tmp_path / f"case_{i}" / "camera.log"
        log.parent.mkdir()
        command = [str(installed_executable("synthetic_camera")), "--ros-args", "-r", f"__ns:=/camera_signals_{i}",
                   "-p", "rate:=10.0", "-p", "width:=96", "-p", "height:=64"]
        ready = None
        if moment == "working":  # publishing: its first scene is announced with its first frame
            ready = (lambda log: lambda process: "scene test/0" in log.read_text())(log)
        cases.append(lambda a=(name, command, log, kind, moment, ready): run_case(*a))
    sweep(cases)


def test_signal_phases(monkeypatch):
    # What each signal does, by phase, without sending one.
    from sharpeye_ros.ros import spin

    exits = []
    monkeypatch.setattr(spin, "exit_now", lambda code=0: exits.append(code))
    signals = spin.ProcessSignals()
    signals._handle(signal.SIGINT, None)  # while starting: nothing to save, leave at once
    assert exits == [0]
    signals = spin.ProcessSignals()
    signals.phase = spin.RUNNING
    signals._handle(signal.SIGTERM, None)  # while spinning: rclpy stops the executor
    assert exits == [0] and signals.phase == spin.STOPPING and signals.received == signal.SIGTERM
    signals._handle(signal.SIGINT, None)  # again, while stopping: leave at once
    assert exits == [0, 0]
    assert spin.finish(3) == 3  # outside an executable (no handlers installed) main() returns
