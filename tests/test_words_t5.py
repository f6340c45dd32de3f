"""Sentencepiece (T5) pieces → words, on a Unigram vocabulary trained offline, and SD3's CLIP + T5 words."""

import pytest
from transformers import CLIPTokenizer, T5Tokenizer

from _pipelines import MERGES, write_t5_tokenizer
from bridge.attention.t5words import group_pieces, joint_words, t5_words
from bridge.attention.words import map_words
from bridge.tokenizers.clip_bpe import write_clip_tokenizer


@pytest.fixture(scope="module")
def t5_tok(tmp_path_factory):
    return T5Tokenizer.from_pretrained(write_t5_tokenizer(tmp_path_factory.mktemp("t5tok")))


@pytest.fixture(scope="module")
def clip_tok(tmp_path_factory):
    return CLIPTokenizer.from_pretrained(write_clip_tokenizer(tmp_path_factory.mktemp("cliptok"), MERGES))


def test_group_pieces_by_word_start_with_punctuation_apart():
    pieces = ["▁a", "▁re", "d", "-", "ish", "▁apple", ",", "▁", "(", "b", "lue", ")", "!"]
    texts = ["".join(pieces[i] for i in g).replace("▁", "") for g in group_pieces(pieces)]
    assert texts == ["a", "red", "-", "ish", "apple", ",", "(", "blue", ")", "!"]
    assert group_pieces(pieces)[6] == [7, 8]  # a bare "▁" belongs to the word after it


def test_trained_vocabulary_splits_words_into_pieces(t5_tok):
    prompt = "a red apple, on a wooden table"
    pieces = t5_tok.convert_ids_to_tokens(t5_tok(prompt, add_special_tokens=False).input_ids)
    wm = t5_words(t5_tok, prompt, 256)
    assert wm.words == ("a", "red", "apple", ",", "on", "a", "wooden", "table")
    assert len(pieces) > len(wm.words)  # some words really are several pieces
    assert any(len(ix) > 1 for ix in wm.token_indices)
    assert wm.token_indices[0] == (0,)  # no start token in T5
    assert sum(len(ix) for ix in wm.token_indices) == len(pieces)
    assert wm.sequence_length == 256


def test_positions_match_the_pipelines_padded_input(t5_tok):
    prompt = "a cat sleeping; soft light!"
    wm = t5_words(t5_tok, prompt, 32, include_special=True)
    ids = t5_tok(prompt, padding="max_length", max_length=32, truncation=True, add_special_tokens=True).input_ids
    (end,) = wm.token_indices[wm.words.index("<end>")]
    assert ids[end] == t5_tok.eos_token_id
    assert all(ids[i] == t5_tok.pad_token_id for i in wm.token_indices[wm.words.index("<pad>")])
    assert ";" in wm.words and "!" in wm.words


def test_truncation_at_the_pipelines_max_sequence_length(t5_tok):
    prompt = "a photograph of an astronaut riding a horse on the moon"
    wm = t5_words(t5_tok, prompt, 8)
    assert wm.dropped_words and all(ix[-1] < 7 for ix in wm.token_indices)  # room for </s>
    full = t5_words(t5_tok, prompt, 256).words
    assert wm.words + wm.dropped_words == full


def test_joint_words_align_clip_and_t5(t5_tok, clip_tok):
    prompt = "don't stop the music, it's a blue house"
    clip, t5 = map_words(clip_tok, prompt), t5_words(t5_tok, prompt, 256)
    wm = joint_words(clip, t5, 77)
    assert wm.words[0].lower() == "don't" and wm.words[-1] == "house"
    for ix in wm.token_indices:
        assert any(i < 77 for i in ix) and any(i >= 77 for i in ix)
    assert wm.sequence_length == 77 + 256


def test_joint_words_keep_what_t5_holds_beyond_clips_limit(t5_tok, clip_tok):
    prompt = " ".join(["a red apple on a wooden table"] * 12)
    clip, t5 = map_words(clip_tok, prompt, True), t5_words(t5_tok, prompt, 256, True)
    assert clip.dropped_words and not t5.dropped_words
    wm = joint_words(clip, t5, 77, include_special=True)
    assert not wm.dropped_words and wm.words[1:] == t5.words and wm.words[0] == "<start>"
    assert all(i >= 77 for i in wm.token_indices[-4])  # a late word: T5 pieces only
    (start,), end = wm.token_indices[0], wm.token_indices[-2]
    assert start == 0 and len(end) == 2 and end[0] == 76 and end[1] >= 77  # CLIP's and T5's end tokens
