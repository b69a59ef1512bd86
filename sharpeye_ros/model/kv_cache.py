"""The decode's KV cache: one buffer per decoder layer, written in place."""

from __future__ import annotations

from typing import Optional

import torch
from transformers.cache_utils import DynamicLayer


class KVBuffer(DynamicLayer):
    """One decoder layer's KV cache, written in place into a buffer sized for the decode.

    transformers' ``DynamicLayer`` concatenates, so copies, the whole cache at every
    step, and beam search's reorder copies it once more. At paper size with 3 beams and
    a 587-token prompt that is about 0.5 GB moved per step, as much as reading the LM's
    weights. Here a step writes only its new positions, and a reorder moves only the
    positions written since :meth:`batch_repeat_interleave` split the rows into beams:
    the positions before are the same in every beam of a sample, so a reorder that keeps
    each row within its sample's beams (as beam search does) leaves them as they are.
    ``keys`` / ``values`` are views of the filled positions, as the attention expects.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = int(capacity)
        self.length = 0
        self.shared = 0  # positions [0, shared) are equal across the beams of a sample
        self._k: Optional[torch.Tensor] = None
        self._v: Optional[torch.Tensor] = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        if self._k is None:
            self.device, self.is_initialized = key_states.device, True
            self._k = self._empty(key_states, max(end, self.capacity))
            self._v = self._empty(value_states, max(end, self.capacity))
        elif end > self._k.shape[2]:  # draft decoding can outgrow the estimate: double
            size = max(end, 2 * self._k.shape[2])
            self._k = torch.cat([self._k[:, :, : self.length], self._empty(self._k, size - self.length)], 2)
            self._v = torch.cat([self._v[:, :, : self.length], self._empty(self._v, size - self.length)], 2)
        self._k[:, :, self.length : end] = key_states
        self._v[:, :, self.length : end] = value_states
        self.length = end
        self._expose()
        return self.keys, self.values

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self._k is not None:
            self._k, self._v = self._repeat(self._k, repeats), self._repeat(self._v, repeats)
            self.shared = self.length
            self._expose()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self._k is not None and self.length > self.shared:
            part = slice(self.shared, self.length)
            beam_idx = beam_idx.to(self._k.device)
            self._k[:, :, part] = self._k[beam_idx, :, part]
            self._v[:, :, part] = self._v[beam_idx, :, part]

    def crop(self, tokens: int) -> None:
        """Drop positions: ``tokens`` < 0 removes that many from the end, ``tokens`` >= 0
        keeps the first ``tokens`` (transformers' older convention). The buffer keeps its
        room; the next update writes where the kept positions end. (``DynamicLayer.crop``
        would slice the exposed views only, so the next update would write past the crop.)"""
        keep = self.length + tokens if tokens < 0 else min(tokens, self.length)
        self.length = max(keep, 0)
        self.shared = min(self.shared, self.length)
        if self._k is not None:
            self._expose()

    def _expose(self) -> None:
        self.keys = self._k[:, :, : self.length]
        self.values = self._v[:, :, : self.length]

    @staticmethod
    def _empty(like: torch.Tensor, length: int) -> torch.Tensor:
        return like.new_empty((like.shape[0], like.shape[1], length, like.shape[3]))

    def _repeat(self, buffer: torch.Tensor, repeats: int) -> torch.Tensor:
        # Copies only the filled positions (repeat_interleave would copy the spare room too).
        rows, heads, room, dim = buffer.shape
        out = buffer.new_empty((rows * repeats, heads, room, dim))
        out.view(rows, repeats, heads, room, dim)[:, :, :, : self.length] = buffer[:, None, :, : self.length]
        return out
