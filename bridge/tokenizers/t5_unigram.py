"""A T5-style tokenizer built offline: a sentencepiece Unigram vocabulary ("▁" marks a word
start, ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2) trained on a few prompts, saved as a T5 tokenizer
folder.  The hubs are out of reach, so the tests' Flux and SD3 pipelines and the transformer
benchmarks build theirs with it; a trained vocabulary splits rare words into several pieces,
as T5's does.
"""

from __future__ import annotations

from pathlib import Path

# The prompts the vocabulary is trained on.
T5_CORPUS = """a red apple on a wooden table
a photograph of an astronaut riding a horse on the moon
a small boat in a stormy sea, oil painting
an old castle on a hill at sunset, dramatic light
a bowl of fruit: apples, pears and grapes!
a cat sleeping on a windowsill (soft morning light)
portrait of a woman with red hair, highly detailed
a city street at night; neon signs and rain
don't stop the music, it's a blue house by the sea
a tall tree, a green lamp and a small dog
""".splitlines()


def write_t5_tokenizer(folder: Path, vocab_size: int = 200, corpus: list[str] | None = None,
                       model_max_length: int | None = None) -> Path:
    """Train a Unigram vocabulary offline on ``corpus`` (default: :data:`T5_CORPUS`) and save it
    as a T5 tokenizer folder (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2)."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import T5Tokenizer

    sp = Tokenizer(models.Unigram())
    sp.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    sp.train_from_iterator((T5_CORPUS if corpus is None else corpus) * 10, trainer)
    vocab = [tuple(v) for v in json.loads(sp.to_str())["model"]["vocab"]]
    tok = T5Tokenizer(vocab=vocab, extra_ids=0, **({"model_max_length": model_max_length} if model_max_length else {}))
    tok.save_pretrained(folder)
    return folder


def write_word_unigram(folder: Path, corpus: list[str], model_max_length: int | None = None) -> Path:
    """A Unigram vocabulary of a small closed corpus: every word as one "▁word" piece (punctuation
    its own piece), every character as a fallback, scored by log frequency; saved as a T5
    tokenizer folder.  (The trainer above prunes a vocabulary this small down to characters.)"""
    import math
    import re
    from collections import Counter

    from transformers import T5Tokenizer

    words = Counter(w for line in corpus for w in re.findall(r"\w+|[^\w\s]", line))
    chars = Counter(c for w in words for c in w)
    total = sum(words.values()) + sum(chars.values())
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", math.log(1 / total))]
    pieces += [("▁" + w if w[0].isalnum() else w, math.log(n / total)) for w, n in words.most_common()]
    pieces += [(c, math.log(n / total) - 10) for c, n in chars.most_common()]  # only where no word fits
    tok = T5Tokenizer(vocab=pieces, extra_ids=0, **({"model_max_length": model_max_length} if model_max_length else {}))
    tok.save_pretrained(folder)
    return folder
