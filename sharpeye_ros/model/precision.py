"""Precision: the dtype a model runs in, and the CPU's int8 fast paths.

``float32``, ``float16``, ``bfloat16``: every weight in that dtype. ``int8``: the Linear
layers of the vision tower, the connector, the LM's decoder layers and DeepLens hold int8
weights (per output channel) and quantize their input per call (dynamic quantization);
everything else stays in float32: the embeddings and the tied LM head, layer norms, the
patch embedding, and DeepLens's two tiny projections of the attention heat and the crop
boxes. ``int8-vision``: only the vision tower's Linear layers in int8, everything else
float32. The model is quantized when it loads (:func:`apply`); checkpoints stay float.

Why two int8 paths: measured one group at a time at paper size (random weights, top-1
agreement with float32 over the glance prompt, 6 images; ``benchmark.fidelity --groups``),
int8 in the LM costs the most fidelity (its value/output projections and fc1/fc2, which
write into the residual stream: 93-94% each; q/k 99.7%), the connector 97.6%, the vision
tower least (98.4%) while it is the largest share of a glance's time. So ``int8`` is the
fastest path and ``int8-vision`` the one that meets the fidelity bars (98.4% over 20
images, vision cosine 0.99983: docs/benchmarks.md, "CPU fast path").

``auto`` (:func:`resolve`) decides from the device and the CPU, not from a measurement at
start-up: float16 on CUDA; on a CPU, ``int8-vision`` where torch's x86 int8 kernels run
(:func:`int8_available`: the ``x86``/``fbgemm`` engine and an AVX2 or AVX-512 CPU), as it
meets both paper-size fidelity bars and measures faster than float32 there; else float32.
``auto`` never picks ``int8`` (it misses the top-1 bar, 91.4% against 98%) nor bfloat16
(slower than float32 without native bf16 instructions; not worth a per-machine probe).

The int8 kernel is fbgemm's dynamic-quantized linear (``torch.ops.quantized``), with
activations quantized to 7 bits (``reduce_range``): without VNNI, AVX2's int8 multiply
adds pairs into 16 bits and would saturate on full-range activations (measured: full
range drops the top-1 agreement to 78%).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable, Optional, Union

import torch
from torch import nn

PRECISIONS = ("auto", "float32", "float16", "bfloat16", "int8", "int8-vision")
INT8_PRECISIONS = ("int8", "int8-vision")
FLOAT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Linear layers with fewer inputs than this stay float: they cost nothing and their few
# inputs (DeepLens's heat and box projections: 1 and 4) quantize badly.
MIN_INT8_FEATURES = 16
INT8_ENGINES = ("x86", "fbgemm")


@dataclass(frozen=True)
class Precision:
    """A resolved precision: ``name`` (float32, float16, bfloat16 or int8), ``dtype``
    (the weights' dtype, or for int8 the float dtype of what stays float and of the
    activations), ``why`` (how it was chosen, for logs) and ``auto`` (whether ``auto``
    chose it)."""

    name: str
    dtype: torch.dtype
    why: str = ""
    auto: bool = False  # chosen by ``auto``

    @property
    def quantized(self) -> bool:
        return self.name in INT8_PRECISIONS

    def describe(self) -> str:
        """One line for logs, e.g. ``int8-vision: ...; auto: ...``."""
        what = {"int8": "int8 weights, dynamic int8 activations (fbgemm)",
                "int8-vision": "int8-vision: the vision tower in int8 (fbgemm, dynamic activations), the rest float32",
                }.get(self.name, self.name)
        return f"{what}; {self.why}" if self.why else what


def int8_available() -> bool:
    """Whether this torch build and CPU run the int8 kernels (the x86/fbgemm engine)."""
    engines = getattr(torch.backends.quantized, "supported_engines", [])
    if not any(e in engines for e in INT8_ENGINES):
        return False
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()
    return capability.startswith("AVX")


def resolve(precision: Union[str, torch.dtype, Precision, None], device: Union[str, torch.device]) -> Precision:
    """The :class:`Precision` that ``precision`` (a name of :data:`PRECISIONS`, a float
    ``torch.dtype`` or a resolved :class:`Precision`; None: float32) means on ``device``;
    ValueError when it cannot run there."""
    device = torch.device(device)
    if isinstance(precision, Precision):
        resolve(precision.name, device)  # still runs there
        return precision
    if precision is None:
        return Precision("float32", torch.float32)
    if isinstance(precision, torch.dtype):
        names = {v: k for k, v in FLOAT_DTYPES.items()}
        if precision not in names:
            raise ValueError(f"dtype {precision} is not a floating dtype ({', '.join(FLOAT_DTYPES)})")
        return Precision(names[precision], precision)
    name = str(precision)
    if name not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {name!r}")
    if name == "auto":
        if device.type == "cuda":
            return Precision("float16", torch.float16, "auto: float16 on CUDA", auto=True)
        if device.type == "cpu" and int8_available():
            return Precision("int8-vision", torch.float32, "auto: int8-vision on a CPU with x86 int8 kernels "
                             "(faster than float32, within the fidelity bars; int8 is opt-in)", auto=True)
        return Precision("float32", torch.float32, f"auto: float32 on {device.type} (no x86 int8 kernels here)",
                         auto=True)
    if name in INT8_PRECISIONS:
        if device.type != "cpu":
            raise ValueError(f"precision {name} runs on the CPU only, not on {device} (use float16 there)")
        if not int8_available():
            raise ValueError(f"precision {name} needs torch's x86 int8 kernels (an x86 CPU with AVX2), "
                             "which this machine or torch build lacks: use float32")
        return Precision(name, torch.float32)
    return Precision(name, FLOAT_DTYPES[name])


class Int8Linear(nn.Module):
    """A Linear layer with int8 weights (symmetric, per output channel) whose input is
    quantized per call: ``y = x W^T + b`` computed by fbgemm in int8, output in float32.
    Same ``in_features`` / ``out_features`` and call as the Linear it replaces, so hooks
    on it (the attention probe's) see the same outputs' shapes."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float().cpu()
        bias = None if linear.bias is None else linear.bias.detach().float().cpu()
        scale = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12).double()
        zero = torch.zeros(weight.shape[0], dtype=torch.long)
        with warnings.catch_warnings():
            # torch >= 2.13 warns that quantized tensors are deprecated; this one lives only
            # until fbgemm has packed it (the kernel itself is the x86 int8 linear).
            warnings.simplefilter("ignore")
            qweight = torch.quantize_per_channel(weight, scale, zero, 0, torch.qint8)
            self._packed = torch.ops.quantized.linear_prepack(qweight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.ops.quantized.linear_dynamic(x.float(), self._packed, True)
        return out if x.dtype == torch.float32 else out.to(x.dtype)

    def weight_bytes(self) -> int:
        """Bytes of the int8 weight (and float32 bias): what one pass reads."""
        return self.in_features * self.out_features + 4 * self.out_features

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_int8(module: nn.Module, keep: Iterable[nn.Module] = ()) -> nn.Module:
    """Replace, in place, every ``nn.Linear`` under ``module`` by an :class:`Int8Linear`,
    except those in ``keep``, those sharing their weight with another module (a tied LM
    head), and those with fewer than :data:`MIN_INT8_FEATURES` inputs. Returns ``module``."""
    for parent, name, child in _int8_targets(module, keep):
        setattr(parent, name, Int8Linear(child))
    return module


def _int8_targets(module: nn.Module, keep: Iterable[nn.Module]) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute name, Linear) of every layer :func:`quantize_int8` replaces."""
    keep_ids = {id(m) for m in keep}
    weights: dict[int, int] = {}
    for m in module.modules():
        for p in m.parameters(recurse=False):
            weights[id(p)] = weights.get(id(p), 0) + 1
    return [(parent, name, child) for parent in module.modules() for name, child in parent.named_children()
            if type(child) is nn.Linear and id(child) not in keep_ids and weights.get(id(child.weight), 0) == 1
            and child.in_features >= MIN_INT8_FEATURES]


def apply(model: nn.Module, precision: Precision) -> nn.Module:
    """``model`` (a SharpEyes, on its device) in ``precision``: float dtypes cast every
    weight; int8 and int8-vision quantize as this module's docstring says (on the CPU)."""
    keep = [model.lm.model.lm_head]
    model.to(precision.dtype)
    if precision.name == "int8":
        quantize_int8(model, keep=keep)
    elif precision.name == "int8-vision":
        quantize_int8(model.vision)
    model.precision = precision
    return model


def int8_layers(model: nn.Module) -> int:
    """How many Linear layers of ``model`` run in int8."""
    return sum(isinstance(m, Int8Linear) for m in model.modules())


def weight_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s weights as they are held (int8 layers at 1 byte a weight)."""
    total = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())
    return total + sum(m.weight_bytes() for m in model.modules() if isinstance(m, Int8Linear))


def precision_of(model: nn.Module) -> Optional[Precision]:
    """The precision ``model`` was put in by :func:`apply` (None when never applied)."""
    return getattr(model, "precision", None)
