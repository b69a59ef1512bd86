"""The OPT language model: prompts with visual embeddings spliced in, the loss, the
teacher-forced attention of given captions, and token ids <-> caption text (stop rules,
the paper's post-processing). Decoding is :mod:`sharpeye_ros.model.decoding`.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, OPTConfig, OPTForCausalLM

from sharpeye_ros.model.attention import AttentionProbe
from sharpeye_ros.model.config import DETAILED_SENTENCES, IMAGE_TOKEN, LMConfig
from sharpeye_ros.model.kv_cache import ATTENTION
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


class LanguageModel(nn.Module):
    """Wraps ``transformers.OPTForCausalLM`` (``self.model``) and its tokenizer."""

    def __init__(self, model: OPTForCausalLM, tokenizer) -> None:
        super().__init__()
        self.model = model
        # sdpa, and over a beam search's prompt held once (kv_cache.KVBuffer) the attention that reads it so.
        model.set_attn_implementation(ATTENTION)
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

    def embed_captions(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions' token embeddings, right-padded, (B, L, D) and their mask (B, L) bool,
        on the LM's device (L >= 1: an empty caption is all padding)."""
        ids = [self.caption_ids(c) for c in captions]
        length = max(1, max(len(i) for i in ids))
        padded = torch.full((len(ids), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(ids), length), dtype=torch.bool)
        for b, row in enumerate(ids):
            padded[b, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[b, : len(row)] = True
        device = self.model.get_input_embeddings().weight.device
        return self.embed(padded.to(device)), mask.to(device)

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
    def forward(self, embeds: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor,
                cache=None) -> torch.Tensor:
        """The decoder's last hidden states (B, T, D) of input embeddings, reading and
        extending ``cache`` (a transformers ``Cache``) when given."""
        kwargs = {_CACHE_ARG: cache, "use_cache": cache is not None}
        out = self.model.model.decoder(
            inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, **kwargs
        )
        return out.last_hidden_state

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head's logits (..., V) of hidden states (..., D), in float32.

        Computed as ``W @ h^T`` with the (V, D) weight as the left operand: for the few
        rows of a decode step (the beams) MKL's float32 ``h @ W^T`` reads the weight (154 MB
        at paper size) about once per row, ``W @ h^T`` about once for all rows (measured on
        a 2-core AMD EPYC, 1 thread: 3 rows 58 ms as ``h @ W^T``, 30 ms so; one row 18 ms).
        """
        head = self.model.lm_head
        flat = hidden.reshape(-1, hidden.shape[-1])
        if type(head) is not nn.Linear:  # a converted model's head (precision.ShortlistHead)
            return head(flat).view(*hidden.shape[:-1], -1)
        out = head_product(head.weight, head.bias, flat)
        return out.float().contiguous().view(*hidden.shape[:-1], out.shape[-1])

    def loss(self, prompt: Prompt) -> torch.Tensor:
        """Mean cross-entropy of the targets of a prompt built with ``targets``."""
        if prompt.labels is None:
            raise ValueError("LanguageModel.loss: the prompt has no targets")
        hidden = self(prompt.embeds, prompt.attention_mask, prompt.position_ids)
        # Only the positions that predict targets go through the (large) LM head.
        start = prompt.prompt_len - 1
        logits = self.logits(hidden[:, start : start + prompt.labels.shape[1]])
        return F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), prompt.labels.reshape(-1), ignore_index=-100
        )

    def forced_attention(
        self, prompt: Prompt, layers: Sequence[int], loss: bool = False, detach: bool = True
    ) -> tuple[Optional[torch.Tensor], torch.Tensor]:
        """One teacher-forced pass of a prompt built with ``targets``: (with ``loss``, the
        targets' mean cross-entropy, else None; each target slot's attention over the
        visual tokens in ``layers``, (B, T, M) with T the longest target incl. EOS).
        ``detach`` False keeps the attention's autograd graph (training's grounding losses)."""
        if prompt.labels is None:
            raise ValueError("LanguageModel.forced_attention: the prompt has no targets")
        probe = AttentionProbe(self.model, layers, detach=detach)
        with probe:
            if loss:
                value = self.loss(prompt)
            else:
                value = None
                self(prompt.embeds, prompt.attention_mask, prompt.position_ids)
            probe.set_prompt(prompt.attention_mask[:, : prompt.prompt_len], prompt.visual_index)
            start = prompt.prompt_len - 1
            maps = probe.maps(slice(start, start + prompt.labels.shape[1]))
        return value, maps

    @torch.no_grad()
    def target_attention(self, prompt: Prompt, layers: Sequence[int]) -> list[torch.Tensor]:
        """Teacher-forced: each target token's attention over the visual tokens,
        as a list of (T_b, M) tensors (T_b: the sample's target length incl. EOS)."""
        _, maps = self.forced_attention(prompt, layers)
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
        per-layer (keys, values) (``keep_prompt`` of :func:`~sharpeye_ros.model.decoding.generate`):
        only the targets go through the LM, e.g. to ground a refined caption in the glance's
        prompt."""
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
            self(embeds, mask, positions, cache)
        probe.use_prompt_keys(prompt.attention_mask, prompt.visual_index, [prompt_kv[j][0] for j in probe.layers])
        maps = probe.maps(slice(0, length))
        return [maps[b, : len(row)] for b, row in enumerate(ids)]

    # ---- token ids <-> text --------------------------------------------------------
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

def head_product(weight: torch.Tensor, bias: Optional[torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
    """``rows @ weight^T + bias`` (rows (N, D), weight (V, D)) computed as ``weight @ rows^T``,
    the weight as the left operand (why: :meth:`LanguageModel.logits`)."""
    out = (weight @ rows.T).T
    return out if bias is None else out + bias


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


def _first_id(*args) -> int:
    *values, name = args
    for v in values:
        if isinstance(v, (list, tuple)):
            v = v[0] if v else None
        if v is not None:
            return int(v)
    raise ValueError(f"lm: neither the tokenizer nor the LM config defines a {name} token")
