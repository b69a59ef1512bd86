"""``record_bag``: write a rosbag2 of synthetic-world scenes, without ROS.

Uses the pure-Python ``rosbags`` library, so no rclpy or ``ros2 bag`` is needed. The
rosbag2 metadata follows ``distro``:

- ``humble`` (the default; Humble and Jazzy both play it): metadata version 8, each topic's
  offered QoS profiles as one YAML string with the policies as integers. Humble's
  rosbag2 reads ``offered_qos_profiles`` as a string (rosbag2_storage metadata_io.cpp) and
  each policy with ``as<int>()`` and no try/catch (rosbag2_transport qos.cpp); Jazzy's
  detects integers and reads them too (rosbag2_storage qos.cpp).
- ``jazzy``: version 9, as Jazzy writes it: the profiles as a YAML list with the policies
  as strings ("reliable"). Humble cannot read it: the list is not a string (metadata.yaml),
  and "reliable" is not an integer (an MCAP channel's metadata).

The bag holds
``scenes x frames_per_scene`` frames at ``rate`` Hz, stamped (header and bag time alike)
from ``start_time``:

- ``/camera/image_raw``             sensor_msgs/msg/Image in ``encoding``
- ``/camera/image_raw/compressed``  sensor_msgs/msg/CompressedImage, JPEG (``--compressed``)
- ``/ground_truth``                 std_msgs/msg/String, one JSON document per scene, at the
  scene's first frame (format: :mod:`sharpeye_ros.ros.scene_feed`)

Example: ``ros2 run sharpeye_ros record_bag /tmp/shapes --scenes 10 --storage mcap``,
then ``ros2 bag play /tmp/shapes --clock 100``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_typestore

from sharpeye_ros.ros.image_conversion import ImageConversionError, encode_raw, rgb_to_compressed
from sharpeye_ros.ros.scene_feed import SceneFeed, ground_truth_json
from sharpeye_ros.ros.stamps import stamp_parts

STORAGES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}


class Distro(NamedTuple):
    """The rosbag2 metadata version a distribution's ``ros2 bag play`` reads, and its messages."""

    metadata_version: int
    typestore: Stores


DISTROS = {"humble": Distro(8, Stores.ROS2_HUMBLE), "jazzy": Distro(9, Stores.ROS2_JAZZY)}
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
STRING_TYPE = "std_msgs/msg/String"


def _qos(reliability: QosReliability, durability: QosDurability, depth: int) -> Qos:
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth, reliability, durability, zero, zero,
               QosLiveliness.AUTOMATIC, zero, False)


# What a live synthetic_camera offers (reliable, as REP 2003 asks of drivers), so that
# `ros2 bag play` replays with the same QoS.
SENSOR_QOS = _qos(QosReliability.RELIABLE, QosDurability.VOLATILE, 5)
LATCHED_QOS = _qos(QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, 1)


@dataclass
class RecordConfig:
    """What to record. ``start_time``: seconds of the first stamp; None = the wall clock now."""

    scenes: int = 5
    frames_per_scene: int = 10
    rate: float = 5.0
    split: str = "test"
    start_index: int = 0
    width: int = 640
    height: int = 480
    seed: int = 0
    encoding: str = "rgb8"
    compressed: bool = False
    jpeg_quality: int = 90
    frame_id: str = "camera_optical_frame"
    topic: str = "/camera/image_raw"
    truth_topic: str = "/ground_truth"
    storage: str = "sqlite3"
    distro: str = "humble"
    start_time: Optional[float] = None

    def validate(self) -> None:
        """Raise ValueError naming the first bad setting."""
        if self.scenes < 1:
            raise ValueError(f"scenes must be >= 1, got {self.scenes}")
        if self.frames_per_scene < 1:
            raise ValueError(f"frames_per_scene must be >= 1, got {self.frames_per_scene}")
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0 Hz, got {self.rate}")
        if self.storage not in STORAGES:
            raise ValueError(f"storage must be one of {sorted(STORAGES)}, got {self.storage!r}")
        if self.distro not in DISTROS:
            raise ValueError(f"distro must be one of {sorted(DISTROS)}, got {self.distro!r}")
        if not 0 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 0..100, got {self.jpeg_quality}")
        if self.start_time is not None and self.start_time < 0:
            raise ValueError(f"start_time must be >= 0 seconds, got {self.start_time}")
        for name in ("topic", "truth_topic"):
            topic = getattr(self, name)
            if not topic.startswith("/") or topic.endswith("/") or " " in topic:
                raise ValueError(f"{name} must be an absolute topic name like /camera/image_raw, "
                                 f"got {topic!r}")


@dataclass
class BagSummary:
    """What :func:`record_bag` wrote. Times are nanoseconds of ROS time."""

    path: Path
    frames: int
    scenes: int
    start_ns: int
    end_ns: int
    frame_stamps: list[int] = field(repr=False, default_factory=list)
    message_counts: dict[str, int] = field(default_factory=dict)


def frame_stamp(start_ns: int, frame: int, rate: float) -> int:
    """Stamp in nanoseconds of frame ``frame`` of a stream at ``rate`` Hz starting at ``start_ns``."""
    return start_ns + round(frame * 1e9 / rate)


def record_bag(path: str | Path, config: RecordConfig, overwrite: bool = False) -> BagSummary:
    """Record ``config.scenes`` synthetic scenes into a new rosbag2 folder at ``path``.

    Raises ValueError for bad settings or an existing ``path`` (unless ``overwrite`` and it
    is a bag folder or empty), before anything is written.
    """
    config.validate()
    path = Path(path)
    _prepare_output(path, overwrite)
    feed = SceneFeed(config.split, config.start_index, config.width, config.height, config.seed)
    try:  # fail on a bad encoding before creating the bag
        encode_raw(feed.scene(0).image, config.encoding)
    except ImageConversionError as err:
        raise ValueError(f"encoding {config.encoding!r} rejected: {err}") from None

    distro = DISTROS[config.distro]
    store = get_typestore(distro.typestore)
    Image, CompressedImage = store.types[IMAGE_TYPE], store.types[COMPRESSED_TYPE]
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    String = store.types[STRING_TYPE]
    start_ns = round((time.time() if config.start_time is None else config.start_time) * 1e9)
    summary = BagSummary(path, 0, config.scenes, start_ns, start_ns)
    counts = summary.message_counts

    with Writer(path, version=distro.metadata_version, storage_plugin=STORAGES[config.storage]) as writer:
        image_conn = writer.add_connection(config.topic, IMAGE_TYPE, typestore=store,
                                           offered_qos_profiles=[SENSOR_QOS])
        compressed_conn = (writer.add_connection(config.topic + "/compressed", COMPRESSED_TYPE,
                                                 typestore=store, offered_qos_profiles=[SENSOR_QOS])
                           if config.compressed else None)
        truth_conn = writer.add_connection(config.truth_topic, STRING_TYPE, typestore=store,
                                           offered_qos_profiles=[LATCHED_QOS])

        def write(conn, stamp: int, msg, msgtype: str) -> None:
            writer.write(conn, stamp, store.serialize_cdr(msg, msgtype))
            counts[conn.topic] = counts.get(conn.topic, 0) + 1

        for number in range(config.scenes):
            scene = feed.scene(number)
            rows = encode_raw(scene.image, config.encoding)  # once per scene, reused per frame
            jpeg = (np.frombuffer(rgb_to_compressed(scene.image, "jpeg", config.jpeg_quality), np.uint8)
                    if config.compressed else None)
            first = number * config.frames_per_scene
            write(truth_conn, frame_stamp(start_ns, first, config.rate),
                  String(data=ground_truth_json(scene, frame_stamp(start_ns, first, config.rate))),
                  STRING_TYPE)
            for frame in range(first, first + config.frames_per_scene):
                stamp = frame_stamp(start_ns, frame, config.rate)
                sec, nanosec = stamp_parts(stamp)
                header = Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=config.frame_id)
                write(image_conn, stamp, Image(
                    header=header, height=rows.shape[0], width=scene.image.shape[1],
                    encoding=config.encoding, is_bigendian=0, step=rows.shape[1],
                    data=rows.reshape(-1)), IMAGE_TYPE)
                if compressed_conn is not None:
                    write(compressed_conn, stamp, CompressedImage(
                        header=header, format=f"{config.encoding}; jpeg compressed bgr8", data=jpeg),
                        COMPRESSED_TYPE)
                summary.frame_stamps.append(stamp)
    summary.frames = len(summary.frame_stamps)
    summary.end_ns = summary.frame_stamps[-1]
    return summary


def _prepare_output(path: Path, overwrite: bool) -> None:
    if not path.exists():
        if not path.parent.is_dir():
            raise ValueError(f"output folder's parent {path.parent} does not exist")
        return
    is_bag = path.is_dir() and (path / "metadata.yaml").is_file()
    empty = path.is_dir() and not any(path.iterdir())
    if not overwrite:
        raise ValueError(f"output {path} already exists; pass --overwrite to replace a bag there")
    if not (is_bag or empty):
        raise ValueError(f"refusing to overwrite {path}: it is not a rosbag2 folder (no metadata.yaml)")
    shutil.rmtree(path)


def _parser() -> argparse.ArgumentParser:
    d = RecordConfig()
    p = argparse.ArgumentParser(
        prog="record_bag", description=__doc__.split("\n\n")[0],
        epilog="Topics: IMAGE_TOPIC (sensor_msgs/Image), IMAGE_TOPIC/compressed with --compressed, "
               "and TRUTH_TOPIC (std_msgs/String JSON per scene: split, index, stamp, caption, objects).")
    p.add_argument("output", type=Path, help="bag folder to create")
    p.add_argument("--scenes", type=int, default=d.scenes, help="number of scenes (default %(default)s)")
    p.add_argument("--frames-per-scene", type=int, default=d.frames_per_scene,
                   help="frames each scene is held (default %(default)s)")
    p.add_argument("--rate", type=float, default=d.rate, help="frames per second (default %(default)s)")
    p.add_argument("--split", default=d.split, help="world split (default %(default)s)")
    p.add_argument("--start-index", type=int, default=d.start_index, help="first scene index")
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--height", type=int, default=d.height)
    p.add_argument("--seed", type=int, default=d.seed, help="world seed")
    p.add_argument("--encoding", default=d.encoding, help="raw image encoding (default %(default)s)")
    p.add_argument("--compressed", action="store_true", help="also record JPEG CompressedImage")
    p.add_argument("--jpeg-quality", type=int, default=d.jpeg_quality)
    p.add_argument("--frame-id", default=d.frame_id)
    p.add_argument("--topic", default=d.topic, help="image topic (default %(default)s)")
    p.add_argument("--truth-topic", default=d.truth_topic, help="ground-truth topic (default %(default)s)")
    p.add_argument("--storage", choices=sorted(STORAGES), default=d.storage)
    p.add_argument("--distro", choices=sorted(DISTROS), default=d.distro,
                   help="whose `ros2 bag play` must read it: humble (metadata version 8, played by "
                        "Humble and Jazzy) or jazzy (version 9, Jazzy only); default %(default)s")
    p.add_argument("--start-time", type=float, default=None,
                   help="first stamp in seconds since the epoch (default: now)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bag at OUTPUT")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; exit code 2 with a one-line error on bad input."""
    args = _parser().parse_args(argv)
    options = {k: v for k, v in vars(args).items() if k not in ("output", "overwrite")}
    try:
        summary = record_bag(args.output, RecordConfig(**options), overwrite=args.overwrite)
    except (ValueError, OSError, WriterError) as err:
        print(f"record_bag: error: {err}", file=sys.stderr)
        return 2
    seconds = (summary.end_ns - summary.start_ns) / 1e9
    topics = ", ".join(f"{t} ({n})" for t, n in summary.message_counts.items())
    print(f"wrote {summary.frames} frames of {summary.scenes} scenes ({seconds:.1f} s) to "
          f"{summary.path} [{args.storage}, for {args.distro}]: {topics}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
