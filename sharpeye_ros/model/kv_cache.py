"""The decode's KV cache (one buffer per decoder layer, written in place) and the
attention that reads it, with a beam search's shared prompt held once."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from transformers import AttentionInterface
from transformers.cache_utils import DynamicLayer
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

# The LM's attention implementation (LanguageModel sets it): sdpa, except over a
# :class:`SharedPrefix`, which it reads as :func:`shared_prefix_attention`.
ATTENTION = "sharpeye_sdpa"


@dataclass
class SharedPrefix:
    """The keys (or values) of beams whose first positions are their sample's: ``prefix``
    (B, H, P, D), once per sample, then ``suffix`` (B*K, H, S, D), per beam (the beams of
    sample b are rows b*K .. b*K+K-1)."""

    prefix: torch.Tensor
    suffix: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        """The per-beam tensor's shape (B*K, H, P+S, D)."""
        rows, heads, length, dim = self.suffix.shape
        return torch.Size((rows, heads, self.prefix.shape[2] + length, dim))

    def full(self) -> torch.Tensor:
        """The per-beam tensor (B*K, H, P+S, D), as a copy (for checks; decoding never builds it)."""
        beams = self.suffix.shape[0] // self.prefix.shape[0]
        return torch.cat([self.prefix.repeat_interleave(beams, 0), self.suffix], dim=2)


class KVBuffer(DynamicLayer):
    """One decoder layer's KV cache, written in place into a buffer sized for the decode.

    transformers' ``DynamicLayer`` concatenates, so copies, the whole cache at every
    step, and beam search's reorder copies it once more. Here a step writes only its new
    positions. :meth:`batch_repeat_interleave` (the split into beams) copies nothing: the
    positions so far (the prompt) are the same in every beam of a sample, so they stay
    once per sample, and the positions after go into a per-beam buffer; ``keys`` /
    ``values`` are then :class:`SharedPrefix` pairs, read by :func:`shared_prefix_attention`.
    At paper size with 3 beams that reads the 587-token prompt's 22 MB once a step, not 3
    times. A reorder moves only the per-beam positions, so it must keep each row within
    its sample's beams (as beam search does). Before the split ``keys`` / ``values`` are
    views of the filled positions, as the attention expects.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = int(capacity)
        self.length = 0
        self.shared = 0  # positions [0, shared) are held once per sample (after the split)
        self._k: Optional[torch.Tensor] = None  # (rows, H, room, D): positions [0, length), or [0, shared) once split
        self._v: Optional[torch.Tensor] = None
        self._beam_k: Optional[torch.Tensor] = None  # once split: (rows*K, H, room, D), positions [shared, length)
        self._beam_v: Optional[torch.Tensor] = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        if self._k is None:
            self.device, self.is_initialized = key_states.device, True
            self._k = self._empty(key_states, max(end, self.capacity))
            self._v = self._empty(value_states, max(end, self.capacity))
        if self._beam_k is None:
            self._k, self._v = self._room(self._k, self.length, end), self._room(self._v, self.length, end)
            self._k[:, :, self.length : end] = key_states
            self._v[:, :, self.length : end] = value_states
        else:
            start, stop = self.length - self.shared, end - self.shared
            self._beam_k, self._beam_v = self._room(self._beam_k, start, stop), self._room(self._beam_v, start, stop)
            self._beam_k[:, :, start:stop] = key_states
            self._beam_v[:, :, start:stop] = value_states
        self.length = end
        self._expose()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self._k is None:
            return
        if self._beam_k is not None:
            raise ValueError("KVBuffer: the cache is already split into beams")
        rows, heads, room, dim = self._k.shape
        self.shared = self.length
        # The prompt's keys, transposed once into (rows, H, D, P) storage (still seen as
        # (rows, H, P, D)): each step's product of the beams' queries with them then reads
        # them in order, not strided (a 587-token prompt: about half of that product's time).
        self._k = self._k[:, :, : self.length].transpose(-1, -2).contiguous().transpose(-1, -2)
        self._beam_k = self._k.new_empty((rows * repeats, heads, max(room - self.length, 1), dim))
        self._beam_v = self._v.new_empty((rows * repeats, heads, max(room - self.length, 1), dim))
        self._expose()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self._k is None or self.length == self.shared:
            return
        beam_idx = beam_idx.to(self._k.device)
        if self._beam_k is None:  # not split: every position is the row's own
            self._k[:, :, : self.length] = self._k[beam_idx, :, : self.length]
            self._v[:, :, : self.length] = self._v[beam_idx, :, : self.length]
        else:
            part = slice(0, self.length - self.shared)
            self._beam_k[:, :, part] = self._beam_k[beam_idx, :, part]
            self._beam_v[:, :, part] = self._beam_v[beam_idx, :, part]

    def crop(self, tokens: int) -> None:
        """Drop positions: ``tokens`` < 0 removes that many from the end, ``tokens`` >= 0
        keeps the first ``tokens`` (transformers' older convention). The buffer keeps its
        room; the next update writes where the kept positions end. (``DynamicLayer.crop``
        would slice the exposed views only, so the next update would write past the crop.)"""
        keep = max(self.length + tokens if tokens < 0 else min(tokens, self.length), 0)
        if self._beam_k is not None and keep < self.shared:
            raise ValueError(f"KVBuffer: cannot crop to {keep} positions, into the {self.shared} shared by the beams")
        self.length = keep
        if self._k is not None:
            self._expose()

    def _expose(self) -> None:
        if self._beam_k is None:
            self.keys = self._k[:, :, : self.length]
            self.values = self._v[:, :, : self.length]
        else:
            tail = self.length - self.shared
            self.keys = SharedPrefix(self._k[:, :, : self.shared], self._beam_k[:, :, :tail])
            self.values = SharedPrefix(self._v[:, :, : self.shared], self._beam_v[:, :, :tail])

    @staticmethod
    def _empty(like: torch.Tensor, length: int) -> torch.Tensor:
        return like.new_empty((like.shape[0], like.shape[1], length, like.shape[3]))

    @classmethod
    def _room(cls, buffer: torch.Tensor, used: int, end: int) -> torch.Tensor:
        """``buffer`` with room for positions up to ``end`` (its first ``used`` kept): draft
        decoding can outgrow the estimate, then the room doubles."""
        if end <= buffer.shape[2]:
            return buffer
        grown = cls._empty(buffer, max(end, 2 * buffer.shape[2]))
        grown[:, :, :used] = buffer[:, :, :used]
        return grown


def shared_prefix_attention(module: torch.nn.Module, query: torch.Tensor, key, value, attention_mask, scaling=None,
                            dropout: float = 0.0, **kwargs):
    """The LM's attention (registered as :data:`ATTENTION`): transformers' sdpa, except
    where the cache gives :class:`SharedPrefix` keys and values. There the K beams'
    queries of a sample are read against its prompt's keys in one product (the prompt
    read once, not K times), and each beam's against its own positions; one softmax
    over both. ``attention_mask``: sdpa's (bool, True where attended; or None)."""
    if not isinstance(key, SharedPrefix):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    rows, heads, q_len, dim = query.shape
    samples, prompt = key.prefix.shape[0], key.prefix.shape[2]
    beams = rows // samples
    scale = dim**-0.5 if scaling is None else scaling
    if scale != 1.0:  # OPT scales its queries itself (scaling 1)
        query = query * scale
    # (B*K, H, Q, D) -> (B, H, K*Q, D): a sample's beams as more queries of one sequence.
    grouped = query.view(samples, beams, heads, q_len, dim).transpose(1, 2).reshape(samples, heads, beams * q_len, dim)
    on_prompt = (grouped @ key.prefix.transpose(-1, -2)).view(samples, heads, beams, q_len, prompt)
    on_prompt = on_prompt.transpose(1, 2).reshape(rows, heads, q_len, prompt)
    scores = torch.cat([on_prompt, query @ key.suffix.transpose(-1, -2)], dim=-1)
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask, float("-inf")) if attention_mask.dtype == torch.bool \
            else scores + attention_mask
    probs = scores.softmax(-1, dtype=torch.float32).to(query.dtype)
    from_prompt = probs[..., :prompt].view(samples, beams, heads, q_len, prompt).transpose(1, 2)
    from_prompt = from_prompt.reshape(samples, heads, beams * q_len, prompt) @ value.prefix
    from_prompt = from_prompt.view(samples, heads, beams, q_len, dim).transpose(1, 2).reshape(rows, heads, q_len, dim)
    out = from_prompt + probs[..., prompt:] @ value.suffix
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(ATTENTION, shared_prefix_attention)
AttentionMaskInterface.register(ATTENTION, sdpa_mask)
