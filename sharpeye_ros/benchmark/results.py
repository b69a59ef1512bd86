"""What the benchmark's results hold.

The modes a model is measured in: the model's own (:mod:`sharpeye_ros.evaluation.modes`:
``glance``, ``deeplens``, ``zoom``) and the benchmark's two, ``deeplens_nodraft`` (the
refined caption decoded token by token, without the initial caption as a draft) and
``naive`` (:mod:`~sharpeye_ros.benchmark.naive`). Runs are keyed by the kind of device
they ran on: ``cpu`` or ``cuda``.
"""

from __future__ import annotations

from sharpeye_ros.evaluation.modes import DEEPLENS, GLANCE, ZOOM

NODRAFT = "deeplens_nodraft"
NAIVE = "naive"
MODES = (GLANCE, DEEPLENS, NODRAFT, ZOOM, NAIVE)
CPU, CUDA = RUN_KINDS = ("cpu", "cuda")
RUN_TITLES = {CPU: "CPU", CUDA: "GPU"}


def run_kind(device: str) -> str:
    """The kind of run a measurement on ``device`` (cpu, cuda or cuda:N) belongs to."""
    return CUDA if device.startswith("cuda") else CPU
