"""``captioner``: the ROS 2 node that captions a camera stream with the Sharp-Eyes specialist.

A managed (lifecycle) node, as yolo_ros and Isaac ROS nodes are: ``configure`` loads the
model, ``activate`` subscribes and publishes, ``deactivate`` stops captioning (the model
stays loaded, nothing is published), ``cleanup`` frees the model and its GPU memory, and
``shutdown`` is clean from any state. With ``autostart`` (the default) the executable
configures and activates itself, so ``ros2 run`` and ``ros2 launch`` behave as a plain node;
with ``autostart:=false`` it waits, unconfigured, for a lifecycle manager
(``ros2 lifecycle set /captioner configure``). ``model_path``, ``device`` and ``dtype`` can
change while unconfigured.

While active it subscribes ``image`` (sensor_msgs/Image), or ``<image>/compressed``
(CompressedImage) with ``image_transport:=compressed`` (image_transport's naming: one remap
of ``image`` serves both), with sensor-data QoS of depth 1. The callback only hands the
frame to a :class:`~sharpeye_ros.ros.frame_gate.FrameGate`, which keeps the newest frame and
limits captions to ``max_rate`` Hz on the frames' stamps; a worker thread converts, compares
the frame with the last one captioned (:mod:`~sharpeye_ros.ros.scene_gate`: an unchanged view
republishes that caption, marked ``reused``, or is skipped, without running the model),
captions and publishes, so the executor stays free for parameters, lifecycle and shutdown.
Publishes:

- ``caption`` (sharpeye_ros/Caption): header copied from the frame, attended regions in pixels;
- ``caption_text`` (std_msgs/String), ``detections`` (vision_msgs/Detection2DArray, when
  vision_msgs is installed): the caption's text, and its regions for standard tools;
- ``caption_image`` (sensor_msgs/Image) and ``caption_image/compressed`` (JPEG): the frame
  with regions and caption drawn;
- ``caption_markers`` (visualization_msgs/MarkerArray): the caption as text in the camera's
  frame;
- ``/diagnostics`` (diagnostic_msgs/DiagnosticArray): rates, latency, drops, still frames, errors.

All but ``caption`` and ``/diagnostics`` are built only while someone subscribes.

Example::

    ros2 run sharpeye_ros captioner --ros-args -r image:=/camera/image_raw \\
        --params-file config/captioner.yaml
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from typing import Any, Callable, Optional

import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import ParameterException
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.logging import LoggingSeverity
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import InvalidQosOverridesError, QoSOverridingOptions
from rclpy.subscription import Subscription
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from sharpeye_ros.msg import Caption
from sharpeye_ros.ros import diagnostics
from sharpeye_ros.ros.caption_messages import (annotated_compressed_msg, annotated_image_msg, annotated_rgb,
                                               caption_markers_msg, caption_msg, caption_text_msg, detections_msg,
                                               result_problem, reused_caption_msg, select_regions)
from sharpeye_ros.ros.captioner_parameters import PARAMETERS, RECAPTION, RELOAD, SPECS, CaptionerSettings
from sharpeye_ros.ros.diagnostics import (CONVERSION, INFERENCE, PUBLISH, CaptionerHealth, InputLog, LogThrottle,
                                          frame_latency, no_input_warning)
from sharpeye_ros.ros.frame_gate import THROTTLED, FrameGate, GateCounters, GatedFrame, Offer
from sharpeye_ros.ros.image_conversion import ImageConversionError, compressed_msg_to_rgb, image_msg_to_rgb
from sharpeye_ros.ros.parameters import declare, watch
from sharpeye_ros.ros.read_window import ReadWindow
from sharpeye_ros.ros.scene_gate import REPUBLISH, SceneGate, thumbnail
from sharpeye_ros.ros.spin import exit_now, finish, init_rclpy, spin_until_shutdown
from sharpeye_ros.ros.stamps import NS_PER_S, stamp_ns, stamp_seconds

try:
    from rclpy.event_handler import PublisherEventCallbacks
except ImportError:  # Humble: the same class, in its old module
    from rclpy.qos_event import PublisherEventCallbacks

_MESSAGE_INFO = hasattr(Subscription, "CallbackType")  # Humble's subscriptions pass the message alone

try:  # in every ROS distro, but optional here: without it the node publishes no detections
    from vision_msgs.msg import Detection2DArray
except ImportError:
    Detection2DArray = None

NODE_NAME = "captioner"
ERROR_LOG_PERIOD = 5.0  # seconds between two error lines of one kind; the rest are counted
NO_INPUT_WARN = 5.0  # seconds without a frame before diagnostics and the log warn
INPUT_LOG_PERIOD = 30.0  # seconds between two log lines about the input of one kind
WORKER_JOIN_TIMEOUT = 3.0  # seconds shutdown and cleanup wait for a caption in progress
FINALIZED_EXIT_DELAY = 0.2  # seconds between reaching 'finalized' and the executable's exit
_LEVELS = {diagnostics.OK: DiagnosticStatus.OK, diagnostics.WARN: DiagnosticStatus.WARN,
           diagnostics.ERROR: DiagnosticStatus.ERROR}
UNCONFIGURED, INACTIVE, ACTIVE, FINALIZED = "unconfigured", "inactive", "active", "finalized"
SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


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


def release_model(device: str) -> bool:
    """After the last reference to a model was dropped: collect it, and on CUDA return the
    cached blocks to the driver (``torch.cuda.empty_cache``), so that another process, or the
    next model, gets the memory. True when CUDA memory was released."""
    gc.collect()
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
        return True
    return False


class ClosableGroup(MutuallyExclusiveCallbackGroup):
    """A callback group whose entities the executor leaves out of its wait set while
    ``open`` is false: a closed subscription reads nothing, and DDS keeps its newest sample
    (rclpy's executors ask ``can_execute`` before they wait and again before they take)."""

    def __init__(self) -> None:
        super().__init__()
        self.open = True

    def can_execute(self, entity: Any) -> bool:
        return self.open and super().can_execute(entity)


class CaptionerNode(LifecycleNode):
    """The captioner, a lifecycle node (see the module). ``model``: an already loaded model
    that ``configure`` uses instead of loading ``model_path`` (embedding and tests; cleanup
    then only drops the node's reference); other keyword arguments go to
    :class:`rclpy.lifecycle.LifecycleNode`. The node starts unconfigured: call
    :meth:`autostart` (the executable does) or drive it through its lifecycle services.

    Raises :class:`StartupError` for bad parameters.
    """

    def __init__(self, *, model: Any = None, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._settings = self._declare_parameters()
        self._given_model = model
        self._state = UNCONFIGURED
        self._active = False  # the worker publishes only while True (set last by activate, first by deactivate)
        self._model: Any = None
        self._model_id = self._device = self._dtype = self._precision_text = ""
        self._can_refine = True
        self._gate: Optional[FrameGate[Any]] = None
        self._scene = SceneGate(self._settings.min_scene_change, self._settings.on_still,
                                self._settings.max_still_seconds, self._settings.max_still_share)
        self._last: Optional[tuple[Any, Any, list]] = None  # (Caption, result, regions) of the model's last caption
        self._worker: Optional[threading.Thread] = None
        self._sub: Any = None
        # The image subscription's read window (see read_window): closed while no frame can be
        # due, reopened by a timer, or by the worker (a guard condition) when its frame failed.
        self._window = ReadWindow()
        self._window_group = ClosableGroup()
        self._window_timer: Any = None
        self._window_guard: Any = None
        self._closed_since_read = False
        self._reopen_when_done = False
        self._window_enabled = False
        self._outputs: dict[str, Any] = {}
        self._own_timers: list[Any] = []
        self._health = CaptionerHealth(time.monotonic(), no_input_warn=NO_INPUT_WARN)
        self._log_throttle = LogThrottle(ERROR_LOG_PERIOD)  # used by the worker only
        self._input_log = InputLog(INPUT_LOG_PERIOD)
        self.finalized = threading.Event()  # set on reaching 'finalized' (main() then exits)
        watch(self, SPECS, self._apply_parameters)

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

    def autostart(self) -> bool:
        """Configure and activate when the ``autostart`` parameter is true (what the executable
        does before it spins); False when it is false. StartupError with the reason when a
        transition fails (not also logged: the caller reports it, once)."""
        if not self._settings.autostart:
            return False
        self._autostarting = True  # a failure is the caller's one message, not also a log line
        try:
            for transition, goal in ((self.trigger_configure, INACTIVE), (self.trigger_activate, ACTIVE)):
                transition()
                if self._state != goal:
                    raise StartupError(self._failure or f"the node did not reach '{goal}'")
        finally:
            self._autostarting = False
        return True

    # ---- lifecycle -----------------------------------------------------------------
    _failure: Optional[str] = None  # why the last transition failed
    _autostarting = False

    def _transition(self, name: str, step: Callable[[], Optional[str]], goal: str) -> TransitionCallbackReturn:
        """Run one transition's ``step``: it returns None (done: the node is in ``goal``) or
        why it failed (logged; the state stays). rclpy would swallow an exception into an
        ERROR without a word: here it is logged, and on_error cleans up."""
        try:
            failure = step()
        except StartupError as err:
            failure = str(err)
        except Exception as err:  # rclpy turns it into ERROR: on_error then cleans up
            self._failure = f"{type(err).__name__}: {err}"
            self.get_logger().error(f"{name} failed: {self._failure}")
            raise
        self._failure = failure
        if failure is not None:
            if not self._autostarting:
                self.get_logger().error(f"{name} failed: {failure}")
            return FAILURE
        self._state = goal
        self.get_logger().info(f"{name}: now {goal}")
        return SUCCESS

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the model (``model_path``, ``device``, ``dtype``) and make the publishers."""
        return self._transition("configure", self._configure, INACTIVE)

    def _configure(self) -> Optional[str]:
        s = self._settings
        model = self._given_model if self._given_model is not None else self._load_model(s)
        self._model = model
        self._device = str(getattr(model, "device", "unknown"))
        precision = getattr(model, "precision", None)  # the path it runs (model.precision)
        self._dtype = (precision.name if precision is not None
                       else str(getattr(model, "dtype", "unknown")).replace("torch.", ""))
        self._precision_text = precision.describe() if precision is not None else self._dtype
        self._model_id = str(getattr(model, "model_id", "") or s.model_path)
        self._can_refine = getattr(model, "deeplens", True) is not None
        if s.refine and not self._can_refine:
            self.get_logger().warning("this model has no DeepLens refinement: running with refine=false")
            self.set_parameters([Parameter("refine", value=False)])
        # Reliable publishers match both reliable (RViz's default) and best-effort subscribers.
        pubs = {"caption": (Caption, 10), "caption_text": (String, 10), "caption_image": (Image, 1),
                "caption_markers": (MarkerArray, 1), "/diagnostics": (DiagnosticArray, 10)}
        if Detection2DArray is not None:
            pubs["detections"] = (Detection2DArray, 10)
        else:
            self.get_logger().info("vision_msgs is not installed: no 'detections' topic "
                                   "(apt install ros-$ROS_DISTRO-vision-msgs)")
        # Without rclpy's default QoS event handlers (an incompatible subscriber is reported in
        # its own process too): each is a waitable that the executor adds to its wait set on
        # every wake-up, at least two per frame received; the 14 of these publishers made up
        # almost half of the executor's work per frame on a still view.
        quiet = PublisherEventCallbacks(use_default_callbacks=False)
        self._outputs = {name: self.create_lifecycle_publisher(kind, name, depth, event_callbacks=quiet)
                            for name, (kind, depth) in pubs.items()}
        # image_transport's convention: the compressed stream of image topic T is T/compressed.
        compressed = self._outputs["caption_image"].topic_name.rstrip("/") + "/compressed"
        self._outputs["caption_image/compressed"] = self.create_lifecycle_publisher(
            CompressedImage, compressed, 1, event_callbacks=quiet)
        self._gate = FrameGate(s.max_rate)
        self._scene.reset()
        self._last = None
        self._worker = threading.Thread(target=self._run_worker, args=(self._gate,), name="captioner-worker",
                                        daemon=True)
        self._worker.start()
        self.get_logger().info(f"model {self._model_id} loaded on {self._device} ({self._precision_text})")
        return None

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the images, start the diagnostics, let the publishers publish."""
        ret = self._transition("activate", self._activate, ACTIVE)
        if ret == SUCCESS:
            ret = super().on_activate(state)  # the lifecycle publishers publish from now on
            self._active = True
        return ret

    def _activate(self) -> Optional[str]:
        s = self._settings
        reliability = (ReliabilityPolicy.RELIABLE if s.reliability == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        sensor_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=reliability,
                                durability=DurabilityPolicy.VOLATILE)
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
            # Iron and later hand a two-argument callback the sample's MessageInfo.
            on_image = ((lambda msg, info: self._on_image(msg, info)) if _MESSAGE_INFO else self._on_image)
            self._sub = self.create_subscription(msg_type, topics[s.image_transport], on_image,
                                                 sensor_qos, qos_overriding_options=overrides,
                                                 callback_group=self._window_group)
        except (InvalidQosOverridesError, ParameterException, ValueError, RuntimeError) as err:
            return f"QoS override of the image subscription rejected: {err}"
        # With a deeper queue (a QoS override) the frames that wait are read one by one
        # after a closure, each against its own arrival: the window is for depth 1 only.
        qos = self._sub.qos_profile
        self._window_enabled = qos.history == HistoryPolicy.KEEP_LAST and qos.depth == 1
        # Diagnostics on the steady clock: they must keep coming while sim time is paused.
        steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._own_timers = [self.create_timer(s.diagnostics_period, self.publish_diagnostics, clock=steady),
                            self.create_timer(1.0, self._watch_input, clock=steady)]
        self._window_timer = self.create_timer(1.0, self._window_timer_fired, clock=steady)
        self._window_timer.cancel()
        self._window_guard = self.create_guard_condition(self._open_window)
        self._open_window()
        self._window.reset()
        self._health.resume(time.monotonic())
        self.get_logger().info(
            f"captioning '{self._sub.topic_name}' ({s.image_transport}, {self.image_qos}) at up to "
            f"{s.max_rate:g} Hz with {self._model_id} on {self._device} ({self._precision_text})")
        return None

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop captioning: no subscription, no timers, publishers silent; the model stays."""
        self._active = False  # first: a caption finishing now is not published
        super().on_deactivate(state)
        return self._transition("deactivate", self._deactivate, INACTIVE)

    def _deactivate(self) -> Optional[str]:
        if self._sub is not None:
            self.destroy_subscription(self._sub)
            self._sub = None
        for timer in self._own_timers + [self._window_timer]:
            if timer is not None:
                self.destroy_timer(timer)
        self._own_timers, self._window_timer = [], None
        if self._window_guard is not None:
            self.destroy_guard_condition(self._window_guard)
            self._window_guard = None
        self._window_group.open = True
        return None

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the model (and its GPU memory) and the publishers."""
        return self._transition("cleanup", self._cleanup, UNCONFIGURED)

    def _cleanup(self, force: bool = False) -> Optional[str]:
        if not self._stop_worker() and not force:
            return (f"a caption is still running after {WORKER_JOIN_TIMEOUT:g} s; the model stays loaded "
                    "(try cleanup again)")
        for publisher in self._outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        self._outputs = {}
        self._gate, self._last = None, None
        device, self._model = self._device, None
        if release_model(device):
            self.get_logger().info("CUDA memory of the model released")
        return None

    def _stop_worker(self) -> bool:
        """Close the gate and wait up to WORKER_JOIN_TIMEOUT for the worker; True once it ended."""
        if self._gate is not None:
            self._gate.close()
        if self._worker is not None:
            self._worker.join(WORKER_JOIN_TIMEOUT)
            if self._worker.is_alive():
                return False
        self._worker = None
        return True

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """From any state: stop, free, and end in 'finalized'."""
        def shutdown() -> Optional[str]:
            if self._state == ACTIVE:
                self._active = False
                super(CaptionerNode, self).on_deactivate(state)
                self._deactivate()
            if self._state in (ACTIVE, INACTIVE):
                self._cleanup(force=True)  # a caption still running is left to the process's exit
            self.finalized.set()
            return None
        return self._transition("shutdown", shutdown, FINALIZED)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """A transition raised: release everything and go back to 'unconfigured'."""
        def recover() -> Optional[str]:
            self._active = False
            super(CaptionerNode, self).on_deactivate(state)
            self._deactivate()
            self._cleanup(force=True)
            return None
        return self._transition("error recovery", recover, UNCONFIGURED)

    @property
    def lifecycle_state(self) -> str:
        """'unconfigured', 'inactive', 'active' or 'finalized'."""
        return self._state

    @property
    def model(self) -> Any:
        """The loaded model (None while unconfigured)."""
        return self._model

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
        reload = sorted(RELOAD & {name for name, value in changes.items() if value != getattr(self._settings, name)})
        if reload and self._state != UNCONFIGURED:
            return (f"parameter '{reload[0]}' can only change while the node is unconfigured (it is "
                    f"{self._state}): deactivate and clean it up first, then configure it again")
        self._settings = settings
        if "max_rate" in changes and self._gate is not None:
            self._gate.set_max_rate(settings.max_rate)
        self._scene.configure(settings.min_scene_change, settings.on_still, settings.max_still_seconds,
                              settings.max_still_share)
        if RECAPTION & set(changes):  # the last caption no longer says what a new one would
            self._scene.reset()
        changed = ", ".join(f"{k}={v!r}" for k, v in changes.items())
        self.get_logger().info(f"parameters changed: {changed}")
        return None

    @property
    def settings(self) -> CaptionerSettings:
        """The parameters' current values."""
        return self._settings

    @property
    def image_qos(self) -> str:
        """The image subscription's QoS in words, overrides applied (e.g. 'best_effort, depth 1');
        '' while it does not exist (not active)."""
        if self._sub is None:
            return ""
        qos = self._sub.qos_profile
        return f"{qos.reliability.name.lower()}, depth {qos.depth}"

    def _debug(self) -> bool:
        return self.get_logger().is_enabled_for(LoggingSeverity.DEBUG)

    # ---- input ---------------------------------------------------------------------
    def _on_image(self, msg: Any, info: Optional[dict] = None) -> None:
        # O(1): no decoding here, the worker converts the frame it actually captions.
        gate = self._gate
        if gate is None:
            return
        now = time.monotonic()
        stamp = stamp_ns(msg)
        # DDS's reception time (system clock), where the middleware gives it: a sample that
        # waited in a closed window arrived before it was read.
        wall_ns = time.time_ns()
        arrival = ((info.get("received_timestamp") if isinstance(info, dict) else None) or wall_ns) / NS_PER_S
        not_read = self._window.observe(stamp, arrival, not self._closed_since_read)
        self._closed_since_read = False
        offer = gate.offer(msg, stamp, self.get_clock().now().nanoseconds)
        self._health.record_input(now, offer.fallback, not_read)
        for line in self._input_log.offer(offer, now):
            self.get_logger().warning(line)
        if self._debug():
            self.get_logger().debug(f"frame {stamp_seconds(msg):.3f}: {offer.describe()}")
        if self._window_enabled and (offer.kept or offer.dropped == THROTTLED):
            delay = self._window.reopen_in(gate.next_due_ns(), stamp, arrival, wall_ns / NS_PER_S)
            if delay is not None:
                self._close_window(delay)

    def _close_window(self, seconds: float) -> None:
        """Read no frame for ``seconds``: none can be due before (see read_window)."""
        timer = self._window_timer
        if timer is None:
            return
        self._window_group.open = False
        self._closed_since_read = True
        timer.timer_period_ns = max(1, int(seconds * NS_PER_S))
        timer.reset()

    def _window_timer_fired(self) -> None:
        self._window_timer.cancel()
        # The worker still has the frame: the next one can only be due once it is done, and
        # the worker reopens then. The flag first, so a worker finishing now sees it.
        self._reopen_when_done = True
        gate = self._gate
        if gate is None or not gate.busy:
            self._open_window()

    def _open_window(self) -> None:
        self._reopen_when_done = False
        if self._window_timer is not None:
            self._window_timer.cancel()
        self._window_group.open = True

    def _worker_done(self, captioned: bool) -> None:
        """From the worker, after gate.done: reopen the window if the frame failed (the next
        one may be due now) or the timer went off while the worker had it."""
        guard = self._window_guard
        if guard is not None and (not captioned or self._reopen_when_done):
            try:
                guard.trigger()
            except Exception:  # destroyed meanwhile (deactivated): nothing to reopen
                pass

    def _watch_input(self) -> None:
        """Say so (throttled) when no frame has come for a while, with a hint where they are."""
        now = time.monotonic()
        seconds, received = self._health.silence(now)
        if seconds < NO_INPUT_WARN or self._sub is None:
            return
        topic = self._sub.topic_name
        text = no_input_warning(topic, self._settings.image_transport, seconds, received,
                                self.count_publishers(topic), self._other_topic, self._other_transport,
                                self.count_publishers(self._other_topic))
        for line in self._input_log.silence(text, now):
            self.get_logger().warning(line)

    # ---- worker --------------------------------------------------------------------
    def _run_worker(self, gate: FrameGate[Any]) -> None:
        while True:
            item = gate.take()
            if item is None:  # the gate was closed: cleaning up or shutting down
                return
            if not self._active:  # deactivated while the frame waited
                gate.done(item, False)
                self._worker_done(False)
                continue
            try:
                self._caption(gate, item)
            except Exception as err:  # never let one frame kill the worker
                if gate.closed or not self.context.ok():
                    return  # shutting down (a signal shut the context): nothing to report
                self._error(PUBLISH, f"cannot publish the caption or its annotations: "
                                     f"{type(err).__name__}: {err}")

    def _caption(self, gate: FrameGate[Any], item: GatedFrame[Any]) -> None:
        published = None
        try:
            published = self._caption_frame(gate, item)
        finally:  # a frame dropped for a problem leaves the rate interval where it was
            dropped = gate.done(item, published is not None)
            self._worker_done(published is not None)
            if dropped is not None and self._debug():
                self.get_logger().debug(f"frame {dropped.stamp_ns / NS_PER_S:.3f}: "
                                        f"{Offer(False, dropped=THROTTLED).describe()}")
        if published and published[0] is not None:
            self._publish_mirrors(item.frame.header, *published)

    def _caption_frame(self, gate: FrameGate[Any], item: GatedFrame[Any]) -> Optional[tuple]:
        """Convert, judge, caption and publish one frame: (caption, rgb, result, regions) once
        the caption is out (caption None: a still frame skipped), None when the frame was
        dropped."""
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
        thumb = thumbnail(rgb) if self._scene.enabled else None
        verdict = self._scene.judge(thumb, item.stamp_ns)
        if self._debug():
            self.get_logger().debug(f"frame {item.stamp_ns / NS_PER_S:.3f}: {verdict.action}: {verdict.reason}")
        if verdict.still and self._last is not None:
            return self._reuse(item, rgb, verdict.action == REPUBLISH, verdict.change)
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
        if gate.closed or not self._active:
            return None
        regions = select_regions(result.regions, s.min_region_score, s.num_regions)
        height, width = rgb.shape[:2]
        latency, unmeasured = frame_latency(self.get_clock().now().nanoseconds, item.stamp_ns)
        caption = caption_msg(result, regions, msg.header, width, height, self._model_id, latency)
        self._outputs["caption"].publish(caption)
        self._scene.captioned(thumb, item.stamp_ns, model_seconds)  # the still period follows the model's time
        self._last = (caption, result, regions)
        overhead = time.perf_counter() - start - model_seconds
        self._health.record_caption(time.monotonic(), latency, model_seconds, overhead, unmeasured,
                                    verdict.change)
        for line in self._input_log.latency(unmeasured, time.monotonic()):
            self.get_logger().warning(line)
        if self._debug():
            stages = ", ".join(f"{name} {seconds * 1e3:.1f} ms" for name, seconds in result.timings.items())
            self.get_logger().debug(
                f"frame {item.stamp_ns / NS_PER_S:.3f} captioned: conversion {(model_start - start) * 1e3:.1f} ms, "
                f"model {model_seconds * 1e3:.1f} ms ({stages}), publishing {(overhead - (model_start - start)) * 1e3:.1f} ms, "
                f"latency {latency:.3f} s")
        return caption, rgb, result, regions

    def _reuse(self, item: GatedFrame[Any], rgb: Any, republish: bool, change: float) -> tuple:
        """A still view: the last caption again with this frame's header (``republish``), or nothing."""
        assert self._last is not None
        self._health.record_still(time.monotonic(), republish, change)
        if not republish:
            return None, rgb, None, None
        original, result, regions = self._last
        latency, _ = frame_latency(self.get_clock().now().nanoseconds, item.stamp_ns)
        caption = reused_caption_msg(original, item.frame.header, latency)
        self._outputs["caption"].publish(caption)
        return caption, rgb, result, regions

    def _publish_mirrors(self, header: Any, caption: Any, rgb: Any, result: Any, regions: list) -> None:
        """The caption's other forms, each only for someone who listens, never on the caption's path."""
        pubs = self._outputs
        listening = {name for name, pub in pubs.items() if pub.get_subscription_count() > 0}
        if "caption_text" in listening:
            pubs["caption_text"].publish(caption_text_msg(caption))
        if "detections" in listening:
            pubs["detections"].publish(detections_msg(caption))
        if listening & {"caption_image", "caption_image/compressed"}:
            drawn = annotated_rgb(rgb, result, regions)
            if "caption_image" in listening:
                pubs["caption_image"].publish(annotated_image_msg(rgb, result, regions, header, drawn=drawn))
            if "caption_image/compressed" in listening:
                pubs["caption_image/compressed"].publish(
                    annotated_compressed_msg(drawn, header, self._settings.jpeg_quality))
        if "caption_markers" in listening:
            lifetime = max(2.0, 3.0 / self._settings.max_rate)
            pubs["caption_markers"].publish(caption_markers_msg(caption.caption, header, lifetime))

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
        topic = self._sub.topic_name if self._sub is not None else ""
        extra = (("lifecycle_state", self._state), ("model_id", self._model_id), ("device", self._device),
                 ("dtype", self._dtype), ("image_topic", topic), ("image_transport", s.image_transport),
                 ("max_rate_hz", f"{s.max_rate:g}"), ("refine", str(s.refine).lower()),
                 ("zoom", str(s.zoom).lower()), ("min_scene_change", f"{s.min_scene_change:g}"),
                 ("on_still", s.on_still), ("max_still_seconds", f"{s.max_still_seconds:g}"),
                 ("max_still_share", f"{s.max_still_share:g}"), ("still_period_s", f"{self._scene.still_period:.3f}"))
        counters = self._gate.counters() if self._gate is not None else GateCounters()
        return self._health.report(time.monotonic(), counters, extra)

    @property
    def diagnostic_name(self) -> str:
        """The name of this node's status on /diagnostics: '<namespace>/captioner: captioner'."""
        return f"{self.get_fully_qualified_name()}: captioner"

    def publish_diagnostics(self) -> None:
        """Publish one DiagnosticArray with the node's status on /diagnostics (while active)."""
        publisher = self._outputs.get("/diagnostics")
        if publisher is None:
            return
        report = self.health_report()
        status = DiagnosticStatus(level=_LEVELS[report.level], name=self.diagnostic_name,
                                  message=report.message, hardware_id=self._device,
                                  values=[KeyValue(key=k, value=v) for k, v in report.values])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        publisher.publish(array)

    # ---- shutdown ------------------------------------------------------------------
    def destroy_node(self) -> None:
        """Stop the worker (waiting briefly for a caption in progress), then destroy the node."""
        self._stop_worker()
        super().destroy_node()

    @property
    def worker_running(self) -> bool:
        """True while the worker thread is alive (after :meth:`destroy_node`: a caption outlived
        the join timeout)."""
        return self._worker is not None and self._worker.is_alive()


def start(**node_kwargs: Any) -> CaptionerNode:
    """A captioner as the executable starts it: made with ``node_kwargs`` (see
    :class:`CaptionerNode`), then configured and activated when ``autostart`` is true.
    StartupError, the node destroyed, when it cannot start."""
    node = CaptionerNode(**node_kwargs)
    try:
        node.autostart()
    except BaseException:
        node.destroy_node()
        raise
    return node


def _exit_when_finalized(node: CaptionerNode) -> None:
    """A lifecycle manager shut the node down ('finalized'): end the process, as a supervisor
    expects of a node that has nothing left to do. The context is shut down a moment later,
    so that the shutdown transition's service reply still goes out."""
    def wait() -> None:
        node.finalized.wait()
        time.sleep(FINALIZED_EXIT_DELAY)
        rclpy.try_shutdown(context=node.context)

    threading.Thread(target=wait, name="captioner-finalized", daemon=True).start()


def main(args: Optional[list[str]] = None) -> int:
    """Run the captioner until SIGINT or SIGTERM, or its lifecycle shutdown (exit 0, at any
    moment: see :mod:`sharpeye_ros.ros.spin`); exit 1 when it cannot start. With
    ``autostart`` (the default) it configures and activates itself first."""
    init_rclpy(args)
    node: Optional[CaptionerNode] = None
    code = 0
    try:
        node = start()
        if node.lifecycle_state == UNCONFIGURED:
            node.get_logger().info(
                f"autostart is false: waiting, unconfigured, for a lifecycle manager "
                f"(ros2 lifecycle set {node.get_fully_qualified_name()} configure)")
        _exit_when_finalized(node)
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
