"""transformers, imported once without the start-up noise of optional libraries it finds.

transformers imports torchao at import time whenever it is installed (its quantizers
register then), and torchao logs warnings as it loads: C++ extensions built for another
torch, and pytree registrations that torch deprecates. The model never uses torchao (its
int8 path is torch's own kernels; torchao is only in the ``cpu-bench`` extra, for
``sharpeye_ros.benchmark.libraries``), so at the node's start-up those lines are noise
that reads like a fault. :func:`import_transformers` silences these loggers for the
import only; anything they log later is shown.
"""

from __future__ import annotations

import logging

# The loggers torchao's import writes to (torchao 0.18 with torch 2.13).
QUIET_LOGGERS = ("torchao", "torch.utils._pytree")


def import_transformers() -> None:
    """Import transformers' model machinery (and whatever optional library it pulls in)
    with :data:`QUIET_LOGGERS` held at ERROR; their levels are restored afterwards."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        import transformers.modeling_utils  # noqa: F401  (imports its quantizers, torchao's included)
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
