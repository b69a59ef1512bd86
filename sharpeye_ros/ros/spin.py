"""Spinning a node until SIGINT or SIGTERM, as a normal exit without a traceback."""

from __future__ import annotations

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node


def spin_until_shutdown(node: Node) -> None:
    """Spin ``node`` until its context shuts down (rclpy turns SIGINT and SIGTERM into that).

    A signal that lands between two spins can make the executor raise RCLError
    ("context is not valid") instead of ExternalShutdownException; both mean a normal
    shutdown. Any error while the context is still alive is a bug and propagates.
    """
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok(context=node.context):
            raise
    finally:
        executor.shutdown(timeout_sec=0)
