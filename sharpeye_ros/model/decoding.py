"""Decoding: greedy, beam search and draft-verified greedy, over an in-place KV cache.

Our own small loop rather than transformers' ``generate`` (the same tokens, with the same
beam settings; tested): it times the prefill and the decode apart, applies optional early
stop rules (end of the first sentence, a newline), captures, cheaply, each generated
token's attention over the visual tokens (:class:`~sharpeye_ros.model.attention.AttentionProbe`),
and verifies runs of a draft (the initial caption, when refining) in one pass.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from transformers.cache_utils import Cache

from sharpeye_ros.model.attention import AttentionProbe
from sharpeye_ros.model.config import GenerationConfig
from sharpeye_ros.model.kv_cache import KVBuffer
from sharpeye_ros.model.language import LanguageModel, Prompt
from sharpeye_ros.model.timing import DECODE, PREFILL, Timer


@dataclass
class Generated:
    """One decoded sequence: token ids (stop token included), its score and, when
    captured, its tokens' attention over the visual tokens (T, M)."""

    ids: list[int]
    score: float
    attention: Optional[torch.Tensor] = None


@torch.no_grad()
def generate(
    lm: LanguageModel,
    prompt: Prompt,
    config: GenerationConfig,
    *,
    attention_layers: Optional[Sequence[int]] = None,
    timer: Optional[Timer] = None,
    stages: tuple[str, str] = (PREFILL, DECODE),
    drafts: Optional[Sequence[Sequence[int]]] = None,
    keep_prompt: Optional[list] = None,
) -> list[Generated]:
    """Greedy (``config.num_beams`` 1) or beam search from a prompt, one result per sample.

    ``config``: the search (``num_beams``, ``max_new_tokens``, ``stop``, ``length_penalty``,
    ``early_stopping``). ``attention_layers``: capture each generated token's attention
    over the visual tokens from these decoder layers. ``timer``: a :class:`Timer` that gets
    the prefill and the decode as ``stages``. ``drafts`` (greedy only, no attention
    capture): per sample, token ids that probably recur in the output (the initial
    caption, when refining); runs of them are checked in one forward pass each, so
    decoding takes fewer steps for the same greedy result. ``keep_prompt``: a list that
    receives the prompt's per-layer (keys, values) after the prefill, for
    :meth:`~sharpeye_ros.model.language.LanguageModel.continuation_attention` (views, not
    copies: decoding never writes the prompt's positions again).
    """
    num_beams = config.num_beams
    if drafts is not None and (num_beams != 1 or attention_layers):
        raise ValueError("generate: drafts need greedy decoding (num_beams=1) without attention capture")
    room = int(lm.model.config.max_position_embeddings) - prompt.embeds.shape[1]
    if room < 1:
        raise ValueError(
            f"generate: the prompt has {prompt.embeds.shape[1]} tokens, the LM's "
            f"max_position_embeddings is {lm.model.config.max_position_embeddings}"
        )
    max_new_tokens = min(config.max_new_tokens, room)  # a caption cannot outgrow the position table
    stop_ids = lm.stop_ids(config.stop)
    probe = AttentionProbe(lm.model, attention_layers) if attention_layers else None
    capacity = prompt.embeds.shape[1] + max_new_tokens
    cache = Cache(layers=[KVBuffer(capacity) for _ in range(lm.num_layers)])
    prefill, decode = stages
    with probe if probe is not None else nullcontext():
        with timer.stage(prefill) if timer else nullcontext():
            hidden = lm(prompt.embeds, prompt.attention_mask, prompt.position_ids, cache)
            logp = F.log_softmax(lm.logits(hidden[:, -1]), dim=-1)
            if keep_prompt is not None:
                keep_prompt.extend((layer.keys, layer.values) for layer in cache.layers)
            att = None
            if probe is not None:
                probe.set_prompt(prompt.attention_mask, prompt.visual_index)
                att = probe.maps(slice(-1, None))[:, 0]
        with timer.stage(decode) if timer else nullcontext():
            state = _DecodeState(lm, cache, prompt.attention_mask, prompt.position_ids[:, -1:], probe)
            if drafts is not None:
                return _greedy_draft(state, logp, max_new_tokens, stop_ids, drafts)
            if num_beams == 1:
                return _greedy(state, logp, att, max_new_tokens, stop_ids)
            return _beam_search(state, logp, att, max_new_tokens, num_beams, stop_ids,
                                config.length_penalty, config.early_stopping)


def _greedy(state: "_DecodeState", logp, att, max_new_tokens, stop_ids) -> list[Generated]:
    batch = logp.shape[0]
    results = [Generated([], 0.0, [] if att is not None else None) for _ in range(batch)]
    done = [False] * batch
    for step in range(max_new_tokens):
        best, nxt = logp.max(-1)
        for b, (tok, score) in enumerate(zip(nxt.tolist(), best.tolist())):
            if done[b]:
                continue
            results[b].ids.append(tok)
            results[b].score += score
            if att is not None:
                results[b].attention.append(att[b])
            done[b] = tok in stop_ids
        if all(done) or step == max_new_tokens - 1:
            break
        logp, att = state.step(nxt, None)
    for r in results:
        if r.attention is not None:
            r.attention = torch.stack(r.attention)
    return results


def _greedy_draft(state: "_DecodeState", logp, max_new_tokens, stop_ids, drafts,
                  width: int = 8) -> list[Generated]:
    # Each step feeds every row its next token plus up to ``width`` draft tokens that
    # follow the latest n-gram of its output in its draft. The LM's own argmax at each
    # slot accepts the longest agreeing run; rejected and padding slots are masked out
    # of the cache (so no cache surgery is needed) and positions count accepted tokens.
    lm, batch = state.lm, logp.shape[0]
    device = logp.device
    max_pos = int(lm.model.config.max_position_embeddings) - 1
    results = [Generated([], 0.0) for _ in range(batch)]
    done = [False] * batch
    nxt = logp.argmax(-1).tolist()
    last_pos = state.last_pos.view(-1).tolist()
    while True:
        feeds: list[list[int]] = []
        for b in range(batch):
            ids = results[b].ids
            if not done[b]:
                ids.append(nxt[b])
                done[b] = nxt[b] in stop_ids or len(ids) >= max_new_tokens
            room = min(width, max_new_tokens - len(ids))
            feeds.append([] if done[b] else [nxt[b]] + _draft_lookup(ids, drafts[b], room))
        if all(done):
            break
        span = max(len(f) for f in feeds)
        tokens = torch.full((batch, span), lm.pad_id, dtype=torch.long)
        valid = torch.zeros((batch, span), dtype=state.mask.dtype)
        for b, f in enumerate(feeds):
            tokens[b, : len(f)] = torch.tensor(f, dtype=torch.long)
            valid[b, : len(f)] = 1
        positions = (torch.tensor(last_pos).view(-1, 1) + 1 + torch.arange(span)).clamp(max=max_pos)
        state.mask = torch.cat([state.mask, valid.to(device)], dim=1)
        hidden = lm(lm.embed(tokens.to(device)), state.mask, positions.to(device), state.cache)
        pred = lm.logits(hidden).argmax(-1).tolist()
        for b, f in enumerate(feeds):
            if not f:
                continue
            ids, accepted = results[b].ids, 0
            while accepted < len(f) - 1 and f[1 + accepted] == pred[b][accepted]:
                ids.append(f[1 + accepted])
                accepted += 1
                if ids[-1] in stop_ids or len(ids) >= max_new_tokens:
                    done[b] = True
                    break
            nxt[b] = pred[b][accepted]
            state.mask[b, state.mask.shape[1] - span + accepted + 1 :] = 0
            last_pos[b] += accepted + 1
    return results


def _beam_search(
    state: "_DecodeState", logp, att, max_new_tokens, num_beams, stop_ids, length_penalty, early_stopping
):
    # Beams of sample b are rows b*K .. b*K+K-1. A hypothesis ends when it picks a
    # stop token among its sample's K best candidates; the sample is done once K
    # hypotheses ended (early stopping) or no live beam can beat the worst of them.
    lm, batch, vocab, k = state.lm, logp.shape[0], logp.shape[1], num_beams
    device = logp.device
    state.expand(k)
    logp = logp.repeat_interleave(k, 0)
    att = att.repeat_interleave(k, 0) if att is not None else None
    beam_scores = torch.full((batch, k), -math.inf, device=device)
    beam_scores[:, 0] = 0.0
    seqs: list[list[int]] = [[] for _ in range(batch * k)]
    hist: list[list[torch.Tensor]] = [[] for _ in range(batch * k)]
    finished: list[list[tuple[float, list[int], list[torch.Tensor], float]]] = [[] for _ in range(batch)]
    done = [False] * batch

    def add(b: int, ids: list[int], maps: list[torch.Tensor], score: float) -> None:
        ranked = score / (max(len(ids), 1) ** length_penalty)
        hyps = finished[b]
        if len(hyps) < k or ranked > hyps[-1][0]:
            hyps.append((ranked, ids, maps, score))
            hyps.sort(key=lambda h: -h[0])
            del hyps[k:]

    stop_mask = torch.zeros(vocab, dtype=torch.bool, device=device)
    stop_mask[[i for i in stop_ids if i < vocab]] = True
    stop_mask = stop_mask.repeat(k)
    for step in range(max_new_tokens):
        scores = (beam_scores.view(-1, 1) + logp).view(batch, k * vocab)
        # Stop tokens among a sample's K best candidates end hypotheses; the K best
        # other candidates carry on as the live beams.
        end_scores, end_index = scores.topk(k, dim=1)
        live_scores, live_index = scores.masked_fill(stop_mask, -math.inf).topk(k, dim=1)
        end_scores, end_index = end_scores.tolist(), end_index.tolist()
        live_scores, live_index = live_scores.tolist(), live_index.tolist()
        rows, tokens, new_scores = [], [], []
        for b in range(batch):
            if done[b]:
                rows += [b * k] * k
                tokens += [lm.pad_id] * k
                new_scores += [0.0] * k
                continue
            for score, index in zip(end_scores[b], end_index[b]):
                parent, tok = b * k + index // vocab, index % vocab
                if tok in stop_ids:
                    add(
                        b,
                        seqs[parent] + [tok],
                        hist[parent] + ([att[parent]] if att is not None else []),
                        score,
                    )
            for score, index in zip(live_scores[b], live_index[b]):
                rows.append(b * k + index // vocab)
                tokens.append(index % vocab)
                new_scores.append(score)
            if len(finished[b]) >= k:
                if early_stopping:
                    done[b] = True
                else:
                    best_live = max(new_scores[-k:]) / ((len(seqs[b * k]) + 1) ** length_penalty)
                    done[b] = finished[b][-1][0] >= best_live
        seqs = [seqs[r] + [t] for r, t in zip(rows, tokens)]
        if att is not None:
            hist = [hist[r] + [att[r]] for r in rows]
        beam_scores = torch.tensor(new_scores, device=device).view(batch, k)
        if all(done) or step == max_new_tokens - 1:
            break
        # Reordering copies the whole KV cache: skip it when every beam kept its row.
        reorder = None if rows == list(range(len(rows))) else torch.tensor(rows, device=device)
        logp, att = state.step(torch.tensor(tokens, device=device), reorder)
    results = []
    for b in range(batch):
        if not done[b]:
            for j in range(k):
                add(b, seqs[b * k + j], hist[b * k + j], float(beam_scores[b, j]))
        _, ids, maps, score = finished[b][0]
        results.append(Generated(ids, score, torch.stack(maps) if att is not None and maps else None))
    return results


class _DecodeState:
    """The KV cache, attention mask and positions of a decode in progress."""

    def __init__(self, lm: LanguageModel, cache: Cache, mask: torch.Tensor, last_pos: torch.Tensor,
                 probe: Optional[AttentionProbe]):
        self.lm, self.cache, self.mask, self.last_pos, self.probe = lm, cache, mask, last_pos, probe
        self.per_sample = 1

    def expand(self, k: int) -> None:
        self.cache.batch_repeat_interleave(k)
        self.mask = self.mask.repeat_interleave(k, 0)
        self.last_pos = self.last_pos.repeat_interleave(k, 0)
        self.per_sample = k

    def step(self, tokens: torch.Tensor, rows: Optional[torch.Tensor]):
        """Feed one token per row (after reordering rows to ``rows`` for beam search)."""
        if rows is not None:
            self.cache.reorder_cache(rows)
            self.mask = self.mask[rows]
            self.last_pos = self.last_pos[rows]
        self.mask = torch.cat([self.mask, self.mask.new_ones((self.mask.shape[0], 1))], dim=1)
        self.last_pos = self.last_pos + 1
        embeds = self.lm.embed(tokens.view(-1, 1))
        hidden = self.lm(embeds, self.mask, self.last_pos, self.cache)
        logp = F.log_softmax(self.lm.logits(hidden[:, -1]), dim=-1)
        att = None
        if self.probe is not None:
            att = self.probe.maps(slice(-1, None), self.per_sample)[:, 0]
        return logp, att



def _draft_lookup(ids: Sequence[int], draft: Sequence[int], count: int) -> list[int]:
    """Up to ``count`` draft tokens that follow the longest (<= 3) tail n-gram of ``ids``
    found in ``draft`` (its first occurrence)."""
    if count <= 0 or not draft:
        return []
    for n in (3, 2, 1):
        if len(ids) < n:
            continue
        tail = list(ids[-n:])
        for j in range(len(draft) - n):
            if list(draft[j : j + n]) == tail:
                return list(draft[j + n : j + n + count])
    return []
