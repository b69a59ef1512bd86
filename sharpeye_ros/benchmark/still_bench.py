"""What skipping unchanged views saves and what it misses: the captioner's scene gate measured.

Three measurements (``docs/benchmarks.md``, "Idle when the view is still"):

- :func:`gate_rates` (no ROS): on scene changes of the synthetic world
  (:mod:`sharpeye_ros.world.changes`: a new object, a moved object, a small object
  appearing), how often the gate's measure stays below the threshold (a *false skip*: the
  model would not see the change), and on a still view under camera noise how often it
  reaches it (a needless caption); for colour thumbnails (the node's) and grey ones (why not);
- :func:`still_cpu` (``mode="still"``): the captioner process's CPU seconds per second
  while a still synthetic scene streams in at 10 Hz with fresh sensor noise in every frame,
  gating on (the default threshold) and off (``min_scene_change`` 0), read from
  ``/proc/<pid>/stat`` (Linux);
- ``mode="changing"``: a view that changes every second, alternately by one change of
  :data:`~sharpeye_ros.world.changes.CHANGES` and to a whole new scene; for each change, the
  first caption of a frame showing it must be the model's (``reused`` false), and its stamp
  is at most one caption interval (plus one input frame) after the change.

The node runs as its own process (the installed ``captioner``); the caller owns the DDS
domain, as for :mod:`sharpeye_ros.benchmark.node_bench`. Both ends use the package's Fast
DDS profile (``config/fastdds_large_shm.xml``, as ``captioner.launch.py`` does by default):
with Fast DDS's defaults most 640x480 frames never reach the node (about 130 of 350 did),
so the input was not 10 Hz and a change could wait for a frame that never came. The node's
own count of frames received (``/diagnostics``) is reported with each run.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from sharpeye_ros.benchmark.node_bench import NodeBenchmarkError
from sharpeye_ros.ros.captioner_parameters import SPECS
from sharpeye_ros.ros.parameters import ros_arguments
from sharpeye_ros.ros.processes import Child, installed_executable, start_child
from sharpeye_ros.ros.stamps import stamp_ns

INPUT_RATE = 10.0  # Hz: the camera's frame rate
NOISE_SIGMA = 3.0  # grey levels of a camera's frame-to-frame noise on a still view
NOISE_FRAMES = 20  # noisy frames cycled through (noise is drawn up front, not in the loop)
CHANGE_PERIOD = 1.0  # seconds between two changes of the changing view
NOISE_LEVELS = (3.0, 8.0)  # camera noise of the still pairs in gate_rates
START_TIMEOUT = 180.0
CPU_SAMPLE_PERIOD = 0.25  # seconds between two readings of the node's CPU time in a window
CHANGE_TAIL = 3.0  # seconds the window goes on after the change's caption (its last work, diagnostics)
REPORT_TIMEOUT = 10.0  # seconds to wait for the node's /diagnostics after that caption


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _clock_ticks()  # utime, stime (fields 14, 15)


def gate_rates(scenes: int = 200, threshold: Optional[float] = None, split: str = "test") -> dict:
    """False-skip rates of the gate's measure on the world's scene changes and needless
    captions on still views under camera noise (see the module), at ``threshold`` (default:
    the node's default ``min_scene_change``)."""
    import cv2

    from sharpeye_ros.ros.scene_gate import DEFAULT_MIN_CHANGE, thumbnail, view_change
    from sharpeye_ros.world import CHANGES, add_sensor_noise, scene_change

    threshold = DEFAULT_MIN_CHANGE if threshold is None else threshold
    rng = np.random.default_rng(0)
    changes: dict[str, dict[str, list[float]]] = {"colour": {k: [] for k in CHANGES}, "grey": {k: [] for k in CHANGES}}
    still: dict[str, dict[str, list[float]]] = {"colour": {}, "grey": {}}
    grey = lambda t: cv2.cvtColor(t, cv2.COLOR_RGB2GRAY)  # noqa: E731
    for index in range(scenes):
        for kind in CHANGES:
            change = scene_change(split, index, kind)
            a, b = thumbnail(change.before), thumbnail(change.after)
            changes["colour"][kind].append(view_change(a, b))
            changes["grey"][kind].append(view_change(grey(a), grey(b)))
        for sigma in NOISE_LEVELS:
            a, b = (thumbnail(add_sensor_noise(change.before, sigma, rng)) for _ in range(2))
            still["colour"].setdefault(f"{sigma:g}", []).append(view_change(a, b))
            still["grey"].setdefault(f"{sigma:g}", []).append(view_change(grey(a), grey(b)))

    def summary(values: list[float], below: bool) -> dict:
        hits = sum(v < threshold for v in values) if below else sum(v >= threshold for v in values)
        return {"rate": hits / len(values), "count": hits, "of": len(values), "min": min(values),
                "p5": float(np.percentile(values, 5)), "median": float(np.median(values)), "max": max(values)}

    return {
        "threshold": threshold,
        "scenes": scenes,
        "split": split,
        "false_skips": {space: {k: summary(v, True) for k, v in kinds.items()} for space, kinds in changes.items()},
        "still_recaptions": {space: {s: summary(v, False) for s, v in levels.items()} for space, levels in still.items()},
    }


class _Feed:
    """Publishes frames at INPUT_RATE from ``frame_at(seconds since start) -> (image, label)``
    and records every caption: (stamp_ns, reused, receive time)."""

    def __init__(self, namespace: str, frame_at: Callable[[float], tuple[np.ndarray, int]]) -> None:
        import rclpy
        from sharpeye_ros.ros.spin import BackgroundSpin
        from rclpy.node import Node
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        from sharpeye_ros.msg import Caption

        self._frame_at = frame_at
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node("sharpeye_still_benchmark", namespace=namespace, context=self.context)
        self._image_type = Image
        self.publisher = self.node.create_publisher(Image, "image", qos_profile_sensor_data)
        from diagnostic_msgs.msg import DiagnosticArray

        self.captions: list[tuple[int, bool, float]] = []
        self.sent: list[tuple[int, int]] = []  # (stamp_ns, label)
        self.published_at: dict[int, float] = {}  # stamp_ns -> monotonic time it was published
        self.received: list[tuple[float, int]] = []  # (monotonic, the node's frames_received)
        self.reports: list[tuple[float, dict[str, str]]] = []  # (monotonic, the node's /diagnostics values)
        self._lock = threading.Lock()
        self.node.create_subscription(Caption, "caption", self._on_caption, 50)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self._spinner = BackgroundSpin(self.node)
        self._stop = threading.Event()
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._publish_loop, daemon=True)
        self._thread.start()

    def _on_caption(self, msg) -> None:  # noqa: ANN001
        with self._lock:
            self.captions.append((stamp_ns(msg), bool(msg.reused), time.monotonic()))

    def _on_diagnostics(self, msg) -> None:  # noqa: ANN001
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if "captioner" in status.name and "frames_received" in values:
                with self._lock:
                    self.received.append((time.monotonic(), int(values["frames_received"])))
                    self.reports.append((time.monotonic(), values))

    def received_hz(self, start: float, end: float) -> Optional[float]:
        """Frames per second the node said it received between monotonic ``start`` and
        ``end`` (from its /diagnostics, once a second); None with fewer than two reports."""
        with self._lock:
            inside = [(t, n) for t, n in self.received if start <= t <= end]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def reports_so_far(self) -> list[dict[str, str]]:
        """The node's /diagnostics values received so far, oldest first."""
        with self._lock:
            return [values for _, values in self.reports]

    def report_after(self, captioned: int, timeout: float) -> Optional[dict[str, str]]:
        """The node's /diagnostics values from the second report (the first may have been put
        together while the caption finished) that counts at least ``captioned`` model
        captions; None when none comes within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                counted = [v for _, v in self.reports if int(v.get("frames_captioned", -1)) >= captioned]
            if len(counted) >= 2:
                return counted[1]
            time.sleep(0.2)
        return None

    def _publish_loop(self) -> None:
        from sharpeye_ros.ros.image_conversion import fill_image_msg

        period, k = 1.0 / INPUT_RATE, 0
        while not self._stop.is_set():
            image, label = self._frame_at(k * period)
            msg = fill_image_msg(self._image_type(), image)
            msg.header.stamp = self.node.get_clock().now().to_msg()
            msg.header.frame_id = "camera_optical_frame"
            self.publisher.publish(msg)
            with self._lock:
                self.sent.append((stamp_ns(msg), label))
                self.published_at[stamp_ns(msg)] = time.monotonic()
            k += 1
            self._stop.wait(max(0.0, self._start + k * period - time.monotonic()))

    def snapshot(self) -> tuple[list[tuple[int, bool, float]], list[tuple[int, int]]]:
        with self._lock:
            return list(self.captions), list(self.sent)

    def close(self) -> None:
        import rclpy

        self._stop.set()
        self._thread.join(timeout=5)
        self._spinner.stop()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def _start_captioner(model_path: str, parameters: dict, namespace: str, workdir: Path) -> Child:
    args = [str(installed_executable("captioner")), "--ros-args", "-r", f"__ns:={namespace}",
            *ros_arguments(SPECS, {"model_path": model_path, **parameters})]
    return start_child("captioner", args, workdir, cwd=workdir)


def _wait_first_caption(feed: _Feed, captioner: Child) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not feed.snapshot()[0]:
        if captioner.process.poll() is not None or time.monotonic() > deadline:
            raise NodeBenchmarkError(f"the captioner gave no caption (exit code {captioner.process.poll()}); "
                                     f"its log:\n{captioner.tail()}")
        time.sleep(0.1)


def still_cpu(model_path: str, gating: bool, seconds: float = 30.0, warmup: float = 5.0,
              max_rate: float = 2.0, device: str = "cpu", parameters: Optional[dict] = None) -> dict:
    """CPU seconds per second of the captioner on a still, noisy synthetic scene at
    INPUT_RATE Hz, gating on (default ``min_scene_change``) or off, over ``seconds`` after
    its first caption and ``warmup`` more seconds; ``parameters``: more of the node's.

    Gating on, the still window may hold no forced caption: the node's still period
    stretches to its last caption's time / ``max_still_share`` (over ten minutes for the paper
    size on a 2-core CPU). So the view then changes to another scene, and the window goes
    on until that change's caption and CHANGE_TAIL seconds more: the CPU of one model
    caption is measured on it (a caption of a changed view does what a forced one does).
    The result holds the parts of the amortised still cost (idle rate between model
    captions, CPU per model caption) and the node's own still period from /diagnostics,
    with the model's last caption time that it follows; ``cpu_seconds_per_second`` is the
    still window's alone."""
    from sharpeye_ros.world import add_sensor_noise, generate_scene

    rng = np.random.default_rng(0)
    views = [[add_sensor_noise(generate_scene("test", index).image, NOISE_SIGMA, rng) for _ in range(NOISE_FRAMES)]
             for index in (0, 1)]
    shown = {"view": 0}  # the view the feed publishes: 1 once it changed (gating on)
    namespace = "/sharpeye_still_benchmark"
    workdir = Path(tempfile.mkdtemp(prefix="sharpeye_still_"))
    parameters = {"max_rate": float(max_rate), "device": device, **(parameters or {})}
    if not gating:
        parameters["min_scene_change"] = 0.0
    captioner = _start_captioner(model_path, parameters, namespace, workdir)
    pid = captioner.process.pid
    feed = _Feed(namespace, lambda t: (views[shown["view"]][int(round(t * INPUT_RATE)) % NOISE_FRAMES],
                                       shown["view"]))
    samples: list[tuple[float, float]] = []  # (monotonic, the node's CPU seconds so far)

    def sample_until(done: Callable[[], bool], deadline: float) -> None:
        while not done() and time.monotonic() < deadline:
            time.sleep(CPU_SAMPLE_PERIOD)
            samples.append((time.monotonic(), process_cpu_seconds(pid)))

    report, window_report, change_caption = None, None, None
    try:
        _wait_first_caption(feed, captioner)
        time.sleep(warmup)
        start_cpu, start, (before, _) = process_cpu_seconds(pid), time.monotonic(), feed.snapshot()
        # The last model caption before the window (None: the feed missed it, unlike any reused one).
        first_model = max((received for _, reused, received in before if not reused), default=None)
        samples.append((start, start_cpu))
        sample_until(lambda: False, start + seconds)
        end, end_cpu = samples[-1]
        still_window = feed.snapshot()[0][len(before):]
        received_hz = feed.received_hz(start, end)
        if gating:
            reports_before = feed.reports_so_far()
            window_report = reports_before[-1] if reports_before else None  # the still window's period
            captioned_before = max((int(v["frames_captioned"]) for v in reports_before), default=0)
            shown["view"] = 1

            def changed() -> list[tuple[int, bool, float]]:  # the model's captions of the new view
                captions, sent = feed.snapshot()
                label = dict(sent)
                return [c for c in captions if not c[1] and label.get(c[0]) == 1]

            sample_until(lambda: bool(changed()), time.monotonic() + START_TIMEOUT)
            if changed():
                change_caption = changed()[0]
                tail = time.monotonic() + CHANGE_TAIL
                sample_until(lambda: False, tail)
                report = feed.report_after(captioned_before + 1, REPORT_TIMEOUT)
        published_at = dict(feed.published_at)
        window = feed.snapshot()[0][len(before):]
    finally:
        feed.close()
        captioner.stop()
    spans = [(published_at[stamp], received) for stamp, reused, received in window
             if not reused and stamp in published_at]
    idle, per_caption = split_cpu(samples, spans)
    forced = [received for _, reused, received in still_window if not reused]
    out = {
        "gating": gating,
        "seconds": end - start,
        "cpu_seconds_per_second": (end_cpu - start_cpu) / (end - start),
        "captions": len(still_window),
        "model_captions": len(forced),
        "reused_captions": sum(1 for _, reused, _ in still_window if reused),
        "input_rate_hz": INPUT_RATE,
        "noise_sigma": NOISE_SIGMA,
        "max_rate_hz": max_rate,
        "max_still_seconds": float(parameters.get("max_still_seconds", SPECS["max_still_seconds"].default)),
        "input_received_hz": received_hz,
        "idle_cpu_seconds_per_second": idle,
        "model_caption_cpu_seconds": per_caption,
    }
    if gating:
        # Seconds of the still window after the last model caption before it: a forced
        # caption must come in it when they reach the still period.
        if first_model is not None:
            out["still_seconds"] = end - first_model
        if window_report is not None:
            out["window_still_period_s"] = float(window_report["still_period_s"])
        if change_caption is not None:
            stamp, _, received = change_caption
            out["change_caption_wall_seconds"] = received - published_at[stamp]  # frame sent -> caption back
        if report is not None:
            out["max_still_share"] = float(report["max_still_share"])
            out["still_period_s"] = float(report["still_period_s"])
            out["model_last_s"] = float(report["model_last_s"])
    return out


def split_cpu(samples: Sequence[tuple[float, float]], spans: Sequence[tuple[float, float]],
              min_idle_share: float = 0.2) -> tuple[Optional[float], Optional[float]]:
    """A window's CPU readings ``samples`` ((time, CPU seconds so far), in time order) split
    into the idle rate, CPU seconds per second outside the model captions (each ``spans``:
    (frame published, caption received)), and the CPU seconds each model caption added
    beyond that rate. A reading interval counts as a caption's when it overlaps its span,
    and the one after it too (the caption's last work and publishing). None where there is
    too little of either: idle less than ``min_idle_share`` of the window, or no caption."""
    if len(samples) < 2:
        return None, None
    busy_cpu = busy_time = idle_cpu = idle_time = 0.0
    after_span = False
    for (t0, c0), (t1, c1) in zip(samples, samples[1:]):
        in_span = any(a < t1 and b > t0 for a, b in spans)
        if in_span or after_span:
            busy_cpu, busy_time = busy_cpu + c1 - c0, busy_time + t1 - t0
        else:
            idle_cpu, idle_time = idle_cpu + c1 - c0, idle_time + t1 - t0
        after_span = in_span
    total = samples[-1][0] - samples[0][0]
    if total <= 0 or idle_time < min_idle_share * total:
        return None, None
    idle = idle_cpu / idle_time
    per_caption = (busy_cpu - idle * busy_time) / len(spans) if spans else None
    return idle, per_caption


def changing_view(model_path: str, changes: int = 30, max_rate: float = 2.0, device: str = "cpu",
                  model_name: str = "") -> dict:
    """The view changes every CHANGE_PERIOD seconds (see the module); per change, whether its
    first caption was the model's and how long after the change its frame was stamped."""
    from sharpeye_ros.world import CHANGES, scene_change

    segments = []  # the image shown in each CHANGE_PERIOD, and what changed into it
    for j in range(changes + 1):
        kind = CHANGES[(j // 2) % len(CHANGES)]
        change = scene_change("test", 100 + j // 2, kind)
        segments.append((change.before if j % 2 == 0 else change.after, "new scene" if j % 2 == 0 else kind))
    namespace = "/sharpeye_still_benchmark"
    workdir = Path(tempfile.mkdtemp(prefix="sharpeye_changing_"))
    captioner = _start_captioner(model_path, {"max_rate": float(max_rate), "device": device}, namespace, workdir)
    ready = threading.Event()
    started: dict[str, float] = {}

    def frame_at(t: float) -> tuple[np.ndarray, int]:
        if not ready.is_set():
            return segments[0][0], -1  # until the node answers: the first view, not counted
        offset = started.setdefault("t", t)
        j = min(int((t - offset + 1e-9) / CHANGE_PERIOD) + 1, len(segments) - 1)
        return segments[j][0], j

    feed = _Feed(namespace, frame_at)
    try:
        _wait_first_caption(feed, captioner)
        time.sleep(2.0)
        ready.set()
        start = time.monotonic()
        deadline = start + changes * CHANGE_PERIOD + 5.0
        while time.monotonic() < deadline:
            time.sleep(0.2)
        received_hz = feed.received_hz(start, time.monotonic())
    finally:
        feed.close()
        captioner.stop()
    captions, sent = feed.snapshot()
    first_stamp: dict[int, int] = {}
    label_of = {}
    for stamp, label in sent:
        label_of[stamp] = label
        if label >= 1 and label not in first_stamp:
            first_stamp[label] = stamp
    interval_ns = int(1e9 / max_rate + 1e9 / INPUT_RATE)  # one caption interval, plus one frame
    per_change = []
    for j in range(1, changes + 1):
        if j not in first_stamp:
            continue
        showing = sorted((stamp, reused) for stamp, reused, _ in captions if label_of.get(stamp) == j)
        first = showing[0] if showing else None
        per_change.append({
            "change": segments[j][1],
            "captioned": first is not None and not first[1],
            "delay_s": (first[0] - first_stamp[j]) / 1e9 if first else None,
            "model_captions": sum(1 for _, reused in showing if not reused),
        })
    in_time = [c for c in per_change if c["captioned"] and c["delay_s"] is not None
               and c["delay_s"] * 1e9 <= interval_ns]
    return {
        "changes": len(per_change),
        "captioned_in_time": len(in_time),
        "interval_s": interval_ns / 1e9,
        "max_delay_s": max((c["delay_s"] for c in per_change if c["delay_s"] is not None), default=None),
        "per_change": per_change,
        "max_rate_hz": max_rate,
        "input_rate_hz": INPUT_RATE,
        "change_period_s": CHANGE_PERIOD,
        "model_name": model_name,
        "input_received_hz": received_hz,
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``still_bench SPEC.json OUT.json``: one measurement in this (fresh) process; SPEC holds
    ``mode`` ("rates", "still" or "changing") and that function's arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2:
        print("usage: still_bench SPEC.json OUT.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    mode = spec.pop("mode")
    run = {"rates": gate_rates, "still": still_cpu, "changing": changing_view}[mode]
    if mode != "rates":  # before this process starts DDS: the feed and the node (its child) alike
        from sharpeye_ros.benchmark.node_bench import LARGE_SHM_PROFILE
        from sharpeye_ros.ros.launch_support import PROFILE_VARIABLES
        from sharpeye_ros.ros.processes import installed_file

        try:
            profile = installed_file("share", f"config/{LARGE_SHM_PROFILE}")
        except FileNotFoundError as err:
            print(err, file=sys.stderr)
            return 1
        for variable in PROFILE_VARIABLES:
            os.environ.pop(variable, None)
        os.environ[PROFILE_VARIABLES[0]] = str(profile)
    try:
        result = run(**spec)
    except NodeBenchmarkError as err:
        print(err, file=sys.stderr)
        return 1
    Path(argv[1]).write_text(json.dumps(result, indent=1))
    return 0


__all__ = ["gate_rates", "still_cpu", "split_cpu", "changing_view", "process_cpu_seconds", "main", "INPUT_RATE",
           "NOISE_SIGMA", "CHANGE_PERIOD"]
