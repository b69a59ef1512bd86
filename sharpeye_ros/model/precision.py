"""Precision: the dtype a model runs in, and the CPU's fast paths.

``float32``, ``float16``, ``bfloat16``: every weight in that dtype. ``int8``: the Linear
layers of the vision tower, the connector, the LM's decoder layers and DeepLens hold int8
weights (per output channel) and quantize their input per call (dynamic quantization);
everything else stays in float32: the embeddings and the tied LM head, layer norms, the
patch embedding, and DeepLens's two tiny projections of the attention heat and the crop
boxes. ``int8-vision``: only the vision tower's Linear layers in int8, everything else
float32. ``bfloat16-mixed``: the same Linear layers as ``int8`` hold bfloat16 weights and
multiply in bfloat16 (their input cast per call, their output back to float32: autocast's
recipe with the weights cast once, at load), and the vision tower's attention and every
MLP's activation run in bfloat16; the residual stream, norms, the LM's attention, the
embeddings and the LM head stay float32. In all three the LM head is a
:class:`ShortlistHead`: float32 for the tokens a decode step's search can pick, drafted
cheaply for the rest. The model is converted when it loads (:func:`apply`); checkpoints
stay float.

Why these paths: measured one group at a time at paper size (random weights, top-1
agreement with float32 over the glance prompt; ``benchmark.fidelity --groups``), int8 in
the LM costs the most fidelity (its value/output projections and fc1/fc2, which write into
the residual stream: 93-94% each; q/k 99.7%), the connector 97.6%, the vision tower least
(98.4%) while it is the largest share of a glance's time. Every weight in bfloat16 misses
the top-1 bar too (96.4%: the residual stream and the LM head in bfloat16); bfloat16
matmuls with the rest in float32 meet it (98.4%), and the LM head must stay float32 for
that (in bfloat16: 96.8%). So ``int8`` is the fastest int8 path, and ``int8-vision`` and
``bfloat16-mixed`` are the ones that meet the fidelity bars (docs/benchmarks.md, "CPU fast
path").

``auto`` (:func:`resolve`) decides from the device and the CPU, not from a measurement at
start-up: float16 on CUDA; on a CPU with AMX (:func:`bf16_matmul_available`: Intel Xeon
4th generation and later, whose bfloat16 matmuls run 4.5-7x float32's),
``bfloat16-mixed``; else ``int8-vision`` where torch's x86 int8 kernels run
(:func:`int8_available`: the ``x86``/``fbgemm`` engine and an AVX2 or AVX-512 CPU); else
float32. ``auto`` never picks ``int8`` (it misses the top-1 bar) nor ``bfloat16``.
Without native bfloat16 instructions, bfloat16 matmuls run about 7x slower than float32
(measured on an AVX2 AMD EPYC), so neither bfloat16 path is ever automatic there.

The int8 kernel is fbgemm's dynamic-quantized linear (``torch.ops.quantized``). Without
VNNI its activations are quantized to 7 bits (``reduce_range``): AVX2's int8 multiply
adds pairs into 16 bits and would saturate on full-range activations (measured: full
range drops the top-1 agreement to 78%). With VNNI (:func:`int8_full_range`) the products
add into 32 bits, and full-range activations halve the rounding error.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable, Optional, Union

import torch
from torch import nn

from sharpeye_ros.model.language import head_product

PRECISIONS = ("auto", "float32", "float16", "bfloat16", "bfloat16-mixed", "int8", "int8-vision")
INT8_PRECISIONS = ("int8", "int8-vision")
# converted when the model loads, from its float checkpoint (never saved so), on the CPU only
CPU_PRECISIONS = INT8_PRECISIONS + ("bfloat16-mixed",)
FLOAT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Linear layers with fewer inputs than this stay float32: they cost nothing and their few
# inputs (DeepLens's heat and box projections: 1 and 4) quantize badly.
MIN_INT8_FEATURES = 16
INT8_ENGINES = ("x86", "fbgemm")
# ``auto`` keeps a model smaller than this in float32: the shipped demo model (3M
# parameters) runs 0.7x float32 in bfloat16-mixed and 1.0x in int8-vision (its layers are
# too small for the casts to pay); the paper model (453M) 1.7x and 1.3x (docs/benchmarks.md).
AUTO_MIN_PARAMETERS = 50_000_000
# Up to this many rows (a decode step's beams), a bfloat16 product reads its weight faster
# as the left operand, ``W @ x^T``, than as ``x @ W^T`` (oneDNN; measured on a 2-core Xeon
# with AMX, 3 rows: 1.5-1.8x on each of OPT-125M's layers alone; a paper-size decode step
# of the LM's layers, 27 -> 25 ms).
FEW_ROWS = 16
# A decode step's tokens per row that the LM head scores in float32 (:class:`ShortlistHead`):
# far more than the beams' top-k needs, so that the cheap product's error (int8: about 1%
# of a logit's spread) cannot push a float32 best out of it.
SHORTLIST = 32


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
        """Whether some layers run in int8."""
        return self.name in INT8_PRECISIONS

    @property
    def converted(self) -> bool:
        """Whether the model was converted at load (int8 or bfloat16-mixed layers), so
        that its weights are not a checkpoint's."""
        return self.name in CPU_PRECISIONS

    def describe(self) -> str:
        """One line for logs, e.g. ``int8-vision: ...; auto: ...``."""
        what = {"int8": "int8 weights, dynamic int8 activations (fbgemm)",
                "int8-vision": "int8-vision: the vision tower in int8 (fbgemm, dynamic activations), the rest float32",
                "bfloat16-mixed": "bfloat16-mixed: the Linear layers, the vision tower's attention and the "
                                  "MLPs' activations in bfloat16, the rest (norms, residuals, the LM's "
                                  "attention, LM head) float32",
                }.get(self.name, self.name)
        return f"{what}; {self.why}" if self.why else what


def int8_available() -> bool:
    """Whether this torch build and CPU run the int8 kernels (the x86/fbgemm engine)."""
    engines = getattr(torch.backends.quantized, "supported_engines", [])
    if not any(e in engines for e in INT8_ENGINES):
        return False
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "")()
    return capability.startswith("AVX")


def int8_full_range() -> bool:
    """Whether the int8 kernels take full-range (8-bit) activations: a CPU with VNNI, whose
    int8 products add into 32 bits (see the module docstring)."""
    return bool(getattr(torch.cpu, "_is_vnni_supported", lambda: False)())


def bf16_matmul_available() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively and fast: AMX tiles, which
    oneDNN (torch's bfloat16 matmul on the CPU) uses. AVX-512 BF16 alone is not counted:
    not measured here (see the module docstring)."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return bool(torch.backends.mkldnn.is_available() and amx())


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
        if device.type == "cpu" and bf16_matmul_available():
            return Precision("bfloat16-mixed", torch.float32, "auto: bfloat16-mixed on a CPU with AMX (native "
                             "bfloat16 matmuls: faster than float32, within the fidelity bars)", auto=True)
        if device.type == "cpu" and int8_available():
            return Precision("int8-vision", torch.float32, "auto: int8-vision on a CPU with x86 int8 kernels "
                             "(faster than float32, within the fidelity bars; int8 is opt-in)", auto=True)
        return Precision("float32", torch.float32, f"auto: float32 on {device.type} (no x86 int8 kernels here)",
                         auto=True)
    if name in CPU_PRECISIONS:
        if device.type != "cpu":
            raise ValueError(f"precision {name} runs on the CPU only, not on {device} (use float16 there)")
        if name in INT8_PRECISIONS and not int8_available():
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

        self._reduce_range = not int8_full_range()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.ops.quantized.linear_dynamic(x.float(), self._packed, self._reduce_range)
        return out if x.dtype == torch.float32 else out.to(x.dtype)

    def weight_bytes(self) -> int:
        """Bytes of the int8 weight (and float32 bias): what one pass reads."""
        return self.in_features * self.out_features + 4 * self.out_features

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class Bf16Linear(nn.Module):
    """A Linear layer whose weight (and bias) are held in bfloat16 and whose product runs in
    bfloat16: the input is cast per call, the output cast back to the input's dtype. Same
    ``in_features`` / ``out_features``, ``weight`` and call as the Linear it replaces."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # None: the input's dtype. bfloat16 for the vision tower's q/k/v projections, so that
        # its attention runs in bfloat16 (see :func:`apply`).
        self.output_dtype: Optional[torch.dtype] = None
        self.weight = nn.Parameter(linear.weight.detach().to(torch.bfloat16), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().to(torch.bfloat16),
                                                                  requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        dtype = self.output_dtype or x.dtype
        if flat.shape[0] > FEW_ROWS:
            out = nn.functional.linear(flat, self.weight, self.bias).to(dtype)
        else:  # a decode step's few rows (the beams): the weight as the left operand
            out = (self.weight @ flat.T).T.to(dtype)
            out = out if self.bias is None else out + self.bias  # bfloat16 + either: the output's dtype
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bfloat16"


class ShortlistHead(nn.Module):
    """The LM head of a converted model: float32 where the search looks, cheap elsewhere.

    A decode step's few rows (at most :data:`FEW_ROWS`: the beams) are first scored against
    every token by a cheap copy of the head (:class:`Int8Linear` where the int8 kernels
    run, else :class:`Bf16Linear`); each row's :data:`SHORTLIST` best are then scored again
    in float32 and replace their cheap logits. The search's top-k, so its tokens, come from
    float32 logits whenever the float32 best are in the shortlist; the log-softmax's
    normaliser has float32 terms for the shortlist and cheap ones for the rest. Why: the
    float32 head is a decode step's largest read (154 MB at paper size: 15 ms of a 55 ms
    step on a 2-core Xeon; int8 2 ms), and it must stay float32 for the top-1 bar (in
    bfloat16: 96.8%). More rows (a prompt, training) take the float32 product alone.
    ``weight`` and ``bias`` are the head's own (tied to the embeddings)."""

    def __init__(self, head: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = head.in_features, head.out_features
        self.weight, self.bias = head.weight, head.bias
        self.draft = Int8Linear(head) if int8_available() else Bf16Linear(head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).float()
        if flat.shape[0] > FEW_ROWS or self.out_features <= SHORTLIST:
            out = head_product(self.weight, self.bias, flat)
        else:
            out = self.draft(flat).float()
            top = out.topk(SHORTLIST, dim=-1).indices
            exact = torch.einsum("nd,ncd->nc", flat, self.weight[top])
            out.scatter_(1, top, exact if self.bias is None else exact + self.bias[top])
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, float32, shortlist {SHORTLIST}"


def quantize_int8(module: nn.Module, keep: Iterable[nn.Module] = ()) -> nn.Module:
    """Replace, in place, every ``nn.Linear`` under ``module`` by an :class:`Int8Linear`,
    except those in ``keep``, those sharing their weight with another module (a tied LM
    head), and those with fewer than :data:`MIN_INT8_FEATURES` inputs. Returns ``module``."""
    return _replace_linears(module, Int8Linear, keep)


def matmul_bf16(module: nn.Module, keep: Iterable[nn.Module] = ()) -> nn.Module:
    """Replace, in place, the same layers as :func:`quantize_int8` by :class:`Bf16Linear`
    ones. Returns ``module``."""
    return _replace_linears(module, Bf16Linear, keep)


def _replace_linears(module: nn.Module, kind: type, keep: Iterable[nn.Module]) -> nn.Module:
    for parent, name, child in _linear_targets(module, keep):
        setattr(parent, name, kind(child))
    return module


def _linear_targets(module: nn.Module, keep: Iterable[nn.Module]) -> list[tuple[nn.Module, str, nn.Linear]]:
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
    weight; int8, int8-vision and bfloat16-mixed convert layers as this module's docstring
    says (on the CPU). A fast path that ``auto`` chose stays float32 for a model under
    :data:`AUTO_MIN_PARAMETERS`: its per-call conversions cost more than its matmuls save."""
    count = sum(p.numel() for p in model.parameters())
    if precision.auto and precision.converted and count < AUTO_MIN_PARAMETERS:
        precision = Precision("float32", torch.float32, f"auto: float32 for a model of {count / 1e6:.1f}M "
                              f"parameters (a CPU fast path pays off from {AUTO_MIN_PARAMETERS / 1e6:.0f}M)",
                              auto=True)
    lm = model.lm.model
    keep = [lm.lm_head]
    model.to(precision.dtype)
    if precision.name == "int8":
        quantize_int8(model, keep=keep)
    elif precision.name == "int8-vision":
        quantize_int8(model.vision)
    elif precision.name == "bfloat16-mixed":
        matmul_bf16(model, keep=keep)
        # The vision tower's queries, keys and values stay bfloat16, so its attention (a
        # third of its float32 time at paper size) runs in bfloat16: they are bfloat16
        # products already, and the attention's output goes into a bfloat16 product next.
        # The LM's attention stays float32 (in bfloat16 the top-1 agreement drops).
        for attn in _attentions(model.vision):
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj):
                if isinstance(proj, Bf16Linear):
                    proj.output_dtype = torch.bfloat16
        # An MLP's hidden activations (4x its width: a layer's widest tensor) stay bfloat16
        # between its two products, and its activation runs on them there: fc2 reads them in
        # bfloat16 anyway, so this only drops two casts (and, for the LM's ReLU, changes no
        # value; the vision tower's quick_gelu rounds once more).
        for mlp in _mlps(model):
            mlp.fc1.output_dtype = torch.bfloat16
            mlp.fc2.output_dtype = precision.dtype  # back into the float32 residual stream
    if precision.converted:
        lm.lm_head = ShortlistHead(lm.lm_head)
    model.precision = precision
    return model


def _mlps(module: nn.Module) -> list[nn.Module]:
    """The MLP blocks under ``module`` whose two products (``fc1``, ``fc2``: CLIP's MLP, an
    OPT decoder layer) both run as :class:`Bf16Linear`."""
    return [m for m in module.modules()
            if isinstance(getattr(m, "fc1", None), Bf16Linear) and isinstance(getattr(m, "fc2", None), Bf16Linear)]


def _attentions(module: nn.Module) -> list[nn.Module]:
    """The attention blocks under ``module``: those with q, k and v projections."""
    return [m for m in module.modules() if all(hasattr(m, n) for n in ("q_proj", "k_proj", "v_proj"))]


def int8_layers(model: nn.Module) -> int:
    """How many Linear layers of ``model`` run in int8 (a :class:`ShortlistHead`'s draft
    not counted: the head is float32)."""
    return _layers(model, Int8Linear)


def bf16_layers(model: nn.Module) -> int:
    """How many Linear layers of ``model`` run as :class:`Bf16Linear` (drafts not counted)."""
    return _layers(model, Bf16Linear)


def _layers(model: nn.Module, kind: type) -> int:
    drafts = {id(m.draft) for m in model.modules() if isinstance(m, ShortlistHead)}
    return sum(isinstance(m, kind) and id(m) not in drafts for m in model.modules())


def weight_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s weights as they are held (int8 layers at 1 byte a weight)."""
    total = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())
    return total + sum(m.weight_bytes() for m in model.modules() if isinstance(m, Int8Linear))


def precision_of(model: nn.Module) -> Optional[Precision]:
    """The precision ``model`` was put in by :func:`apply` (None when never applied)."""
    return getattr(model, "precision", None)
