"""BackgroundSpin: a client's executor in a thread, stopped only once the thread is done.

rclpy's Executor.shutdown returns at once, even with a callback in progress; destroying
the node right after it aborted the node benchmark's client about once in eight runs.
"""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("rclpy")


def test_stop_waits_for_the_callback_in_progress_and_the_thread(rclpy_context):
    from rclpy.node import Node

    from sharpeye_ros.ros.spin import BackgroundSpin

    node = Node("background_spin_test", context=rclpy_context)
    entered, finished = threading.Event(), threading.Event()

    def slow() -> None:
        entered.set()
        time.sleep(0.5)
        finished.set()

    node.create_timer(0.01, slow)
    spin = BackgroundSpin(node)
    try:
        assert entered.wait(5.0)
        assert spin.stop(timeout=5.0)
        # the callback had finished and the thread had ended when stop returned
        assert finished.is_set() and not spin.thread.is_alive()
    finally:
        spin.stop(timeout=5.0)
        node.destroy_node()


def test_stop_after_the_context_was_shut_down_is_clean(rclpy_context):
    import rclpy
    from rclpy.node import Node

    from sharpeye_ros.ros.spin import BackgroundSpin

    node = Node("background_spin_shutdown_test", context=rclpy_context)
    spin = BackgroundSpin(node)
    rclpy.try_shutdown(context=rclpy_context)  # as a signal would: the spin ends on its own
    assert spin.stop(timeout=5.0)
    node.destroy_node()
