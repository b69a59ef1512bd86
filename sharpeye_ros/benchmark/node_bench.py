"""End-to-end latency through the running ``captioner`` node: image stamp -> caption.

Starts the installed ``captioner`` executable as a process, publishes 640x480 frames
(rgb8 and bgr8 in turn) stamped with the current time, and receives ``caption``. Each
frame goes out once the previous one's caption came back (or it was given up as lost),
after a short gap: every frame finds the node idle, so what is measured is the node's
own overhead, not waiting behind an earlier caption (that is throughput, measured by the
model benchmark's captions per second). Per caption:

- latency: receive time - ``header.stamp`` (and the node's own ``latency_seconds``,
  stamp -> publish);
- model time: ``glance_seconds + refine_seconds``;
- overhead: latency - model time (image transport, conversion, scheduling, message
  building and the caption's delivery).

The caller owns the DDS set-up: run it with a ROS_DOMAIN_ID of its own
(:func:`sharpeye_ros.ros.processes.isolate_dds`).
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

from sharpeye_ros.benchmark.measure import percentile, summarize
from sharpeye_ros.ros.launch_support import PROFILE_VARIABLES
from sharpeye_ros.ros.captioner_parameters import SPECS
from sharpeye_ros.ros.parameters import ros_arguments
from sharpeye_ros.ros.processes import installed_executable, installed_file, start_child
from sharpeye_ros.ros.stamps import NS_PER_S, stamp_ns

ENCODINGS = ("rgb8", "bgr8")
RELIABILITIES = ("best_effort", "reliable")
TRANSPORTS = ("default", "large_shm")
# What the benchmark runs: the shipped defaults first.
NODE_VARIANTS = {
    "best_effort": {"reliability": "best_effort", "transport": "default"},
    "best_effort_large_shm": {"reliability": "best_effort", "transport": "large_shm"},
    "reliable": {"reliability": "reliable", "transport": "default"},
    "reliable_large_shm": {"reliability": "reliable", "transport": "large_shm"},
}
# Fast DDS's shared-memory segment is 512 KiB by default: a 640x480 rgb8 frame (0.9 MB)
# then goes as UDP fragments, which a busy receiver drops (best effort) or which are
# acknowledged and resent (reliable). The package's profile config/fastdds_large_shm.xml
# (used by both ends) gives shared memory a 16 MiB segment; other RMWs ignore it.
LARGE_SHM_PROFILE = "fastdds_large_shm.xml"
NAMESPACE = "/sharpeye_benchmark"
PUBLISH_GAP = 0.02  # seconds between a caption and the next frame
START_TIMEOUT = 180.0  # seconds for the node to load its model and answer the first frame


class NodeBenchmarkError(RuntimeError):
    """The node benchmark cannot run; the message says why."""


def frame_timeout(model_seconds: Sequence[float]) -> float:
    """Seconds to wait for a frame's caption before counting it lost: five times the
    median warm-up caption, at least one second."""
    if not model_seconds:
        raise ValueError("frame_timeout: no warm-up captions")
    return max(5.0 * percentile(model_seconds, 50), 1.0)


def latency_summary(records: Sequence[dict]) -> dict:
    """Summaries of latency, model time and overhead (seconds) over ``records``, each
    with ``receive_latency``, ``message_latency`` and ``model``."""
    if not records:
        raise ValueError("latency_summary: no captions")
    recv = [r["receive_latency"] for r in records]
    msg = [r["message_latency"] for r in records]
    model = [r["model"] for r in records]
    return {
        "latency": summarize(recv),
        "message_latency": summarize(msg),
        "model": summarize(model),
        "overhead": summarize([a - m for a, m in zip(recv, model)]),
        "message_overhead": summarize([a - m for a, m in zip(msg, model)]),
    }


def _precision_logged(log: str) -> str:
    """The precision the captioner says at start-up it runs ('... with MODEL on cpu
    (PRECISION)'), or ''. PRECISION may itself hold ' on cpu (...)' (``auto``'s reason)."""
    match = re.search(r"captioning '.*?' .*? Hz with .*? on \S+ \((.*)\)\s*$", log, re.MULTILINE)
    return match.group(1) if match else ""


def _count(received: dict, sent: dict, lock: threading.Condition) -> int:
    with lock:
        return sum(1 for stamp in sent if stamp in received)


def run_node_benchmark(
    model_path: str,
    captions: int = 30,
    warmup: int = 3,
    device: str = "cpu",
    refine: bool = True,
    zoom: bool = False,
    reliability: str = "best_effort",
    image_size: tuple[int, int] = (640, 480),
    max_seconds: float = 300.0,
    dtype: str = "auto",
) -> dict:
    """Latency of ``captions`` captions (frames of ``image_size`` alternate rgb8 and bgr8)
    through the node, whose image subscription has QoS ``reliability`` (the publisher here
    matches it). Publishing stops after ``max_seconds`` even with fewer captions. ``dtype``:
    the node's precision parameter (auto: the CPU fast path where it pays).
    Raises :class:`NodeBenchmarkError` when rclpy, the messages or the executable are missing."""
    try:
        import rclpy
        from rclpy.utilities import get_rmw_implementation_identifier
        from rclpy.node import Node
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from sharpeye_ros.msg import Caption
    except ImportError as err:
        raise NodeBenchmarkError(
            f"the node benchmark needs rclpy and the built messages ({err}): run "
            "`scripts/setup; source scripts/env.sh` first (or pass --model-only)"
        ) from None
    from sharpeye_ros.benchmark.worker import benchmark_images
    from sharpeye_ros.ros.image_conversion import fill_image_msg
    from sharpeye_ros.ros.spin import BackgroundSpin

    if captions < 2 or warmup < 1:
        raise ValueError(f"node benchmark: need captions >= 2 and warmup >= 1, got {captions} and {warmup}")
    if reliability not in RELIABILITIES:
        raise ValueError(f"node benchmark: reliability must be one of {RELIABILITIES}, got {reliability!r}")
    max_frames = 4 * captions + 20
    try:
        executable = installed_executable("captioner")
    except FileNotFoundError as err:
        raise NodeBenchmarkError(f"{err} (or pass --model-only)") from None
    frames = []
    for image in benchmark_images(4, image_size):
        frames += [(encoding, fill_image_msg(Image(), image, encoding)) for encoding in ENCODINGS]

    workdir = Path(tempfile.mkdtemp(prefix="sharpeye_benchmark_"))
    # Scene gating off: the same four images come round again, and a republished caption
    # would time the gate instead of the model (still_bench measures the gate).
    values = {"model_path": model_path, "max_rate": 100.0, "refine": refine, "zoom": zoom, "device": device,
              "reliability": reliability, "min_scene_change": 0.0, "dtype": dtype}
    args = [str(executable), "--ros-args", *ros_arguments(SPECS, values), "-r", f"__ns:={NAMESPACE}"]
    # cwd outside the source tree, which would shadow the installed package.
    captioner = start_child("captioner", args, workdir, cwd=workdir)
    process = captioner.process
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node("sharpeye_benchmark_client", namespace=NAMESPACE, context=context)
    received: dict[int, dict] = {}
    lock = threading.Condition()

    def on_caption(msg) -> None:
        now = node.get_clock().now().nanoseconds
        stamp = stamp_ns(msg)
        with lock:
            received[stamp] = {
                "receive_latency": (now - stamp) / NS_PER_S,
                "message_latency": float(msg.latency_seconds),
                "model": float(msg.glance_seconds) + float(msg.refine_seconds),
                "refined": bool(msg.refined),
            }
            lock.notify_all()

    node.create_subscription(Caption, "caption", on_caption, 10)
    policy = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=policy)
    publisher = node.create_publisher(Image, "image", qos)
    spinner = BackgroundSpin(node)

    def publish(i: int) -> tuple[int, str]:
        encoding, msg = frames[i % len(frames)]
        msg.header.stamp = node.get_clock().now().to_msg()
        publisher.publish(msg)
        return stamp_ns(msg), encoding

    try:
        # Start-up: until the node has loaded its model and answered, and a few more. A
        # busy node captions the newest frame it has, so any caption counts.
        deadline, i = time.monotonic() + START_TIMEOUT, 0
        while len(received) < warmup:
            if process.poll() is not None or time.monotonic() > deadline:
                raise NodeBenchmarkError(
                    f"the captioner gave {len(received)} of {warmup} warm-up captions "
                    f"(exit code {process.poll()}); its log:\n{captioner.output()[-3000:]}"
                )
            before = len(received)
            publish(i)
            i += 1
            with lock:
                lock.wait_for(lambda: len(received) > before or process.poll() is not None, 1.0)
        with lock:
            warm = [r["model"] for r in received.values()]
        timeout = frame_timeout(warm[1:] or warm)  # the first caption pays for lazy set-up
        time.sleep(timeout)  # late warm-up captions come back before the measured frames
        # Frames can be lost on the way (a best-effort 640x480 frame is ~0.9 MB of UDP
        # fragments): publish until ``captions`` came back, or give up after max_frames.
        sent: dict[int, str] = {}
        start, k = time.monotonic(), 0
        while (
            k < max_frames
            and _count(received, sent, lock) < captions
            and time.monotonic() - start < max_seconds
        ):
            stamp, encoding = publish(i + k)
            sent[stamp] = encoding
            k += 1
            with lock:
                lock.wait_for(lambda: stamp in received or process.poll() is not None, timeout)
            time.sleep(PUBLISH_GAP)
    finally:
        captioner.stop()
        spinner.stop()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    records = {stamp: received[stamp] for stamp in sent if stamp in received}
    if len(records) < 2:
        raise NodeBenchmarkError(
            f"only {len(records)} of {captions} frames were captioned; the node's log:\n"
            f"{captioner.output()[-3000:]}"
        )
    result = {
        "captions": len(records),
        "frames_sent": len(sent),
        "frames_lost": len(sent) - len(records),
        "publish_gap_s": PUBLISH_GAP,
        "frame_timeout_s": timeout,
        "image_size": list(image_size),
        "device": device,
        "dtype": dtype,
        "runs": _precision_logged(captioner.output()),
        "refine": refine,
        "zoom": zoom,
        "reliability": reliability,
        "rmw": get_rmw_implementation_identifier(),
        "all": latency_summary(list(records.values())),
        "refined": all(r["refined"] for r in records.values()),
    }
    for encoding in ENCODINGS:
        chosen = [r for stamp, r in records.items() if sent[stamp] == encoding]
        if chosen:
            result[encoding] = latency_summary(chosen)
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``node_bench SPEC.json OUT.json``: one node run in this (fresh) process. SPEC holds
    :func:`run_node_benchmark`'s arguments and ``transport`` ("default" or "large_shm",
    which must be chosen before this process starts DDS)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2:
        print("usage: node_bench SPEC.json OUT.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    transport = spec.pop("transport", "default")
    if transport not in TRANSPORTS:
        raise ValueError(f"node benchmark: transport must be one of {TRANSPORTS}, got {transport!r}")
    if transport == "large_shm":
        try:
            profile = installed_file("share", f"config/{LARGE_SHM_PROFILE}")
        except FileNotFoundError as err:
            print(err, file=sys.stderr)
            return 1
        os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(profile)  # this process and the node
    else:  # the RMW's defaults, even where the caller exported a profile
        for variable in PROFILE_VARIABLES:
            os.environ.pop(variable, None)
    try:
        result = run_node_benchmark(**spec)
    except NodeBenchmarkError as err:
        print(err, file=sys.stderr)
        return 1
    result["transport"] = transport
    Path(argv[1]).write_text(json.dumps(result, indent=1))
    return 0


__all__ = [
    "NODE_VARIANTS",
    "main",
    "NodeBenchmarkError",
    "frame_timeout",
    "latency_summary",
    "run_node_benchmark",
]
