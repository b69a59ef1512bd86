"""``captioner``: the ROS 2 node that captions a camera stream with the Sharp-Eyes specialist.

Subscribes ``image`` (sensor_msgs/Image), or ``<image>/compressed`` (CompressedImage) with
``image_transport:=compressed`` (image_transport's naming: one remap of ``image`` serves both),
with sensor-data QoS of depth 1. The callback only hands the frame to a
:class:`~sharpeye_ros.ros.frame_gate.FrameGate`, which keeps the newest frame and limits
captions to ``max_rate`` Hz on the frames' stamps; a worker thread converts, captions and
publishes, so the executor stays free for parameters and shutdown. Publishes:

- ``caption`` (sharpeye_ros/Caption): header copied from the frame, attended regions in pixels;
- ``caption_image`` (sensor_msgs/Image): the frame with regions and caption drawn, only while
  someone subscribes;
- ``caption_markers`` (visualization_msgs/MarkerArray): the caption as text in the camera's
  frame, only while someone subscribes;
- ``/diagnostics`` (diagnostic_msgs/DiagnosticArray): rates, latency, drops and errors.

Example::

    ros2 run sharpeye_ros captioner --ros-args -r image:=/camera/image_raw \\
        --params-file config/captioner.yaml
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Optional

import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.logging import LoggingSeverity
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import InvalidQosOverridesError, QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image
from visualization_msgs.msg import MarkerArray

from sharpeye_ros.msg import Caption
from sharpeye_ros.ros import diagnostics
from sharpeye_ros.ros.caption_messages import (annotated_image_msg, caption_markers_msg, caption_msg,
                                               result_problem, select_regions)
from sharpeye_ros.ros.captioner_parameters import PARAMETERS, SPECS, CaptionerSettings
from sharpeye_ros.ros.diagnostics import (CONVERSION, INFERENCE, PUBLISH, CaptionerHealth, InputLog, LogThrottle,
                                          frame_latency, no_input_warning)
from sharpeye_ros.ros.frame_gate import THROTTLED, FrameGate, GatedFrame, Offer
from sharpeye_ros.ros.image_conversion import ImageConversionError, compressed_msg_to_rgb, image_msg_to_rgb
from sharpeye_ros.ros.parameters import declare, watch
from sharpeye_ros.ros.spin import exit_now, finish, init_rclpy, spin_until_shutdown
from sharpeye_ros.ros.stamps import NS_PER_S, stamp_ns, stamp_seconds

NODE_NAME = "captioner"
ERROR_LOG_PERIOD = 5.0  # seconds between two error lines of one kind; the rest are counted
NO_INPUT_WARN = 5.0  # seconds without a frame before diagnostics and the log warn
INPUT_LOG_PERIOD = 30.0  # seconds between two log lines about the input of one kind
WORKER_JOIN_TIMEOUT = 3.0  # seconds shutdown waits for a caption in progress
_LEVELS = {diagnostics.OK: DiagnosticStatus.OK, diagnostics.WARN: DiagnosticStatus.WARN,
           diagnostics.ERROR: DiagnosticStatus.ERROR}


class StartupError(RuntimeError):
    """The node cannot start (bad parameter, model that does not load); the message says why."""


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; StartupError for an unusable CUDA device."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise StartupError(f"parameter 'device' is {device!r} but CUDA is not available "
                               "(use device:=cpu or auto)")
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise StartupError(f"parameter 'device' is {device!r} but only {torch.cuda.device_count()} "
                               "CUDA device(s) exist")
    return device


def resolve_dtype(dtype: str, device: str):
    """The parameter ``dtype`` on ``device`` as a :class:`~sharpeye_ros.model.precision.Precision`
    (``auto``: see there); StartupError when it cannot run there (int8 off an x86 CPU)."""
    from sharpeye_ros.model.precision import resolve

    try:
        return resolve(dtype, device)
    except ValueError as err:
        raise StartupError(f"parameter 'dtype': {err}") from None


class CaptionerNode(Node):
    """The captioner. ``model``: an already loaded model to use instead of ``model_path``
    (embedding and tests); other keyword arguments go to :class:`rclpy.node.Node`.

    Raises :class:`StartupError` for bad parameters or a model that does not load.
    """

    def __init__(self, *, model: Any = None, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._settings = self._declare_parameters()
        s = self._settings
        if model is None:
            model = self._load_model(s)
        self._model = model
        self._device = str(getattr(model, "device", "unknown"))
        precision = getattr(model, "precision", None)
        self._dtype = (precision.name if precision is not None
                       else str(getattr(model, "dtype", "unknown")).replace("torch.", ""))
        self._model_id = str(getattr(self._model, "model_id", "") or s.model_path)
        self._can_refine = getattr(self._model, "deeplens", True) is not None
        if s.refine and not self._can_refine:
            self.get_logger().warning("this model has no DeepLens refinement: running with refine=false")
            self.set_parameters([Parameter("refine", value=False)])
            s = self._settings = self._settings.updated({"refine": False})

        self._gate: FrameGate[Any] = FrameGate(s.max_rate)
        self._health = CaptionerHealth(time.monotonic(), no_input_warn=NO_INPUT_WARN)
        self._log_throttle = LogThrottle(ERROR_LOG_PERIOD)  # used by the worker only
        self._input_log = InputLog(INPUT_LOG_PERIOD)

        reliability = (ReliabilityPolicy.RELIABLE if s.reliability == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        sensor_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=reliability,
                                durability=DurabilityPolicy.VOLATILE)
        # image_transport's convention: the compressed stream of image topic T is T/compressed.
        topics = {"raw": self.resolve_topic_name("image")}
        topics["compressed"] = topics["raw"].rstrip("/") + "/compressed"
        self._other_transport = "compressed" if s.image_transport == "raw" else "raw"
        self._other_topic = topics[self._other_transport]
        # The standard QoS override parameters, as image_proc has them:
        # qos_overrides.<topic>.subscription.{reliability,depth,history,durability}
        # (fixed at start-up). They win over the `reliability` parameter, now an alias.
        overrides = QoSOverridingOptions.with_default_policies()
        msg_type = CompressedImage if s.image_transport == "compressed" else Image
        self._convert = compressed_msg_to_rgb if s.image_transport == "compressed" else image_msg_to_rgb
        try:
            self._sub = self.create_subscription(msg_type, topics[s.image_transport], self._on_image,
                                                 sensor_qos, qos_overriding_options=overrides)
        except (InvalidQosOverridesError, ParameterException, ValueError, RuntimeError) as err:
            raise StartupError(f"QoS override of the image subscription rejected: {err}") from None
        # Reliable publishers match both reliable (RViz's default) and best-effort subscribers.
        self._caption_pub = self.create_publisher(Caption, "caption", 10)
        self._image_pub = self.create_publisher(Image, "caption_image", 1)
        self._marker_pub = self.create_publisher(MarkerArray, "caption_markers", 1)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # Diagnostics on the steady clock: they must keep coming while sim time is paused.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._diag_timer = self.create_timer(s.diagnostics_period, self.publish_diagnostics, clock=steady)
        self._watch_timer = self.create_timer(1.0, self._watch_input, clock=steady)
        watch(self, SPECS, self._apply_parameters)

        self._worker = threading.Thread(target=self._run_worker, name="captioner-worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"captioning '{self._sub.topic_name}' ({s.image_transport}, {self.image_qos}) at up to "
            f"{s.max_rate:g} Hz with {self._model_id} on {self._device} "
            f"({precision.describe() if precision is not None else self._dtype})")

    # ---- start-up ------------------------------------------------------------------
    def _declare_parameters(self) -> CaptionerSettings:
        try:
            return CaptionerSettings.from_values(declare(self, PARAMETERS))
        except ValueError as err:
            raise StartupError(str(err)) from None

    def _load_model(self, s: CaptionerSettings) -> Any:
        from sharpeye_ros.model import SharpEyes, default_model_path

        path = s.model_path or str(default_model_path())
        try:
            device = resolve_device(s.device)
            precision = resolve_dtype(s.dtype, device)
            model = SharpEyes.from_pretrained(path, device=device, dtype=precision)
        except StartupError:
            raise
        except Exception as err:  # any failure to load is one clear message, never a traceback
            raise StartupError(f"cannot load model '{path}': {err}") from None
        if not s.model_path:
            self.get_logger().warning(
                f"model_path is empty: using the shipped demo model ({path}). It only knows the "
                "synthetic world of coloured shapes; set model_path to caption real camera images.")
        return model

    # ---- parameters ----------------------------------------------------------------
    def _apply_parameters(self, changes: dict[str, Any]) -> Optional[str]:
        """Take new parameter values (see :func:`~sharpeye_ros.ros.parameters.watch`): the
        reason when they are refused, else None."""
        try:
            settings = self._settings.updated(changes)
        except ValueError as err:
            return str(err)
        if settings.refine and not self._can_refine:
            return "parameter 'refine' cannot be true: this model has no DeepLens refinement"
        self._settings = settings
        if "max_rate" in changes:
            self._gate.set_max_rate(settings.max_rate)
        changed = ", ".join(f"{k}={v!r}" for k, v in changes.items())
        self.get_logger().info(f"parameters changed: {changed}")
        return None

    @property
    def settings(self) -> CaptionerSettings:
        """The parameters' current values."""
        return self._settings

    @property
    def image_qos(self) -> str:
        """The image subscription's QoS in words, overrides applied (e.g. 'best_effort, depth 1')."""
        qos = self._sub.qos_profile
        return f"{qos.reliability.name.lower()}, depth {qos.depth}"

    def _debug(self) -> bool:
        return self.get_logger().is_enabled_for(LoggingSeverity.DEBUG)

    # ---- input ---------------------------------------------------------------------
    def _on_image(self, msg: Any) -> None:
        # O(1): no decoding here, the worker converts the frame it actually captions.
        now = time.monotonic()
        offer = self._gate.offer(msg, stamp_ns(msg), self.get_clock().now().nanoseconds)
        self._health.record_input(now, offer.fallback)
        for line in self._input_log.offer(offer, now):
            self.get_logger().warning(line)
        if self._debug():
            self.get_logger().debug(f"frame {stamp_seconds(msg):.3f}: {offer.describe()}")

    def _watch_input(self) -> None:
        """Say so (throttled) when no frame has come for a while, with a hint where they are."""
        now = time.monotonic()
        seconds, received = self._health.silence(now)
        if seconds < NO_INPUT_WARN:
            return
        topic = self._sub.topic_name
        text = no_input_warning(topic, self._settings.image_transport, seconds, received,
                                self.count_publishers(topic), self._other_topic, self._other_transport,
                                self.count_publishers(self._other_topic))
        for line in self._input_log.silence(text, now):
            self.get_logger().warning(line)

    # ---- worker --------------------------------------------------------------------
    def _run_worker(self) -> None:
        while True:
            item = self._gate.take()
            if item is None:  # the gate was closed: shutting down
                return
            try:
                self._caption(item)
            except Exception as err:  # never let one frame kill the worker
                if self._gate.closed or not self.context.ok():
                    return  # shutting down (a signal shut the context): nothing to report
                self._error(PUBLISH, f"cannot publish the caption or its annotations: "
                                     f"{type(err).__name__}: {err}")

    def _caption(self, item: GatedFrame[Any]) -> None:
        published = None
        try:
            published = self._caption_frame(item)
        finally:  # only a captioned frame starts the rate interval
            dropped = self._gate.done(item, published is not None)
            if dropped is not None and self._debug():
                self.get_logger().debug(f"frame {dropped.stamp_ns / NS_PER_S:.3f}: "
                                        f"{Offer(False, dropped=THROTTLED).describe()}")
        if published is not None:
            self._annotate(item.frame.header, *published)

    def _caption_frame(self, item: GatedFrame[Any]) -> Optional[tuple[Any, Any, list]]:
        """Convert, caption and publish one frame: (rgb, result, regions) once the caption
        is out, None when the frame was dropped."""
        msg, s = item.frame, self._settings
        start = time.perf_counter()
        warnings: list[str] = []
        try:
            rgb = self._convert(msg, max_pixels=s.max_image_pixels, max_aspect_ratio=s.max_aspect_ratio,
                                warnings=warnings)
        except ImageConversionError as err:
            self._error(CONVERSION, f"frame dropped: {err}")
            self.get_logger().debug(f"frame {item.stamp_ns / NS_PER_S:.3f} dropped: conversion failed: {err}")
            return None
        for text in warnings:
            self._warn(CONVERSION, text)
        model_start = time.perf_counter()
        try:
            with torch.inference_mode():
                (result,) = self._model.caption([rgb], refine=s.refine, zoom=s.zoom,
                                                num_regions=s.num_regions,
                                                task=None if s.task == "auto" else s.task)
        except Exception as err:
            self._error(INFERENCE, f"captioning failed: {type(err).__name__}: {err}")
            return None
        problem = result_problem(result)
        if problem is not None:  # e.g. NaN activations: not a caption worth publishing
            self._error(INFERENCE, f"caption not published: {problem}")
            return None
        model_seconds = time.perf_counter() - model_start
        if self._gate.closed:
            return None
        regions = select_regions(result.regions, s.min_region_score, s.num_regions)
        height, width = rgb.shape[:2]
        latency, unmeasured = frame_latency(self.get_clock().now().nanoseconds, item.stamp_ns)
        caption = caption_msg(result, regions, msg.header, width, height, self._model_id, latency)
        self._caption_pub.publish(caption)
        overhead = time.perf_counter() - start - model_seconds
        self._health.record_caption(time.monotonic(), latency, model_seconds, overhead, unmeasured)
        for line in self._input_log.latency(unmeasured, time.monotonic()):
            self.get_logger().warning(line)
        if self._debug():
            stages = ", ".join(f"{name} {seconds * 1e3:.1f} ms" for name, seconds in result.timings.items())
            self.get_logger().debug(
                f"frame {item.stamp_ns / NS_PER_S:.3f} captioned: conversion {(model_start - start) * 1e3:.1f} ms, "
                f"model {model_seconds * 1e3:.1f} ms ({stages}), publishing {(overhead - (model_start - start)) * 1e3:.1f} ms, "
                f"latency {latency:.3f} s")
        return rgb, result, regions

    def _annotate(self, header: Any, rgb: Any, result: Any, regions: list) -> None:
        """Drawing and markers only for someone who listens (RViz), never on the caption's path."""
        if self._image_pub.get_subscription_count() > 0:
            self._image_pub.publish(annotated_image_msg(rgb, result, regions, header))
        if self._marker_pub.get_subscription_count() > 0:
            lifetime = max(2.0, 3.0 / self._settings.max_rate)
            self._marker_pub.publish(caption_markers_msg(result.caption, header, lifetime))

    def _error(self, kind: str, text: str) -> None:
        now = time.monotonic()
        self._health.record_error(kind, text, now)
        suppressed = self._log_throttle.allow(kind, now)
        if suppressed is not None:
            more = f" ({suppressed} more {kind} errors since the last report)" if suppressed else ""
            self.get_logger().error(text + more)

    def _warn(self, kind: str, text: str) -> None:
        """A frame captioned despite a problem: counted, logged throttled."""
        now = time.monotonic()
        self._health.record_warning(kind, text, now)
        suppressed = self._log_throttle.allow(f"{kind} warning", now)
        if suppressed is not None:
            more = f" ({suppressed} more {kind} warnings since the last report)" if suppressed else ""
            self.get_logger().warning(text + more)

    # ---- diagnostics ---------------------------------------------------------------
    def health_report(self) -> diagnostics.HealthReport:
        """The node's current health, as published on /diagnostics."""
        s = self._settings
        extra = (("model_id", self._model_id), ("device", self._device), ("dtype", self._dtype),
                 ("image_topic", self._sub.topic_name), ("image_transport", s.image_transport),
                 ("max_rate_hz", f"{s.max_rate:g}"), ("refine", str(s.refine).lower()),
                 ("zoom", str(s.zoom).lower()))
        return self._health.report(time.monotonic(), self._gate.counters(), extra)

    @property
    def diagnostic_name(self) -> str:
        """The name of this node's status on /diagnostics: '<namespace>/captioner: captioner'."""
        return f"{self.get_fully_qualified_name()}: captioner"

    def publish_diagnostics(self) -> None:
        """Publish one DiagnosticArray with the node's status on /diagnostics."""
        report = self.health_report()
        status = DiagnosticStatus(level=_LEVELS[report.level], name=self.diagnostic_name,
                                  message=report.message, hardware_id=self._device,
                                  values=[KeyValue(key=k, value=v) for k, v in report.values])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    # ---- shutdown ------------------------------------------------------------------
    def destroy_node(self) -> None:
        """Stop the worker (waiting briefly for a caption in progress), then destroy the node."""
        self._gate.close()
        if self._worker.is_alive():
            self._worker.join(WORKER_JOIN_TIMEOUT)
        super().destroy_node()

    @property
    def worker_running(self) -> bool:
        """True while the worker thread is alive (after :meth:`destroy_node`: a caption outlived
        the join timeout)."""
        return self._worker.is_alive()


def main(args: Optional[list[str]] = None) -> int:
    """Run the captioner until SIGINT or SIGTERM (exit 0, at any moment: see
    :mod:`sharpeye_ros.ros.spin`); exit 1 when it cannot start."""
    init_rclpy(args)
    node: Optional[CaptionerNode] = None
    code = 0
    try:
        node = CaptionerNode()
        spin_until_shutdown(node)
    except StartupError as err:
        rclpy.logging.get_logger(NODE_NAME).fatal(str(err))
        code = 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    if node is not None and node.worker_running:
        # A caption is still running in torch. Interpreter shutdown would end that thread
        # inside C++ code and abort the process ("terminate called ..."), so leave now.
        node.get_logger().warning(f"exiting during a caption that took over {WORKER_JOIN_TIMEOUT:g} s")
        exit_now(code)
    return finish(code)


if __name__ == "__main__":
    sys.exit(main())
