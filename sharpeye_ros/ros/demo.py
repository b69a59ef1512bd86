"""``demo``: watch the captioner caption the synthetic camera, without ``ros2 launch``.

Starts the installed ``synthetic_camera`` and ``captioner`` executables as child processes
on a private ROS domain (a random ROS_DOMAIN_ID and localhost-only discovery, unless the
environment already sets them), prints every caption (first glance -> refined, attended
regions with their phrases and boxes, latency) next to the scene's ground truth, saves
the annotated frames from ``caption_image`` as PNG files, and shuts everything down after
``--captions`` captions or ``--timeout`` seconds. Exit code 0 when at least one caption
arrived, 1 otherwise (the captioner's last log lines say why), 2 on bad arguments.

    ros2 run sharpeye_ros demo --output runs/demo --captions 5
    scripts/demo                      # from a source checkout: set-up, build, run
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import cv2

from sharpeye_ros.ros.camera_parameters import SPECS as CAMERA_SPECS
from sharpeye_ros.ros.captioner_parameters import SPECS as CAPTIONER_SPECS
from sharpeye_ros.ros.image_conversion import ImageConversionError, image_msg_to_rgb
from sharpeye_ros.ros.launch_support import PROFILE_VARIABLES, SHIPPED_PROFILE
from sharpeye_ros.ros.parameters import ros_arguments
from sharpeye_ros.ros.processes import (Child, installed_executable, installed_file, ros_environment, start_child,
                                        stop_children)
from sharpeye_ros.ros.scene_feed import parse_ground_truth
from sharpeye_ros.ros.stamps import stamp_ns, stamp_seconds

IMAGE_TOPIC = "/camera/image_raw"
IMAGE_GRACE = 3.0  # seconds to wait for the annotated image of the last caption


def format_region(region: Any) -> str:
    """``"small red star" 0.62 [x0, y0, x1, y1]`` for a CaptionRegion-like object."""
    roi = region.roi
    box = [roi.x_offset, roi.y_offset, roi.x_offset + roi.width, roi.y_offset + roi.height]
    return f'"{region.phrase}" {region.score:.2f} [{", ".join(str(int(v)) for v in box)}]'


def format_caption(number: int, msg: Any, truth: Optional[str] = None) -> str:
    """The lines the demo prints for caption ``number`` (a sharpeye_ros/Caption)."""
    stamp = stamp_seconds(msg)
    timing = f"glance {msg.glance_seconds:.2f} s"
    if msg.refined:
        timing += f", refine {msg.refine_seconds:.2f} s" + (" with zoom" if msg.zoomed else "")
    lines = [f"[{number}] frame {stamp:.3f} ({msg.image_width}x{msg.image_height}), "
             f"latency {msg.latency_seconds:.2f} s ({timing})"]
    if truth:
        lines.append(f"    truth:   {truth}")
    if msg.refined:
        lines.append(f"    glance:  {msg.initial_caption}")
        lines.append(f"    refined: {msg.caption}")
    else:
        lines.append(f"    caption: {msg.caption}")
    if msg.regions:
        lines.append("    regions: " + "; ".join(format_region(r) for r in msg.regions))
    return "\n".join(lines)


def share_config(name: str) -> Optional[Path]:
    """The installed config/``name``, or None when it cannot be found (the nodes' own
    defaults then apply)."""
    try:
        return installed_file("share", f"config/{name}")
    except FileNotFoundError:
        return None


def params_file() -> Optional[Path]:
    """The installed config/captioner.yaml, or None when it cannot be found."""
    return share_config("captioner.yaml")


def camera_command(args: argparse.Namespace) -> list[str]:
    """The synthetic camera's command line."""
    values = {"rate": args.rate, "scene_period": args.scene_period, "split": args.split,
              "start_index": args.start_index, "publish_compressed": args.image_transport == "compressed"}
    return [sys.executable, str(installed_executable("synthetic_camera")), "--ros-args",
            *ros_arguments(CAMERA_SPECS, values), "-r", f"image:={IMAGE_TOPIC}"]


def captioner_command(args: argparse.Namespace) -> list[str]:
    """The captioner's command line: the installed params file, then the demo's overrides."""
    cmd = [sys.executable, str(installed_executable("captioner")), "--ros-args"]
    config = params_file()
    if config is not None and config.stat().st_size > 0:
        cmd += ["--params-file", str(config)]
    values: dict[str, Any] = {"image_transport": args.image_transport}
    if args.model_path:
        values["model_path"] = str(Path(args.model_path).expanduser().resolve())
    if args.device:
        values["device"] = args.device
    if args.max_rate is not None:
        values["max_rate"] = args.max_rate
    return cmd + ros_arguments(CAPTIONER_SPECS, values) + ["-r", f"image:={IMAGE_TOPIC}"]


@dataclass
class Collected:
    """What the demo has received so far."""

    captions: list[Any] = field(default_factory=list)
    images: dict[int, Any] = field(default_factory=dict)  # header stamp (ns) -> caption_image msg
    truths: list[tuple[int, str]] = field(default_factory=list)  # (first stamp ns, caption)

    def truth_at(self, stamp_ns: int) -> Optional[str]:
        """The reference caption of the scene shown at ``stamp_ns``."""
        shown = [caption for start, caption in sorted(self.truths) if start <= stamp_ns]
        return shown[-1] if shown else None


def save_png(msg: Any, path: Path) -> None:
    """Write an RGB-convertible Image message as PNG; ImageConversionError or OSError on failure."""
    rgb = image_msg_to_rgb(msg)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def run(args: argparse.Namespace) -> int:
    """Run the demo; the exit code of :func:`main`."""
    # The children and our own node (it receives caption_image) share the domain and profile.
    os.environ.update(ros_environment(os.environ, profile=share_config(SHIPPED_PROFILE)))
    output = Path(args.output).expanduser().resolve()
    output.mkdir(parents=True, exist_ok=True)
    for stale in output.glob("caption_*.png"):  # frames of an earlier run would mislead
        stale.unlink()
    try:
        commands = {"synthetic_camera": camera_command(args), "captioner": captioner_command(args)}
    except FileNotFoundError as err:
        print(f"demo: {err}", file=sys.stderr)
        return 1

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from sharpeye_ros.msg import Caption
    from sharpeye_ros.ros.synthetic_camera_node import LATCHED

    stop = {"signal": None}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["signal"] = signum

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    context = rclpy.Context()
    rclpy.init(context=context, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("sharpeye_demo", context=context)
    got = Collected()
    node.create_subscription(Caption, "/caption", got.captions.append, 10)
    node.create_subscription(Image, "/caption_image", lambda m: got.images.__setitem__(stamp_ns(m), m), 5)
    node.create_subscription(String, "/ground_truth", lambda m: _add_truth(got, m.data), LATCHED)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)

    profile = next((os.environ[v] for v in PROFILE_VARIABLES if os.environ.get(v)), "Fast DDS defaults")
    print(f"demo: ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']}, DDS profile: {profile}, "
          f"model: {args.model_path or 'the shipped demo model'}; logs and frames in {output}", flush=True)
    children: list[Child] = []
    saved: list[Path] = []
    printed = 0
    failure = ""
    try:
        for name, cmd in commands.items():
            children.append(start_child(name, cmd, output, env=os.environ))
        pids = " and ".join(f"{c.name} (pid {c.process.pid})" for c in children)
        print(f"demo: started {pids}; waiting for {args.captions} captions (at most {args.timeout:g} s) ...",
              flush=True)
        deadline = time.monotonic() + args.timeout
        last_caption_time: Optional[float] = None
        while stop["signal"] is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
            while printed < min(len(got.captions), args.captions):
                msg = got.captions[printed]
                printed += 1
                last_caption_time = time.monotonic()
                print(format_caption(printed, msg, got.truth_at(stamp_ns(msg))), flush=True)
            saved += _save_ready(got, output, printed)
            if printed >= args.captions and (len(saved) >= printed or
                                             time.monotonic() - last_caption_time > IMAGE_GRACE):
                break
            dead = [c for c in children if c.process.poll() is not None]
            if dead:
                failure = (f"{dead[0].name} exited with code {dead[0].process.returncode}; "
                           f"its last log lines ({dead[0].log}):\n{dead[0].tail()}")
                break
        else:
            if stop["signal"] is None and printed < args.captions:
                print(f"demo: timed out after {args.timeout:g} s with {printed} caption(s)", flush=True)
    finally:
        stop_children(children)
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    if stop["signal"] is not None:
        print(f"demo: stopped by {signal.Signals(stop['signal']).name}", flush=True)
    if failure:
        print(f"demo: {failure}", file=sys.stderr, flush=True)
    if printed == 0:
        if not failure:
            captioner = next((c for c in children if c.name == "captioner"), None)
            tail = captioner.tail() if captioner else ""
            print("demo: no caption arrived" + (f"; the captioner's last log lines:\n{tail}" if tail else ""),
                  file=sys.stderr, flush=True)
        return 1
    print(f"demo: {printed} caption(s); {len(saved)} annotated frame(s) saved in {output}", flush=True)
    return 0


def _add_truth(got: Collected, text: str) -> None:
    try:
        doc, _ = parse_ground_truth(text)
        got.truths.append((stamp_ns(doc["stamp"]), doc["caption"]))
    except (ValueError, KeyError, TypeError):
        pass  # ground truth is only shown alongside; a bad document is not worth stopping for


def _save_ready(got: Collected, output: Path, printed: int) -> list[Path]:
    """Save the annotated frames of printed captions whose caption_image has arrived."""
    saved = []
    for number, msg in enumerate(got.captions[:printed], start=1):
        path = output / f"caption_{number:03d}.png"
        image = got.images.pop(stamp_ns(msg), None)
        if image is None:
            continue
        try:
            save_png(image, path)
            saved.append(path)
            print(f"    saved {path}", flush=True)
        except (ImageConversionError, OSError) as err:
            print(f"    could not save frame {number}: {err}", file=sys.stderr, flush=True)
    return saved


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--output", default="runs/demo", help="folder for annotated frames and node logs "
                   "(default %(default)s)")
    p.add_argument("--captions", type=int, default=5,
                   help="stop after this many captions (default %(default)s)")
    p.add_argument("--timeout", type=float, default=180.0,
                   help="stop after this many seconds (default %(default)s)")
    p.add_argument("--model-path", default="",
                   help="captioner checkpoint directory (default: the shipped demo model)")
    p.add_argument("--device", default="", help="captioner device: auto, cpu, cuda, cuda:N")
    p.add_argument("--max-rate", type=float, default=None,
                   help="captions per second (default: the params file's)")
    p.add_argument("--image-transport", choices=("raw", "compressed"), default="raw")
    p.add_argument("--rate", type=float, default=5.0, help="camera frames per second (default %(default)s)")
    p.add_argument("--scene-period", type=float, default=4.0, help="seconds per scene (default %(default)s)")
    p.add_argument("--split", default="test", help="synthetic-world split (default %(default)s)")
    p.add_argument("--start-index", type=int, default=0, help="first scene (default %(default)s)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point (``ros2 run sharpeye_ros demo``)."""
    parser = _parser()
    args = parser.parse_args(argv)
    for name in ("captions", "timeout", "rate", "scene_period"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if args.max_rate is not None and not args.max_rate > 0:
        parser.error(f"--max-rate must be > 0, got {args.max_rate}")
    if args.model_path and not Path(args.model_path).expanduser().is_dir():
        parser.error(f"--model-path {args.model_path}: no such directory")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
