"""The LM wrapper: our decode loop against transformers' generate, padding, stop rules,
the attention probe against eager attention, and the loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import OPTConfig, OPTForCausalLM

from sharpeye_ros.model import presets
from sharpeye_ros.model.config import GenerationConfig
from sharpeye_ros.model.decoding import generate
from sharpeye_ros.model.language import LanguageModel, Prompt


def make_lm(tokenizer, seed: int = 0, **kw) -> LanguageModel:
    torch.manual_seed(seed)
    kw.setdefault("max_position_embeddings", 256)
    cfg = OPTConfig(
        **{**_OPT, **kw},
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LanguageModel(OPTForCausalLM(cfg).eval(), tokenizer)


_OPT = {k: v for k, v in presets.micro().lm.config.items() if k != "max_position_embeddings"}


def plain_prompt(lm: LanguageModel, ids: torch.Tensor, num_visual: int = 4) -> Prompt:
    """A prompt of plain token ids, whose positions 1..num_visual play the visual tokens."""
    batch, length = ids.shape
    mask = torch.ones_like(ids)
    pos = torch.arange(length).expand(batch, -1)
    return Prompt(lm.embed(ids), mask, pos, torch.arange(1, 1 + num_visual).expand(batch, -1), length)


@pytest.mark.parametrize("num_beams, eos_boost", [(1, 2.0), (3, 1.0)])
def test_decode_matches_transformers_generate(word_tokenizer, num_beams, eos_boost):
    lm = make_lm(word_tokenizer, seed=3)
    # Make EOS likely enough that some (not all) samples end early: stopping logic matters.
    with torch.no_grad():
        lm.model.get_input_embeddings().weight[lm.eos_id] *= eos_boost
    torch.manual_seed(1)
    ids = torch.randint(4, len(word_tokenizer), (6, 7))
    ids[:, 0] = lm.bos_id
    search = GenerationConfig(max_new_tokens=10, num_beams=num_beams, stop=("eos",))
    ours = generate(lm, plain_prompt(lm, ids), search)
    ref = lm.model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        num_beams=num_beams,
        do_sample=False,
        max_new_tokens=10,
        length_penalty=0.0,
        early_stopping=True,
        eos_token_id=lm.eos_id,
        pad_token_id=lm.pad_id,
    )
    ended = 0
    for b, gen in enumerate(ours):
        expected = ref[b, ids.shape[1] :].tolist()
        if lm.eos_id in expected:
            expected = expected[: expected.index(lm.eos_id) + 1]
            ended += 1
        assert gen.ids == expected, f"sample {b}"
    assert 0 < ended < len(ours), "the test needs both stopped and length-capped samples"


@pytest.mark.parametrize("num_beams", [1, 3])
def test_left_padded_batch_equals_single(word_tokenizer, num_beams):
    lm = make_lm(word_tokenizer, seed=4)
    visual = torch.randn(3, 5, lm.hidden_size)
    captions = ["a red circle", "a blue star and a green square on the left", "the"]
    batch = lm.build_prompt("USER: <image>first glance: {caption} assistant:", visual, captions=captions)
    assert batch.attention_mask[2, 0] == 0 and batch.attention_mask[1].all()  # left padding
    search = GenerationConfig(max_new_tokens=8, num_beams=num_beams)
    together = generate(lm, batch, search, attention_layers=[-1])
    for b in range(3):
        alone = generate(
            lm,
            lm.build_prompt(
                "USER: <image>first glance: {caption} assistant:",
                visual[b : b + 1],
                captions=captions[b : b + 1],
            ),
            search,
            attention_layers=[-1],
        )[0]
        assert together[b].ids == alone.ids
        torch.testing.assert_close(together[b].attention, alone.attention, atol=1e-5, rtol=1e-4)


def test_visual_tokens_are_spliced_at_the_image_tag(word_tokenizer):
    lm = make_lm(word_tokenizer)
    visual = torch.randn(2, 3, lm.hidden_size)
    p = lm.build_prompt("USER: <image>what is in the photo? assistant:", visual, targets=[[5, 6], [7]])
    head = 1 + len(lm.text_ids("USER: "))
    assert p.visual_index[0].tolist() == [head, head + 1, head + 2]
    torch.testing.assert_close(p.embeds[1, p.visual_index[1]], visual[1])
    assert p.embeds[0, 0].tolist() == lm.embed(torch.tensor([lm.bos_id]))[0].tolist()
    # Targets follow the prompt, EOS appended, right-padded with -100 labels.
    assert p.labels.tolist() == [[5, 6, lm.eos_id], [7, lm.eos_id, -100]]
    assert p.attention_mask[1].tolist()[-1] == 0 and p.position_ids[0, -1] == p.attention_mask[0].sum() - 1


def test_loss_matches_manual_cross_entropy(word_tokenizer):
    lm = make_lm(word_tokenizer)
    visual = torch.randn(2, 3, lm.hidden_size)
    p = lm.build_prompt("USER: <image>what? assistant:", visual, targets=[[5, 6, 7], [8]])
    logits = lm.model(
        inputs_embeds=p.embeds, attention_mask=p.attention_mask, position_ids=p.position_ids
    ).logits
    full = torch.full(p.attention_mask.shape, -100)
    full[:, p.prompt_len :] = p.labels
    expected = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), full[:, 1:].reshape(-1), ignore_index=-100
    )
    torch.testing.assert_close(lm.loss(p), expected)


def test_attention_probe_matches_eager_attention(word_tokenizer):
    lm = make_lm(word_tokenizer, seed=5)
    visual = torch.randn(2, 6, lm.hidden_size)
    p = lm.build_prompt("USER: <image>what is in the photo? assistant:", visual, targets=[[5, 6, 7], [9, 10]])
    maps = lm.target_attention(p, layers=[0, -1])
    lm.model.set_attn_implementation("eager")
    try:
        out = lm.model(
            inputs_embeds=p.embeds,
            attention_mask=p.attention_mask,
            position_ids=p.position_ids,
            output_attentions=True,
        )
    finally:
        lm.model.set_attn_implementation("sdpa")
    for b, lengths in enumerate((4, 3)):  # targets + EOS
        assert maps[b].shape == (lengths, 6)
        expected = 0
        for layer in (0, 1):
            att = out.attentions[layer][b]  # (H, T, T)
            q = att[:, p.prompt_len - 1 : p.prompt_len - 1 + lengths, : p.prompt_len]  # over prompt keys
            q = q / q.sum(-1, keepdim=True)
            expected = expected + q[:, :, p.visual_index[b]].mean(0) / 2
        torch.testing.assert_close(maps[b], expected, atol=1e-5, rtol=1e-4)


def test_generation_attention_matches_teacher_forcing(word_tokenizer):
    lm = make_lm(word_tokenizer, seed=6)
    visual = torch.randn(1, 4, lm.hidden_size)
    prompt = lm.build_prompt("USER: <image>what? assistant:", visual)
    gen = generate(lm, prompt, GenerationConfig(max_new_tokens=6, num_beams=3), attention_layers=[-1])[0]
    ids = gen.ids[:-1] if gen.ids[-1] == lm.eos_id else gen.ids
    tf = lm.target_attention(lm.build_prompt("USER: <image>what? assistant:", visual, targets=[ids]), [-1])[0]
    torch.testing.assert_close(gen.attention, tf[: len(gen.ids)], atol=1e-5, rtol=1e-4)


def test_beam_attention_of_a_padded_batch_matches_teacher_forcing(word_tokenizer):
    # Two samples of different prompt lengths (so left padding), 3 beams, two probed layers:
    # each sample's beams are read against its own prompt keys and padding.
    lm = make_lm(word_tokenizer, seed=8)
    visual = torch.randn(2, 4, lm.hidden_size)
    template, captions = "USER: <image>{caption} what? assistant:", ["a", "a red big photo"]
    prompt = lm.build_prompt(template, visual, captions)
    assert (prompt.attention_mask == 0).any()
    gens = generate(lm, prompt, GenerationConfig(max_new_tokens=5, num_beams=3), attention_layers=[0, -1])
    ids = [g.ids[:-1] if g.ids[-1] == lm.eos_id else g.ids for g in gens]
    tf = lm.target_attention(lm.build_prompt(template, visual, captions, targets=ids), [0, -1])
    for gen, forced in zip(gens, tf):
        torch.testing.assert_close(gen.attention, forced[: len(gen.ids)], atol=1e-5, rtol=1e-4)


def test_stop_rules_and_decode(bpe_tokenizer):
    lm = make_lm(bpe_tokenizer)
    sentence = lm.stop_ids(("sentence",))
    newline = lm.stop_ids(("newline",))
    dot = lm.text_ids(".")
    assert dot and dot[-1] in sentence and lm.eos_id not in sentence
    assert lm.text_ids("\n")[0] in newline and dot[-1] not in newline
    assert lm.eos_id in lm.stop_ids(("eos",))
    ids = lm.text_ids(" A red circle. A dog\nmore") + [lm.eos_id]
    text, spans = lm.decode(ids, ("sentence", "newline"))
    assert text == "A red circle."
    assert len(spans) == len(ids)
    covered = "".join(text[s:e] for s, e in spans)
    assert covered == text  # spans tile the caption, then run out (empty) past the cut
    assert lm.decode(lm.text_ids(" two green squares\nA cat."), ("newline",))[0] == "two green squares"


@pytest.mark.parametrize("text, coco, detailed", [
    (" A cat. A dog. A bird. A fish.", "A cat. A dog. A bird. A fish.", "A cat. A dog. A bird."),
    (" A cat. ASSISTANT: A red circle. A dog", "A red circle. A dog", "A red circle. A dog."),
    (" A cat.. A dog. A bird. A fish.", "A cat.. A dog. A bird. A fish.", "A cat.. A dog. A bird."),
    (" A cat", "A cat", "A cat."),
    ("", "", ""),
])
def test_decode_post_processes_as_the_papers_evaluation(bpe_tokenizer, text, coco, detailed):
    # The text after the last "ASSISTANT: "; detailed captions: the first 3 "."-sentences,
    # ended by a "." (empty pieces are no sentences).
    lm = make_lm(bpe_tokenizer)
    ids = lm.text_ids(text) + [lm.eos_id]
    for task, want in (("coco", coco), ("detailed", detailed)):
        caption, spans = lm.decode(ids, ("eos",), task)
        assert caption == want
        assert len(spans) == len(ids) and all(0 <= s <= e <= len(caption) for s, e in spans)
        covered = "".join(caption[s:e] for s, e in spans)
        assert covered in (caption, caption[:-1])  # the tokens tile it, but for an added "."
    # Each token's span still names its own text after the cut at the role tag.
    caption, spans = lm.decode(lm.text_ids(" A cat. ASSISTANT: A red circle"), ())
    words = [caption[s:e] for s, e in spans if e > s]
    assert "".join(words) == "A red circle" and caption == "A red circle"


def test_generation_stops_at_first_sentence(bpe_tokenizer):
    lm = make_lm(bpe_tokenizer, seed=2)
    stops = lm.stop_ids(("sentence",))
    with torch.no_grad():  # make "." likely (the LM head is tied to the embeddings)
        lm.model.get_input_embeddings().weight[lm.text_ids(".")[-1]] *= 3
    prompt = lm.build_prompt(
        "USER: <image>What is in the photo? ASSISTANT:", torch.randn(3, 3, lm.hidden_size)
    )
    for beams in (1, 2):
        gens = generate(lm, prompt, GenerationConfig(max_new_tokens=20, num_beams=beams, stop=("sentence",)))
        assert any(len(g.ids) < 20 for g in gens)
        for gen in gens:
            assert len(gen.ids) == 20 or gen.ids[-1] in stops
            assert not any(i in stops for i in gen.ids[:-1])


def test_prompt_longer_than_position_table_is_an_error(word_tokenizer):
    lm = make_lm(word_tokenizer, max_position_embeddings=16)
    prompt = lm.build_prompt("USER: <image>what?", torch.randn(1, 20, lm.hidden_size))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        generate(lm, prompt, GenerationConfig(max_new_tokens=5, num_beams=1))


def test_tokenizer_larger_than_vocab_is_an_error(word_tokenizer):
    with pytest.raises(ValueError, match="vocab_size"):
        LanguageModel(OPTForCausalLM(OPTConfig(**_OPT, vocab_size=5)), word_tokenizer)


def test_draft_decoding_gives_the_greedy_result(word_tokenizer):
    lm = make_lm(word_tokenizer, seed=7)
    visual = torch.randn(3, 5, lm.hidden_size)
    captions = ["a red circle", "a blue star and a green square", "left"]
    prompt = lm.build_prompt("USER: <image>first glance: {caption} assistant:", visual, captions=captions)
    greedy = GenerationConfig(max_new_tokens=12, num_beams=1)
    plain = [g.ids for g in generate(lm, prompt, greedy)]
    assert len({len(p) for p in plain}) >= 1
    drafts = [
        plain,  # the exact answer: all accepted
        [[5, 6, 7, 8]] * 3,  # unrelated: all rejected
        [p[:3] + [9, 9] + p[3:] for p in plain],  # an insertion to skip over
        [p[2:6] for p in plain],  # a middle piece
    ]
    calls = []
    hook = lm.model.model.decoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        for draft in drafts:
            calls.clear()
            got = [g.ids for g in generate(lm, prompt, greedy, drafts=draft)]
            assert got == plain
            if draft is plain:  # the whole answer verified in a pass or two (plus the prefill)
                assert len(calls) <= 1 + 2 + max(len(p) for p in plain) // 9
    finally:
        hook.remove()
    with pytest.raises(ValueError, match="greedy"):
        generate(lm, prompt, GenerationConfig(max_new_tokens=4, num_beams=2), drafts=plain)


def test_draft_lookup_follows_the_longest_tail_match():
    from sharpeye_ros.model.decoding import _draft_lookup

    draft = [1, 2, 3, 4, 2, 5, 6]
    assert _draft_lookup([9, 2], draft, 3) == [3, 4, 2]  # first occurrence of the 1-gram
    assert _draft_lookup([4, 2], draft, 3) == [5, 6]  # the 2-gram wins over the 1-gram
    assert _draft_lookup([7], draft, 3) == [] and _draft_lookup([1], draft, 0) == []


def test_kv_buffer_matches_a_concatenating_cache():
    """The in-place buffer gives the keys/values transformers' DynamicLayer gives, through
    prefill, a split into beams, reorders within each sample's beams, and outgrowing its room."""
    from transformers.cache_utils import DynamicLayer

    from sharpeye_ros.model.kv_cache import KVBuffer

    torch.manual_seed(0)
    ours, ref = KVBuffer(capacity=7), DynamicLayer()

    def update(length: int, rows: int) -> None:
        k, v = torch.randn(rows, 2, length, 4), torch.randn(rows, 2, length, 4)
        got, want = ours.update(k, v), ref.update(k, v)
        for g, w in zip(got, want):
            torch.testing.assert_close(_per_beam(g), w, rtol=0, atol=0)

    update(5, 2)  # a 2-sample prompt
    kept = (ours.keys, ours.values)
    kept_copy = (kept[0].clone(), kept[1].clone())
    ours.batch_repeat_interleave(3)
    ref.batch_repeat_interleave(3)
    for step, rows in enumerate([[2, 0, 0, 5, 3, 4], [0, 1, 2, 3, 4, 5], [1, 1, 0, 4, 4, 4], [2, 0, 1, 3, 5, 4]]):
        update(1 if step != 2 else 3, 6)  # the 3-token update passes the initial room
        beam_idx = torch.tensor(rows)
        ours.reorder_cache(beam_idx)
        ref.reorder_cache(beam_idx)
        torch.testing.assert_close(_per_beam(ours.keys), ref.keys, rtol=0, atol=0)
        torch.testing.assert_close(_per_beam(ours.values), ref.values, rtol=0, atol=0)
    assert ours.get_seq_length() == ref.get_seq_length() == 11
    # The prompt's kept views were never written over by decoding.
    torch.testing.assert_close(kept[0], kept_copy[0], rtol=0, atol=0)
    torch.testing.assert_close(kept[1], kept_copy[1], rtol=0, atol=0)


def test_kv_buffer_crop_rewinds_where_the_next_update_writes():
    """A crop (either convention) leaves the buffer as if the dropped positions never came,
    its length and the exposed views alike: a step over the same position again (what
    benchmark.libraries' decode piece does) sees the same keys as a fresh cache."""
    from transformers.cache_utils import DynamicLayer

    from sharpeye_ros.model.kv_cache import KVBuffer

    torch.manual_seed(0)
    prompt = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)
    step = torch.randn(3, 2, 1, 4), torch.randn(3, 2, 1, 4)
    ours = KVBuffer(capacity=8)
    ours.update(*prompt)
    for crop in (-1, 5):  # remove the last one; keep the first five
        ours.update(torch.randn(3, 2, 1, 4), torch.randn(3, 2, 1, 4))
        ours.crop(crop)
        assert ours.get_seq_length() == 5 and ours.get_mask_sizes(1)[0] == 6
        ref = DynamicLayer()
        ref.update(*prompt)
        got, want = ours.update(*step), ref.update(*step)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=0, atol=0)
        ours.crop(-1)


def _per_beam(kv) -> torch.Tensor:
    """A layer's keys or values as one tensor per row (a split cache's shared prompt repeated)."""
    from sharpeye_ros.model.kv_cache import SharedPrefix

    return kv.full() if isinstance(kv, SharedPrefix) else kv


def _held(kv) -> int:
    """Bytes of a layer's filled keys (or values) as the cache holds them."""
    from sharpeye_ros.model.kv_cache import SharedPrefix

    parts = (kv.prefix, kv.suffix) if isinstance(kv, SharedPrefix) else (kv,)
    return sum(p.numel() * p.element_size() for p in parts)


class _BytesWritten(torch.utils._python_dispatch.TorchDispatchMode):
    """Bytes each op writes: its outputs', views excluded (an in-place write into a slice
    counts that slice)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        alias = func._schema.returns[0].alias_info if func._schema.returns else None
        if alias is None or alias.is_write:
            outs = out if isinstance(out, (tuple, list)) else [out]
            self.total += sum(o.numel() * o.element_size() for o in outs if isinstance(o, torch.Tensor))
        return out


@pytest.mark.parametrize("num_beams", [1, 3])
def test_a_decode_step_writes_its_new_positions_not_the_whole_kv_cache(word_tokenizer, monkeypatch, num_beams):
    """Decoding is memory-bound: a step must not copy the KV cache (a concatenating cache
    does, and a beam reorder of the whole buffer would). Every step's writes, all ops but
    views, stay a small share of the cache, and the buffer is never reallocated."""
    import torch.utils._python_dispatch  # noqa: F401  (TorchDispatchMode)

    from sharpeye_ros.model import decoding

    # Wide enough that, as at paper size, the cache outweighs the per-step bookkeeping
    # (the attention mask, the new positions' reorder).
    lm = make_lm(word_tokenizer, seed=3, max_position_embeddings=512, hidden_size=256, word_embed_proj_dim=256,
                 ffn_dim=256)
    torch.manual_seed(1)
    ids = torch.randint(4, len(word_tokenizer), (1, 300))
    steps: list[tuple[int, int, int]] = []  # (bytes written, cache bytes, buffer address)
    step = decoding._DecodeState.step

    def counted(self, tokens, rows):
        mode = _BytesWritten()
        with mode:
            out = step(self, tokens, rows)
        layers = self.cache.layers
        cache_bytes = sum(2 * _held(layer.keys) for layer in layers)
        steps.append((mode.total, cache_bytes, layers[0]._k.data_ptr()))
        return out

    monkeypatch.setattr(decoding._DecodeState, "step", counted)
    generate(lm, plain_prompt(lm, ids), GenerationConfig(max_new_tokens=8, num_beams=num_beams, stop=()))
    assert len(steps) == 7
    for written, cache_bytes, _ in steps:
        # The rest is mostly the attention's scores: a few floats per position and head,
        # against the cache's 2 x 64 (the prompt's held once for all beams); a copy of the cache
        # (a concatenating cache, a reorder of the whole buffer) would write it all.
        assert written < 0.5 * cache_bytes, (written, cache_bytes)
    assert len({address for *_, address in steps}) == 1  # written in place: one buffer throughout


class _WeightReads(torch.utils._python_dispatch.TorchDispatchMode):
    """The ops, views excluded, that take a tensor on ``weight``'s storage: (op, that argument)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.storage = weight.untyped_storage().data_ptr()
        self.reads: list[tuple[str, torch.Tensor]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        alias = func._schema.returns[0].alias_info if func._schema.returns else None
        if alias is None or alias.is_write:  # not a view
            for a in args:
                if isinstance(a, torch.Tensor) and a.untyped_storage().data_ptr() == self.storage:
                    self.reads.append((str(func.overloadpacket.__name__), a))
        return func(*args, **(kwargs or {}))


def test_a_beam_step_reads_the_lm_head_weight_once_in_its_own_layout(word_tokenizer, monkeypatch):
    """The tied LM head is the largest read of a decode step (154 MB at paper size). As
    ``h @ W^T`` (``nn.Linear``) MKL's float32 kernel reads W once per row, so 3 beams cost
    3x one row; as ``W @ h^T`` it reads W once for all rows. Each beam step's one read of
    the weight is a matrix product with W, in its own (V, D) layout, on the left."""
    import torch.utils._python_dispatch  # noqa: F401  (TorchDispatchMode)

    from sharpeye_ros.model import decoding

    lm = make_lm(word_tokenizer, seed=3)
    weight = lm.model.lm_head.weight
    torch.manual_seed(1)
    ids = torch.randint(4, len(word_tokenizer), (2, 9))
    reads: list[list[tuple[str, torch.Tensor]]] = []
    step = decoding._DecodeState.step

    def watched(self, tokens, rows):
        # Only the head: the input embedding (the same weight, tied) is looked up outside.
        embeds = self.lm.embed(tokens.view(-1, 1))
        mode = _WeightReads(weight)
        with monkeypatch.context() as m:
            m.setattr(self.lm, "embed", lambda _ids: embeds)
            with mode:
                out = step(self, tokens, rows)
        reads.append(mode.reads)
        return out

    monkeypatch.setattr(decoding._DecodeState, "step", watched)
    generate(lm, plain_prompt(lm, ids), GenerationConfig(max_new_tokens=5, num_beams=3, stop=()))
    assert len(reads) == 4
    for step_reads in reads:
        assert len(step_reads) == 1, [op for op, _ in step_reads]
        op, arg = step_reads[0]
        assert op == "mm" and arg.shape == weight.shape and arg.stride() == weight.stride(), (op, arg.stride())


def test_beams_hold_the_prompt_cache_once(word_tokenizer, monkeypatch):
    """The prompt is the same for every beam of a sample: after the split into beams each
    layer keeps the prefill's own prompt values and its prompt keys transposed once (for
    the steps' products), once per sample (not copied per beam), and only the generated
    positions per beam; the tokens are transformers'."""
    from sharpeye_ros.model import decoding
    from sharpeye_ros.model.kv_cache import SharedPrefix

    lm = make_lm(word_tokenizer, seed=5)
    visual = torch.randn(2, 5, lm.hidden_size)
    prompt = lm.build_prompt("USER: <image>first glance: {caption} assistant:", visual,
                             captions=["a red circle", "a blue star and a green square"])
    assert prompt.attention_mask[0, 0] == 0  # left padding: the prompt's mask matters
    kept: list = []
    seen: list[list[tuple]] = []
    step = decoding._DecodeState.step

    def watched(self, tokens, rows):
        out = step(self, tokens, rows)
        seen.append([(layer.keys, layer.values) for layer in self.cache.layers])
        return out

    monkeypatch.setattr(decoding._DecodeState, "step", watched)
    search = GenerationConfig(max_new_tokens=6, num_beams=3, stop=())
    ours = generate(lm, prompt, search, keep_prompt=kept)
    assert len(seen) == 5
    for n, layers in enumerate(seen, start=1):
        for layer, ((keys, values), (prompt_k, prompt_v)) in enumerate(zip(layers, kept)):
            for kv, before in ((keys, prompt_k), (values, prompt_v)):
                assert isinstance(kv, SharedPrefix) and torch.equal(kv.prefix, before)
                assert kv.suffix.shape[0] == 6 and kv.suffix.shape[2] == n
            assert values.prefix.data_ptr() == prompt_v.data_ptr()  # the prefill's own
            # the keys: one (samples, H, D, P) copy, the same at every step
            assert keys.prefix.transpose(-1, -2).is_contiguous()
            assert keys.prefix.untyped_storage().nbytes() == prompt_k.numel() * prompt_k.element_size()
            assert keys.prefix.data_ptr() == seen[0][layer][0].prefix.data_ptr()
    ref = lm.model.generate(inputs_embeds=prompt.embeds, attention_mask=prompt.attention_mask, num_beams=3,
                            do_sample=False, max_new_tokens=6, min_new_tokens=6, length_penalty=0.0,
                            early_stopping=True, pad_token_id=lm.pad_id)
    assert [g.ids for g in ours] == ref[:, -6:].tolist()


@pytest.mark.parametrize("padded", [False, True])
def test_shared_prefix_attention_equals_sdpa_over_the_per_beam_cache(padded):
    """Reading a shared prompt once per sample gives sdpa's output over each beam's full
    keys/values (the prompt repeated per beam), padding mask included."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from sharpeye_ros.model.kv_cache import SharedPrefix, shared_prefix_attention

    torch.manual_seed(0)
    samples, beams, heads, prompt, tail, dim = 2, 3, 4, 7, 3, 8
    rows = samples * beams
    query = torch.randn(rows, heads, 1, dim)
    keys = SharedPrefix(torch.randn(samples, heads, prompt, dim), torch.randn(rows, heads, tail, dim))
    values = SharedPrefix(torch.randn(samples, heads, prompt, dim), torch.randn(rows, heads, tail, dim))
    mask = None
    if padded:
        mask = torch.ones(rows, 1, 1, prompt + tail, dtype=torch.bool)
        mask[:beams, :, :, :2] = False  # sample 0's prompt is left-padded by 2
    module = torch.nn.Module()
    module.is_causal = True
    got, _ = shared_prefix_attention(module, query, keys, values, mask, scaling=0.3)
    want, _ = sdpa_attention_forward(module, query, keys.full(), values.full(), mask, scaling=0.3)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
