"""A small word-level tokenizer, for the tiny and demo models.

GPT-2/OPT BPE files cannot be downloaded here, and a 50k-token embedding would not fit a
small shipped model, so tiny models use one token per lowercase word or punctuation mark.
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0..3, as OPT orders them
# Words, numbers and single punctuation marks, like the synthetic world's tokenizer.
WORD_PATTERN = r"[a-z]+|\d+|[^\sa-z\d]"


def build_word_tokenizer(words: Iterable[str]) -> PreTrainedTokenizerFast:
    """A lowercasing word-level tokenizer over ``words`` (plus <s>, <pad>, </s>, <unk>)."""
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for word in words:
        word = str(word).strip().lower()
        if not word:
            continue
        if " " in word:
            raise ValueError(f"vocab_words: '{word}' holds a space; give one token per entry")
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")]
    )
    # Tokens are joined with spaces; clean-up then removes the space before punctuation.
    core.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=True,
    )
