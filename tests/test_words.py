"""Token → word mapping with the full real CLIP BPE vocabulary (derived from the shipped merges)."""

import json

from bridge.attention.words import group_tokens, map_words
from bridge.tokenizers.clip_bpe import FULL_MERGES, build_vocab, read_merges, vocab_size, write_clip_tokenizer


def test_full_vocab_has_clip_size_and_ids(clip_tokenizer):
    assert len(clip_tokenizer) == 49408 == vocab_size()
    # Ids every SD text encoder was trained with: start/end and a few common words.
    assert clip_tokenizer.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>", "a</w>", "photograph</w>"]) == [49406, 49407, 320, 8853]


def test_truncated_vocab_is_a_prefix_of_the_full_one(tmp_path):
    small = json.loads((write_clip_tokenizer(tmp_path / "t", max_merges=500) / "vocab.json").read_text())
    full = build_vocab(read_merges())
    assert len(small) == vocab_size(500) == 512 + 500 + 2
    assert all(full[tok] == i for tok, i in small.items() if not tok.startswith("<|"))
    assert len(read_merges()) == FULL_MERGES


def test_multi_token_words_merge(clip_tokenizer):
    prompt = "a photograph of an astronaut riding a xylophonist"
    ids = clip_tokenizer(prompt, add_special_tokens=False).input_ids
    wm = map_words(clip_tokenizer, prompt)
    assert wm.words == ("a", "photograph", "of", "an", "astronaut", "riding", "a", "xylophonist")
    assert len(ids) > len(wm.words)  # the rare word really is several BPE tokens
    multi = wm.token_indices[-1]
    assert len(multi) >= 2 and list(multi) == list(range(multi[0], multi[0] + len(multi)))
    # Positions count from 1: 0 is <|startoftext|> in the encoder input.
    assert wm.token_indices[0] == (1,)
    assert sum(len(ix) for ix in wm.token_indices) == len(ids)


def test_punctuation_is_its_own_word(clip_tokenizer):
    wm = map_words(clip_tokenizer, "Red apple, green pear; (wow)!")
    assert wm.words == ("red", "apple", ",", "green", "pear", ";", "(", "wow", ")!")


def test_digits_and_contractions_stay_one_word(clip_tokenizer):
    ids = clip_tokenizer("w12 don't", add_special_tokens=False).input_ids
    wm = map_words(clip_tokenizer, "w12 don't 3d-print")
    assert len(ids) >= 5  # CLIP cuts these into pieces …
    assert wm.words == ("w12", "don't", "3d", "-", "print")  # … which are joined back


def test_non_ascii_words_decode(clip_tokenizer):
    wm = map_words(clip_tokenizer, "café über naïve")
    assert wm.words == ("café", "über", "naïve")


def test_special_tokens_excluded_by_default_and_selectable(clip_tokenizer):
    assert map_words(clip_tokenizer, "a red apple").words == ("a", "red", "apple")
    wm = map_words(clip_tokenizer, "a red apple", include_special=True)
    assert wm.words == ("<start>", "a", "red", "apple", "<end>", "<pad>")
    assert wm.token_indices[0] == (0,) and wm.token_indices[4] == (4,)
    assert wm.token_indices[5] == tuple(range(5, 77))


def test_over_limit_prompt_is_truncated_and_dropped_words_reported(clip_tokenizer, caplog):
    words = [f"w{i}" for i in range(80)]  # "w12" etc.: each word is at least one token
    prompt = " ".join(words)
    ids = clip_tokenizer(prompt, add_special_tokens=False).input_ids
    wm = map_words(clip_tokenizer, prompt)
    assert len(ids) > 75
    assert all(i <= 75 for ix in wm.token_indices for i in ix)  # nothing past the encoder's 75 prompt slots
    assert wm.words + wm.dropped_words == tuple(words)
    assert wm.dropped_words and wm.dropped_words[-1] == "w79"
    assert "dropped words" in caplog.text and "w79" in caplog.text


def test_word_split_by_the_limit_is_dropped_whole(clip_tokenizer):
    prompt = "a " * 74 + "xylophonist"  # 74 one-token words, then a multi-token word straddling slot 75
    wm = map_words(clip_tokenizer, prompt)
    assert wm.dropped_words == ("xylophonist",)
    assert len(wm.words) == 74


def test_group_tokens_without_end_marks_is_one_word_per_token():
    assert group_tokens(["▁a", "▁cat"]) == [[0], [1]]
    assert group_tokens(["un", "real</w>", "x"]) == [[0, 1], [2]]
