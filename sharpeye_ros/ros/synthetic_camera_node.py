"""``synthetic_camera``: a camera node that shows scenes of the synthetic world.

Publishes ``image`` (sensor_msgs/Image, any raw encoding the conversion module encodes)
and, when ``publish_compressed`` is true, ``<image>/compressed`` (JPEG: image_transport's
name for it, so a remap of ``image`` moves both), both reliable with depth 5 (REP 2003),
at ``rate`` Hz of the node's clock (so it follows ``/clock`` under
``use_sim_time``). Stamps are the clock's "now"; the scene changes every ``scene_period``
seconds. The current scene's ground truth goes to ``ground_truth`` (std_msgs/String JSON,
see :mod:`sharpeye_ros.ros.scene_feed`), latched with transient-local QoS.

Example::

    ros2 run sharpeye_ros synthetic_camera --ros-args -p rate:=5.0 -p encoding:=bgr8 \\
        -r image:=/camera/image_raw
"""

from __future__ import annotations

import array
import sys
from typing import Any, Optional

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from sharpeye_ros.ros.camera_parameters import PARAMETERS, CameraSettings
from sharpeye_ros.ros.image_conversion import ImageConversionError, fill_image_msg, rgb_to_compressed
from sharpeye_ros.ros.parameters import declare
from sharpeye_ros.ros.spin import finish, init_rclpy, spin_until_shutdown
from sharpeye_ros.ros.scene_feed import SceneFeed, ground_truth_json, scene_number
from sharpeye_ros.ros.stamps import NS_PER_S

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Images are published reliable, as REP 2003 asks of sensor drivers: a reliable publisher
# matches best-effort subscribers (the captioner) and reliable ones (RViz's default) alike.
IMAGE_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


class SyntheticCamera(Node):
    """Publishes the synthetic world as a camera stream. Raises ValueError on bad parameters."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("synthetic_camera", **kwargs)
        s = self.settings = CameraSettings.from_values(declare(self, PARAMETERS))
        self.feed = SceneFeed(s.split, s.start_index, s.width, s.height, s.seed)
        self._image = Image()
        self._image.header.frame_id = s.frame_id
        self._compressed: Optional[CompressedImage] = None
        if s.publish_compressed:
            self._compressed = CompressedImage()
            self._compressed.header.frame_id = s.frame_id
            self._compressed.format = f"{s.encoding}; jpeg compressed bgr8"  # image_transport style
        try:  # check the encoding now rather than at the first frame
            fill_image_msg(self._image, self.feed.scene(0).image, s.encoding)
        except ImageConversionError as err:
            raise ValueError(f"parameter 'encoding' = {s.encoding!r} rejected: {err}") from None

        self._image_pub = self.create_publisher(Image, "image", IMAGE_QOS)
        compressed_topic = self._image_pub.topic_name.rstrip("/") + "/compressed"  # image_transport's rule
        self._compressed_pub = (self.create_publisher(CompressedImage, compressed_topic, IMAGE_QOS)
                                if self._compressed is not None else None)
        self._truth_pub = self.create_publisher(String, "ground_truth", LATCHED)
        self._start_ns: Optional[int] = None
        self._number: Optional[int] = None
        self._timer = self.create_timer(1.0 / s.rate, self._tick)
        self.get_logger().info(
            f"publishing {s.split} scenes from {s.start_index} at {s.rate:g} Hz, "
            f"{s.width}x{s.height} {s.encoding}, new scene every {s.scene_period:g} s")

    def _tick(self) -> None:
        now = self.get_clock().now().nanoseconds
        if now == 0:  # sim time before the first /clock message: no meaningful stamp yet
            return
        if self._start_ns is None or now < self._start_ns:  # first frame, or the clock jumped back
            self._start_ns, self._number = now, None
        number = scene_number((now - self._start_ns) / NS_PER_S, self.settings.scene_period)
        if self.settings.num_scenes:
            number %= self.settings.num_scenes
        if number != self._number:
            self._show(number, now)
        stamp = Time(nanoseconds=now).to_msg()
        self._image.header.stamp = stamp
        self._image_pub.publish(self._image)
        if self._compressed is not None and self._compressed_pub is not None:
            self._compressed.header.stamp = stamp
            self._compressed_pub.publish(self._compressed)

    def _show(self, number: int, now_ns: int) -> None:
        """Switch to scene ``number``: encode it once, announce its ground truth."""
        scene = self.feed.scene(number)
        fill_image_msg(self._image, scene.image, self.settings.encoding)
        if self._compressed is not None:
            data = array.array("B")
            data.frombytes(rgb_to_compressed(scene.image, "jpeg", self.settings.jpeg_quality))
            self._compressed.data = data
        self._truth_pub.publish(String(data=ground_truth_json(scene, now_ns)))
        self._number = number
        self.get_logger().info(f"scene {scene.split}/{scene.index}: {scene.captions[0]}")


def main(args: Optional[list[str]] = None) -> int:
    """Run the node until SIGINT/SIGTERM (exit 0, at any moment: see
    :mod:`sharpeye_ros.ros.spin`); exit code 2 on bad parameters."""
    init_rclpy(args)
    try:
        node = SyntheticCamera()
    except ValueError as err:
        print(f"synthetic_camera: {err}", file=sys.stderr)
        rclpy.try_shutdown()
        return finish(2)
    try:
        spin_until_shutdown(node)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return finish(0)


if __name__ == "__main__":
    sys.exit(main())
