"""A node executable's life under SIGINT and SIGTERM: a clean exit (code 0) at any moment.

Supervisors signal at any time: ``ros2 launch`` sends SIGINT to the whole process group
(so a node often gets two), then SIGTERM, then SIGKILL; systemd and docker send SIGTERM.
Python's default turns SIGINT into a KeyboardInterrupt wherever the main thread is (an
import, model loading, a thread join during shutdown), which printed tracebacks and, with
a caption still running in torch, aborted the process ("terminate called without an active
exception"); SIGTERM during start-up killed it outright or left rclpy's context shut down
under the node being built. So :data:`SIGNALS` handles both signals for the whole life:

- *starting* (imports, ``rclpy.init``, model loading, building the node): nothing is worth
  saving yet, so the process exits at once;
- *running* (:func:`spin_until_shutdown`): rclpy's own handlers, installed only now, wake
  the executor and shut the context down; the node is then destroyed in order;
- *stopping*: a further signal exits at once, without waiting for a caption in progress.

This module imports nothing heavy, so an executable can call :func:`exit_cleanly_on_signals`
before it imports torch (seconds on a small CPU).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Optional

STARTING, RUNNING, STOPPING = "starting", "running", "stopping"


def exit_now(code: int = 0) -> None:
    """Leave the process at once with ``code``: flush what was written, run no finalizers
    (a thread still inside torch or DDS must not be torn down under it)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or broken stream: nothing more to save
            pass
    try:  # C stdio buffers (stdout into a pipe is fully buffered)
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except Exception:
        pass
    os._exit(code)


class ProcessSignals:
    """SIGINT and SIGTERM handling through the phases of a node process (see the module)."""

    def __init__(self) -> None:
        self.phase = STARTING
        self.received: Optional[int] = None  # the first signal, once one came
        self.installed = False

    def install(self) -> None:
        """Handle SIGINT and SIGTERM from now on (idempotent; main thread only)."""
        if self.installed or threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)
        self.installed = True

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.received is None
        self.received = signum
        if self.phase == RUNNING and first:
            self.phase = STOPPING  # rclpy's handler has already woken the executor
            return
        exit_now(0)

    def running(self) -> None:
        """The executor is about to spin: let rclpy's handlers stop it (they run in C, so
        they also wake a wait that Python's handler could not interrupt)."""
        if not self.installed:
            return
        from rclpy.signals import SignalHandlerOptions, install_signal_handlers

        install_signal_handlers(SignalHandlerOptions.ALL)  # chains to ours
        self.phase = RUNNING

    def stopping(self) -> None:
        """Spinning is over; a signal from now on exits at once."""
        self.phase = STOPPING


SIGNALS = ProcessSignals()


def exit_cleanly_on_signals() -> ProcessSignals:
    """Install :data:`SIGNALS` (a node executable's first act) and return it."""
    SIGNALS.install()
    return SIGNALS


def finish(code: int) -> int:
    """The end of a node executable's main(): exit at once with ``code``. Interpreter
    shutdown takes a second after torch and resets SIGINT to its default, so a second
    signal from a supervisor would kill the process in that window (exit -2). Outside an
    executable (``SIGNALS`` not installed) ``code`` is returned."""
    if SIGNALS.installed:
        exit_now(code)
    return code


def init_rclpy(args: Optional[list[str]] = None) -> None:
    """``rclpy.init`` for a node executable: rclpy's signal handlers wait for
    :func:`spin_until_shutdown`, so a signal while the node is built exits cleanly instead
    of invalidating the context under it."""
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    exit_cleanly_on_signals()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)


def spin_until_shutdown(node: Any) -> None:
    """Spin ``node`` until its context shuts down (rclpy turns SIGINT and SIGTERM into that).

    A signal that lands between two spins can make the executor raise RCLError
    ("context is not valid") instead of ExternalShutdownException; both mean a normal
    shutdown. Any error while the context is still alive is a bug and propagates.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    SIGNALS.running()
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok(context=node.context):
            raise
    finally:
        SIGNALS.stopping()
        executor.shutdown(timeout_sec=0)


class BackgroundSpin:
    """An executor spinning ``node`` in a daemon thread (a client beside the node under
    test: the benchmarks), and :meth:`stop`, which returns only once that thread is done.

    rclpy's ``Executor.shutdown`` (Jazzy) neither waits for a callback in progress nor for
    the spinning thread: it returns at once. Destroying the node and the context right
    after it raced the thread still inside a callback or a wait, and aborted the process
    about once in eight node benchmark runs ("terminate called without an active
    exception", exit -6)."""

    def __init__(self, node: Any) -> None:
        from rclpy.executors import SingleThreadedExecutor

        self.executor = SingleThreadedExecutor(context=node.context)
        self.executor.add_node(node)
        self.thread = threading.Thread(target=self._spin, daemon=True, name="background-spin")
        self.thread.start()

    def _spin(self) -> None:
        from rclpy.executors import ExternalShutdownException

        try:
            self.executor.spin()
        except ExternalShutdownException:  # the context was shut down under it: done
            pass

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop spinning and wait up to ``timeout`` seconds for the thread (and a callback
        in progress) to finish. True when it did: then the node may be destroyed."""
        self.executor.shutdown(timeout_sec=timeout)
        self.thread.join(timeout)
        return not self.thread.is_alive()


__all__ = ["SIGNALS", "BackgroundSpin", "ProcessSignals", "exit_cleanly_on_signals", "exit_now", "finish", "init_rclpy",
           "spin_until_shutdown", "STARTING", "RUNNING", "STOPPING"]
