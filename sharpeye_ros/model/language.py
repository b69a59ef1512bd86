"""The OPT language model: prompts with visual embeddings spliced in, decoding, loss.

Decoding is our own small loop (greedy and beam search over a KV cache) rather than
``generate`` (the same tokens, with the same beam settings): it lets prefill and decode be
timed apart, applies optional early stop rules (end of the first sentence, a newline),
and captures, cheaply, each generated token's attention over the visual tokens (see
:class:`AttentionProbe`).
"""

from __future__ import annotations

import inspect
import math
import re
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, OPTConfig, OPTForCausalLM
from transformers.cache_utils import Cache, DynamicLayer

from sharpeye_ros.model.config import DETAILED_SENTENCES, IMAGE_TOKEN, LMConfig
from sharpeye_ros.model.loading import load_pretrained, load_tokenizer
from sharpeye_ros.model.tokenizer import build_word_tokenizer

# transformers 5 renamed the forward argument ``past_key_values`` to ``cache``.
_CACHE_ARG = "cache" if "cache" in inspect.signature(OPTForCausalLM.forward).parameters else "past_key_values"
_SENTENCE_END = re.compile(r"[.!?]")
# The answer starts after the prompt's last role tag; the authors' evaluation keeps the
# text after its last occurrence, should the model write the tag itself.
ANSWER_PREFIX = "ASSISTANT: "


@dataclass
class Prompt:
    """A batch of LM inputs: left-padded prompts, optionally followed by right-padded targets.

    ``visual_index`` (B, M): where each sample's visual tokens sit. ``prompt_len``: the
    padded prompt length (targets start there). ``labels`` (B, Lt): target ids, -100 on padding.
    """

    embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    visual_index: torch.Tensor
    prompt_len: int
    labels: Optional[torch.Tensor] = None


@dataclass
class Generated:
    """One decoded sequence: token ids (stop token included), its score and, when
    captured, its tokens' attention over the visual tokens (T, M)."""

    ids: list[int]
    score: float
    attention: Optional[torch.Tensor] = None


class LanguageModel(nn.Module):
    """Wraps ``transformers.OPTForCausalLM`` (``self.model``) and its tokenizer."""

    def __init__(self, model: OPTForCausalLM, tokenizer) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        if len(tokenizer) > model.config.vocab_size:
            raise ValueError(
                f"lm: the tokenizer has {len(tokenizer)} tokens but the LM's vocab_size "
                f"is {model.config.vocab_size}"
            )
        self.bos_id = _first_id(tokenizer.bos_token_id, model.config.bos_token_id, "bos")
        self.eos_id = _first_id(tokenizer.eos_token_id, model.config.eos_token_id, "eos")
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_id
        self._stop_cache: dict[tuple[str, ...], frozenset[int]] = {}

    @classmethod
    def from_config(cls, cfg: LMConfig, tokenizer=None) -> "LanguageModel":
        """Random weights from ``cfg.config`` or pretrained from ``cfg.name_or_path``.

        ``tokenizer``: an already loaded tokenizer (a checkpoint's); else one is built
        from ``cfg.vocab_words`` or loaded from ``cfg.tokenizer`` / ``cfg.name_or_path``.
        """
        if tokenizer is None:
            if cfg.vocab_words:
                tokenizer = build_word_tokenizer(cfg.vocab_words)
            else:
                source = cfg.tokenizer or cfg.name_or_path
                if source is None:
                    raise ValueError("config.lm: an inline LM config needs lm.tokenizer or lm.vocab_words")
                tokenizer = load_tokenizer(source)
        if cfg.config is not None:
            data = dict(cfg.config)
            # Fill what the tokenizer decides when the inline config leaves it out.
            data.setdefault("vocab_size", len(tokenizer))
            for key, value in (
                ("bos_token_id", tokenizer.bos_token_id),
                ("eos_token_id", tokenizer.eos_token_id),
                ("pad_token_id", tokenizer.pad_token_id),
            ):
                if value is not None:
                    data.setdefault(key, value)
            model = OPTForCausalLM(OPTConfig.from_dict(data))
        else:
            model = load_pretrained(OPTForCausalLM, cfg.name_or_path, "language model")
        return cls(model, tokenizer)

    # ---- sizes and embeddings ------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self.model.config.word_embed_proj_dim)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids -> input embeddings."""
        return self.model.get_input_embeddings()(ids)

    def text_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` with no special tokens added."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def caption_ids(self, caption: str) -> list[int]:
        """Ids of a caption as it follows the prompt (with the leading space BPE expects)."""
        return self.text_ids(" " + caption.strip())

    # ---- prompts -------------------------------------------------------------------
    def build_prompt(
        self,
        template: str,
        visual: torch.Tensor,
        captions: Optional[Sequence[str]] = None,
        targets: Optional[Sequence[Sequence[int]]] = None,
    ) -> Prompt:
        """BOS + ``template`` with ``visual`` (B, M, D) in place of ``<image>`` and
        ``{caption}`` filled from ``captions``; prompts are left-padded. ``targets``
        (token ids, EOS appended here) follow each prompt, right-padded, with labels."""
        batch = visual.shape[0]
        before, after = template.split(IMAGE_TOKEN)
        head = [self.bos_id] + self.text_ids(before)
        tails = []
        for b in range(batch):
            text = after if captions is None else after.replace("{caption}", captions[b].strip())
            tails.append(self.text_ids(text))
        num_visual = visual.shape[1]
        prompt_lens = [len(head) + num_visual + len(t) for t in tails]
        prompt_len = max(prompt_lens)
        target_ids = (
            [list(t) + [self.eos_id] for t in targets] if targets is not None else [[] for _ in range(batch)]
        )
        target_len = max(len(t) for t in target_ids)
        total = prompt_len + target_len

        ids = torch.full((batch, total), self.pad_id, dtype=torch.long)
        mask = torch.zeros((batch, total), dtype=torch.long)
        visual_index = torch.empty((batch, num_visual), dtype=torch.long)
        labels = torch.full((batch, target_len), -100, dtype=torch.long)
        for b in range(batch):
            start = prompt_len - prompt_lens[b]
            row = head + [self.pad_id] * num_visual + tails[b] + target_ids[b]
            ids[b, start : start + len(row)] = torch.tensor(row)
            mask[b, start : start + len(row)] = 1
            visual_index[b] = torch.arange(num_visual) + start + len(head)
            labels[b, : len(target_ids[b])] = torch.tensor(target_ids[b], dtype=torch.long)
        device = visual.device
        ids, mask, visual_index = ids.to(device), mask.to(device), visual_index.to(device)
        embeds = self.embed(ids).to(visual.dtype)
        embeds = embeds.scatter(1, visual_index.unsqueeze(-1).expand(-1, -1, visual.shape[-1]), visual)
        position_ids = (mask.cumsum(1) - 1).clamp(min=0)
        return Prompt(
            embeds,
            mask,
            position_ids,
            visual_index,
            prompt_len,
            labels.to(device) if targets is not None else None,
        )

    # ---- forward passes ------------------------------------------------------------
    def _decoder(self, embeds, mask, position_ids, cache=None) -> torch.Tensor:
        kwargs = {_CACHE_ARG: cache, "use_cache": cache is not None}
        out = self.model.model.decoder(
            inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, **kwargs
        )
        return out.last_hidden_state

    def loss(self, prompt: Prompt) -> torch.Tensor:
        """Mean cross-entropy of the targets of a prompt built with ``targets``."""
        if prompt.labels is None:
            raise ValueError("LanguageModel.loss: the prompt has no targets")
        hidden = self._decoder(prompt.embeds, prompt.attention_mask, prompt.position_ids)
        # Only the positions that predict targets go through the (large) LM head.
        start = prompt.prompt_len - 1
        logits = self.model.lm_head(hidden[:, start : start + prompt.labels.shape[1]]).float()
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), prompt.labels.reshape(-1), ignore_index=-100
        )

    @torch.no_grad()
    def target_attention(self, prompt: Prompt, layers: Sequence[int]) -> list[torch.Tensor]:
        """Teacher-forced: each target token's attention over the visual tokens,
        as a list of (T_b, M) tensors (T_b: the sample's target length incl. EOS)."""
        if prompt.labels is None:
            raise ValueError("LanguageModel.target_attention: the prompt has no targets")
        probe = AttentionProbe(self.model, layers)
        with probe:
            self._decoder(prompt.embeds, prompt.attention_mask, prompt.position_ids)
            probe.set_prompt(prompt.attention_mask[:, : prompt.prompt_len], prompt.visual_index)
            start = prompt.prompt_len - 1
            maps = probe.maps(slice(start, start + prompt.labels.shape[1]))
        lengths = (prompt.labels != -100).sum(1).tolist()
        return [maps[b, :n] for b, n in enumerate(lengths)]

    @torch.no_grad()
    def continuation_attention(
        self,
        prompt: Prompt,
        prompt_kv: Sequence[tuple[torch.Tensor, torch.Tensor]],
        targets: Sequence[Sequence[int]],
        layers: Sequence[int],
    ) -> list[torch.Tensor]:
        """:meth:`target_attention` of ``targets`` after a prompt that already ran, from its
        per-layer (keys, values) (``generate``'s ``keep_prompt``): only the targets go
        through the LM, e.g. to ground a refined caption in the glance's prompt."""
        cache = DynamicCache()
        for i, (k, v) in enumerate(prompt_kv):  # all but the last prompt token, which is fed again
            cache.update(k[:, :, :-1], v[:, :, :-1], i)
        ids = [list(t) + [self.eos_id] for t in targets]
        length = max(len(t) for t in ids)
        # Fed: the last prompt token, then each target but the last: the queries that predict the targets.
        fed = torch.full((len(ids), length - 1), self.pad_id, dtype=torch.long)
        fed_mask = torch.zeros((len(ids), length), dtype=torch.long)
        for b, row in enumerate(ids):
            fed[b, : len(row) - 1] = torch.tensor(row[:-1], dtype=torch.long)
            fed_mask[b, : len(row)] = 1
        device = prompt.embeds.device
        embeds = torch.cat([prompt.embeds[:, -1:], self.embed(fed.to(device)).to(prompt.embeds.dtype)], dim=1)
        mask = torch.cat([prompt.attention_mask[:, :-1], fed_mask.to(device)], dim=1)
        positions = prompt.position_ids[:, -1:] + torch.arange(length, device=device)
        probe = AttentionProbe(self.model, layers)
        with probe:
            self._decoder(embeds, mask, positions, cache)
        probe.use_prompt_keys(prompt.attention_mask, prompt.visual_index, [prompt_kv[j][0] for j in probe.layers])
        maps = probe.maps(slice(0, length))
        return [maps[b, : len(row)] for b, row in enumerate(ids)]

    # ---- decoding ------------------------------------------------------------------
    def stop_ids(self, rules: Sequence[str]) -> frozenset[int]:
        """Token ids that end a caption under ``rules`` ("eos", "sentence", "newline")."""
        key = tuple(sorted(rules))
        if key not in self._stop_cache:
            ids = {self.eos_id} if "eos" in rules else set()
            if "sentence" in rules or "newline" in rules:
                texts = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))])
                for i, text in enumerate(texts):
                    if ("sentence" in rules and _SENTENCE_END.search(text)) or (
                        "newline" in rules and "\n" in text
                    ):
                        ids.add(i)
            self._stop_cache[key] = frozenset(ids)
        return self._stop_cache[key]

    def decode(
        self, ids: Sequence[int], rules: Sequence[str] = (), task: str = "coco"
    ) -> tuple[str, list[tuple[int, int]]]:
        """Caption text of ``ids`` and each token's character span in it.

        Post-processing as the paper's evaluation: the text after the last
        ``ASSISTANT: `` is kept; ``task`` "detailed" keeps its first three sentences
        (split at "."; a "." ends the last one), "coco" all of it. The text is cut
        after the first sentence / before the first newline when those ``rules`` are on.
        Spans come from decoding growing prefixes, which works for both BPE and
        word-level tokenizers.
        """
        ids = list(ids)
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        ends = [len(self.tokenizer.decode(ids[: i + 1], skip_special_tokens=True)) for i in range(len(ids))]
        begin = text.rfind(ANSWER_PREFIX)
        begin = 0 if begin < 0 else begin + len(ANSWER_PREFIX)
        end = len(text)
        if "newline" in rules and "\n" in text[begin:]:
            end = text.index("\n", begin)
        if "sentence" in rules:
            match = _SENTENCE_END.search(text, begin, end)
            if match:
                end = match.end()
        period = False
        if task == "detailed":
            end, period = _sentences_end(text, begin, end, DETAILED_SENTENCES)
        start = begin + len(text[begin:end]) - len(text[begin:end].lstrip())
        caption = text[start:end].rstrip()
        caption += "." if period and caption else ""
        spans, prev = [], 0
        for e in ends:
            s = min(prev, e)
            spans.append((min(max(s - start, 0), len(caption)), min(max(e - start, 0), len(caption))))
            prev = e
        return caption, spans

    @torch.no_grad()
    def generate(
        self,
        prompt: Prompt,
        max_new_tokens: int,
        num_beams: int = 1,
        stop: Sequence[str] = ("eos",),
        length_penalty: float = 0.0,
        early_stopping: bool = True,
        attention_layers: Optional[Sequence[int]] = None,
        timer=None,
        stage_prefix: str = "",
        drafts: Optional[Sequence[Sequence[int]]] = None,
        keep_prompt: Optional[list] = None,
    ) -> list[Generated]:
        """Greedy (``num_beams`` 1) or beam search from a prompt, one result per sample.

        ``attention_layers``: capture each generated token's attention over the visual
        tokens from these decoder layers. ``timer``: a :class:`~sharpeye_ros.model.timing.Timer`
        that gets ``stage_prefix`` + "prefill" and + "decode". ``drafts`` (greedy only,
        no attention capture): per sample, token ids that probably recur in the output
        (the initial caption, when refining); runs of them are checked in one forward
        pass each, so decoding takes fewer steps for the same greedy result.
        ``keep_prompt``: a list that receives the prompt's per-layer (keys, values) after
        the prefill, for :meth:`continuation_attention` (views, not copies: decoding never
        writes the prompt's positions again).
        """
        if drafts is not None and (num_beams != 1 or attention_layers):
            raise ValueError("generate: drafts need greedy decoding (num_beams=1) without attention capture")
        room = int(self.model.config.max_position_embeddings) - prompt.embeds.shape[1]
        if room < 1:
            raise ValueError(
                f"generate: the prompt has {prompt.embeds.shape[1]} tokens, the LM's "
                f"max_position_embeddings is {self.model.config.max_position_embeddings}"
            )
        max_new_tokens = min(max_new_tokens, room)  # a caption cannot outgrow the position table
        stop_ids = self.stop_ids(stop)
        probe = AttentionProbe(self.model, attention_layers) if attention_layers else None
        capacity = prompt.embeds.shape[1] + max_new_tokens
        cache = Cache(layers=[KVBuffer(capacity) for _ in range(self.num_layers)])
        with probe if probe is not None else nullcontext():
            with timer.stage(stage_prefix + "prefill") if timer else nullcontext():
                hidden = self._decoder(prompt.embeds, prompt.attention_mask, prompt.position_ids, cache)
                logp = F.log_softmax(self.model.lm_head(hidden[:, -1]).float(), dim=-1)
                if keep_prompt is not None:
                    keep_prompt.extend((layer.keys, layer.values) for layer in cache.layers)
                att = None
                if probe is not None:
                    probe.set_prompt(prompt.attention_mask, prompt.visual_index)
                    att = probe.maps(slice(-1, None))[:, 0]
            with timer.stage(stage_prefix + "decode") if timer else nullcontext():
                state = _DecodeState(self, cache, prompt.attention_mask, prompt.position_ids[:, -1:], probe)
                if drafts is not None:
                    return self._greedy_draft(state, logp, max_new_tokens, stop_ids, drafts)
                if num_beams == 1:
                    return self._greedy(state, logp, att, max_new_tokens, stop_ids)
                return self._beam_search(
                    state, logp, att, max_new_tokens, num_beams, stop_ids, length_penalty, early_stopping
                )

    def _greedy(self, state, logp, att, max_new_tokens, stop_ids) -> list[Generated]:
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

    def _greedy_draft(self, state, logp, max_new_tokens, stop_ids, drafts, width: int = 8) -> list[Generated]:
        # Each step feeds every row its next token plus up to ``width`` draft tokens that
        # follow the latest n-gram of its output in its draft. The LM's own argmax at each
        # slot accepts the longest agreeing run; rejected and padding slots are masked out
        # of the cache (so no cache surgery is needed) and positions count accepted tokens.
        batch = logp.shape[0]
        device = logp.device
        max_pos = int(self.model.config.max_position_embeddings) - 1
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
            tokens = torch.full((batch, span), self.pad_id, dtype=torch.long)
            valid = torch.zeros((batch, span), dtype=state.mask.dtype)
            for b, f in enumerate(feeds):
                tokens[b, : len(f)] = torch.tensor(f, dtype=torch.long)
                valid[b, : len(f)] = 1
            positions = (torch.tensor(last_pos).view(-1, 1) + 1 + torch.arange(span)).clamp(max=max_pos)
            state.mask = torch.cat([state.mask, valid.to(device)], dim=1)
            hidden = self._decoder(
                self.embed(tokens.to(device)), state.mask, positions.to(device), state.cache
            )
            pred = self.model.lm_head(hidden).argmax(-1).tolist()
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
        self, state, logp, att, max_new_tokens, num_beams, stop_ids, length_penalty, early_stopping
    ):
        # Beams of sample b are rows b*K .. b*K+K-1. A hypothesis ends when it picks a
        # stop token among its sample's K best candidates; the sample is done once K
        # hypotheses ended (early stopping) or no live beam can beat the worst of them.
        batch, vocab, k = logp.shape[0], logp.shape[1], num_beams
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
                    tokens += [self.pad_id] * k
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


class _DecodeState:
    """The KV cache, attention mask and positions of a decode in progress."""

    def __init__(self, lm: LanguageModel, cache, mask, last_pos, probe):
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
        hidden = self.lm._decoder(embeds, self.mask, self.last_pos, self.cache)
        logp = F.log_softmax(self.lm.model.lm_head(hidden[:, -1]).float(), dim=-1)
        att = None
        if self.probe is not None:
            att = self.probe.maps(slice(-1, None), self.per_sample)[:, 0]
        return logp, att


class AttentionProbe:
    """Recomputes chosen layers' attention of new queries over the visual tokens.

    Forward hooks keep the outputs of ``q_proj`` and ``k_proj`` (OPT has absolute
    positions, so these are the exact queries and keys). The prompt's keys are kept
    once; each query's attention is softmaxed over the prompt's keys, its visual part
    kept and averaged over heads and layers. This works with any attention kernel
    (sdpa, flash) and costs one small matmul per step.
    """

    def __init__(self, model: OPTForCausalLM, layers: Sequence[int]):
        decoder_layers = model.model.decoder.layers
        n = len(decoder_layers)
        self.layers = []
        for i in layers:
            j = i + n if i < 0 else i
            if not 0 <= j < n:
                raise ValueError(f"regions.attention_layers: layer {i} is outside the LM's 0..{n - 1}")
            self.layers.append(j)
        self.attn = [decoder_layers[j].self_attn for j in self.layers]
        self.q: dict[int, torch.Tensor] = {}
        self.k: dict[int, torch.Tensor] = {}
        self.keys: list[torch.Tensor] = []
        self._handles: list = []

    def __enter__(self) -> "AttentionProbe":
        for idx, attn in enumerate(self.attn):
            self._handles.append(attn.q_proj.register_forward_hook(self._keep(self.q, idx)))
            self._handles.append(attn.k_proj.register_forward_hook(self._keep(self.k, idx)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    @staticmethod
    def _keep(store: dict, idx: int):
        def hook(module, inputs, output):
            store[idx] = output.detach()

        return hook

    def set_prompt(self, mask: torch.Tensor, visual_index: torch.Tensor) -> None:
        """Keep the keys of the prompt just run (its first ``mask.shape[1]`` positions)."""
        self.key_mask = mask.bool()[:, None, :]
        self.visual_index = visual_index
        self.keys = []
        for idx, attn in enumerate(self.attn):
            k = self.k[idx][:, : mask.shape[1]]
            self.keys.append(k.view(k.shape[0], k.shape[1], attn.num_heads, attn.head_dim).transpose(1, 2))

    def use_prompt_keys(self, mask: torch.Tensor, visual_index: torch.Tensor, keys: Sequence[torch.Tensor]) -> None:
        """Like :meth:`set_prompt`, with the probed layers' prompt keys (B, H, T, D) taken
        from a KV cache instead of this probe's hooks."""
        self.key_mask = mask.bool()[:, None, :]
        self.visual_index = visual_index
        self.keys = list(keys)

    def maps(self, positions: slice, per_sample: int = 1) -> torch.Tensor:
        """Attention over visual tokens of the last call's queries at ``positions``:
        (rows, Q, M), float32. Rows are ``per_sample`` consecutive beams per sample."""
        total = None
        for idx, attn in enumerate(self.attn):
            q = self.q[idx][:, positions].float()
            rows, nq = q.shape[0], q.shape[1]
            q = q.view(rows // per_sample, per_sample, nq, attn.num_heads, attn.head_dim)
            logits = torch.einsum("bkqhd,bhtd->bkhqt", q, self.keys[idx].float()) * attn.head_dim**-0.5
            logits = logits.masked_fill(~self.key_mask[:, None, :, None, :], float("-inf"))
            probs = logits.softmax(-1)
            index = self.visual_index[:, None, None, None, :].expand(-1, per_sample, attn.num_heads, nq, -1)
            visual = probs.gather(-1, index).mean(2)  # mean over heads: (B, K, Q, M)
            total = visual if total is None else total + visual
        total = total / len(self.attn)
        return total.reshape(-1, total.shape[2], total.shape[3])


def _sentences_end(text: str, start: int, end: int, count: int) -> tuple[int, bool]:
    """Where the first ``count`` sentences of ``text[start:end]`` end, split at "." as the
    paper's detailed-caption evaluation does (pieces without text are not sentences), and
    whether a "." must be added (fewer sentences, the last one open)."""
    seen, piece = 0, start
    for i in range(start, end):
        if text[i] != ".":
            continue
        if text[piece:i].strip():
            seen += 1
            if seen == count:
                return i + 1, False
        piece = i + 1
    return end, bool(text[piece:end].strip())


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


def _first_id(*args) -> int:
    *values, name = args
    for v in values:
        if isinstance(v, (list, tuple)):
            v = v[0] if v else None
        if v is not None:
            return int(v)
    raise ValueError(f"lm: neither the tokenizer nor the LM config defines a {name} token")
