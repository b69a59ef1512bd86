"""The peer table's pieces, on tiny configurations: each peer decodes exactly the tokens
asked for in each precision, its int8 copy goes through our int8 path with its LM head
kept float, a missing class is a note, the entries take turns round-robin, and the base
configurations are the published base sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sharpeye_ros.benchmark import peers
from sharpeye_ros.benchmark.results import PeerTable
from sharpeye_ros.benchmark.worker import benchmark_images
from sharpeye_ros.model import SharpEyes, presets
from sharpeye_ros.model import precision as P

pytestmark = pytest.mark.skipif(not P.int8_available(), reason="this CPU/torch has no x86 int8 kernels")

TOKENS = 4


def tiny_configs() -> dict:
    """One layer and 32 wide per peer; Florence-2 keeps its 768 px input (its grid of
    image tokens is set by the input, not the config)."""
    from transformers import BlipConfig, Florence2Config, GitConfig

    layer = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2)
    vision = dict(layer, image_size=32, patch_size=16)
    ids = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return {
        "BLIP-base": BlipConfig(vision_config=vision,
                                text_config=dict(layer, vocab_size=99, encoder_hidden_size=32, sep_token_id=2, **ids)),
        "GIT-base": GitConfig(vision_config=vision, vocab_size=99, **layer, **ids),
        "Florence-2-base": Florence2Config(
            text_config=dict(model_type="bart", vocab_size=120, d_model=32, encoder_layers=1, decoder_layers=1,
                             encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=37,
                             decoder_ffn_dim=37, max_position_embeddings=1024),
            vision_config=dict(model_type="florence_vision", depths=[1, 1, 1, 1], embed_dim=[16, 16, 32, 32],
                               num_heads=[1, 1, 2, 2], num_groups=[1, 1, 2, 2], window_size=2, projection_dim=32),
            image_token_id=110),
    }


@pytest.fixture(scope="module")
def image():
    return benchmark_images(1)[0]


@pytest.mark.parametrize("name", list(peers.PEERS))
def test_each_peer_decodes_exactly_the_tokens_asked_in_float32_and_our_int8_path(name, image):
    built = peers.build_peer(name, tiny_configs()[name])
    copies = peers.in_precisions(built, ["float32", "int8"])
    base, q = copies["float32"], copies["int8"]
    assert base is built.model and P.int8_layers(base) == 0  # float32 is the model itself, untouched
    assert P.int8_layers(q) > 0 and q is not base
    # The LM head stays float in int8, as ours; every other Linear of the float model is int8 in the copy.
    head_name = next(n for n, m in base.named_modules() if m is built.head)
    assert type(q.get_submodule(head_name)) is nn.Linear and type(built.head) is nn.Linear
    linears = sum(type(m) is nn.Linear and m.in_features >= P.MIN_INT8_FEATURES for m in base.modules())
    assert P.int8_layers(q) == linears - 1
    entries = peers.peer_entries(name, built, copies, image, TOKENS)
    assert [(e.precision, e.beams) for e in entries] == [("float32", 1), ("float32", 3), ("int8", 1), ("int8", 3)]
    for e in entries:
        out = e.run()
        assert out.shape == (1, 1 + TOKENS)  # the one start token + exactly TOKENS new ones, EOS or not


def test_the_int8_copy_is_the_float_model_quantized(image):
    """Same inputs, close outputs: the int8 copy computes what the float model does."""
    built = peers.build_peer("GIT-base", tiny_configs()["GIT-base"])
    copies = peers.in_precisions(built, ["float32", "int8"])
    given = built.inputs(built.model, image)
    with torch.no_grad():
        ref, got = (copies[p](**given).logits for p in ("float32", "int8"))
    assert torch.nn.functional.cosine_similarity(ref.flatten(), got.flatten(), dim=0) > 0.99


def test_the_base_configurations_are_the_published_base_sizes():
    """Parameters of each base configuration (built on the meta device, no weights)
    against the published checkpoints': BLIP-base 224.7M, GIT-base 176.5M (0.706 GB of
    float32), Florence-2-base 0.23B (232M)."""
    published = {"BLIP-base": 224.7e6, "GIT-base": 176.5e6, "Florence-2-base": 232e6}
    sizes = {}
    for name, peer in peers.PEERS.items():
        config_class, model_class = peers.peer_classes(peer)
        with torch.device("meta"):
            model = model_class(peer.base_config(config_class))
        params = sum(p.numel() for p in model.parameters())
        assert params == pytest.approx(published[name], rel=0.01), name
        sizes[name] = peer.image_size(model.config)
    assert sizes == {"BLIP-base": 384, "GIT-base": 224, "Florence-2-base": 768}


def test_entries_take_turns_and_the_warm_up_round_is_not_timed():
    calls: list[str] = []
    entries = [peers.Entry(m, "float32", 1, lambda m=m: calls.append(m)) for m in "abc"]
    logged: list[str] = []
    peers.round_robin(entries, 2, logged.append)
    assert calls == list("abc") * 3  # a warm-up round, then two timed ones, one caption each per round
    assert [len(e.times) for e in entries] == [2, 2, 2] and all(t >= 0 for e in entries for t in e.times)
    assert logged[0] == "peers: round 0/2 (warm-up)" and len(logged) == 3


def test_the_table_has_every_entry_and_a_missing_class_is_a_note(monkeypatch):
    missing = peers.Peer("NoSuchConfig", "NoSuchModelForCaptions", lambda c: c(), lambda c: 32, (0.5,) * 3, (0.5,) * 3,
                         lambda m, x: None, lambda m: None)
    monkeypatch.setitem(peers.PEERS, "Missing-base", missing)
    torch.manual_seed(0)
    ours = SharpEyes.from_config(presets.tiny()).eval()
    result = peers.measure(1, ["GIT-base", "Missing-base"], ["float32", "int8"], TOKENS, ours=ours,
                           configs=tiny_configs())
    table = PeerTable.from_json(result, "peers")  # what the results file holds
    assert table.notes == {"Missing-base": f"skipped: transformers {__import__('transformers').__version__} "
                                           "has no NoSuchConfig"}
    keys = [(e.model, e.precision, e.beams) for e in table.entries]
    assert keys == [(m, p, b) for m in (peers.OURS, "GIT-base") for p in ("float32", "int8") for b in (1, 3)]
    assert all(len(e.times) == 1 and e.seconds == e.times[0] > 0 for e in table.entries)
    assert set(table.models) == {peers.OURS, "GIT-base"}
    assert table.models[peers.OURS].int8_layers == P.int8_layers(P.apply(ours, P.resolve("int8", "cpu")))
    assert table.tokens == TOKENS and ours.config.generation.stop == ()  # ours decodes exactly TOKENS too
    text = "\n".join(peers.render(table))
    assert "- Missing-base: skipped" in text and "| GIT-base |" in text and "x ours)" in text
    with pytest.raises(ValueError, match="must include float32"):
        peers.measure(1, [], ["int8"], TOKENS, ours=ours)


def test_our_paper_glance_is_built_without_deeplens():
    config = presets.paper().override(peers.OURS_OVERRIDES)  # validates, as the benchmark builds it
    assert config.deeplens is None and not config.refine
