"""ROS time stamps <-> integer nanoseconds, the one form the package computes with.

Pure: a stamp is anything with ``sec`` and ``nanosec`` (``builtin_interfaces/Time`` of
rclpy or of the ``rosbags`` typestore), the ``{"sec": ..., "nanosec": ...}`` mapping the
ground-truth JSON holds, or a message with a ``header``, so the nodes, the bag writer, the
demo, the benchmark and the tests share these without importing rclpy.
"""

from __future__ import annotations

from typing import Any, Mapping

NS_PER_S = 1_000_000_000


def stamp_ns(stamp: Any) -> int:
    """Nanoseconds of ``stamp``: ``sec`` / ``nanosec`` attributes, such a mapping, or a
    message with a ``header`` (its ``header.stamp``)."""
    if hasattr(stamp, "header"):
        stamp = stamp.header.stamp
    if isinstance(stamp, Mapping):
        return int(stamp["sec"]) * NS_PER_S + int(stamp["nanosec"])
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def stamp_parts(ns: int) -> tuple[int, int]:
    """``(sec, nanosec)`` of ``ns`` nanoseconds, nanosec in [0, 1e9), as a stamp holds them."""
    return divmod(int(ns), NS_PER_S)


def stamp_seconds(stamp: Any) -> float:
    """Seconds of ``stamp``, for display (computations keep :func:`stamp_ns`'s integers)."""
    return stamp_ns(stamp) / NS_PER_S


__all__ = ["NS_PER_S", "stamp_ns", "stamp_parts", "stamp_seconds"]
