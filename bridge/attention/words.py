"""Tokens → words for CLIP BPE prompts.

CLIP's byte-level BPE marks the last subword of every word with ``</w>`` and its pre-tokenizer
already splits punctuation from letters, so a word is a run of tokens up to and including one
that ends in ``</w>``: "unbelievably," → ``un bel iev ably</w> ,</w>`` → "unbelievably", ",".
CLIP also cuts digits and contractions into pieces of their own ("w12" → w, 1, 2; "don't" →
don, 't); pieces that touch in the prompt and both hold letters or digits are joined back,
so the words are what a person typed, while punctuation stays a word of its own.
The text encoder sees ``<|startoftext|>``, at most ``max_length - 2`` prompt tokens,
``<|endoftext|>`` and padding; words whose tokens do not all fit are dropped and reported.

Start, end and padding are not words of the prompt and are excluded unless asked for; when
included they appear as ``<start>``, ``<end>`` and ``<pad>`` (all padding positions together).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..tokenizers.clip_bpe import byte_to_unicode
from ..wiretext import word_list

log = logging.getLogger(__name__)

WORD_END = "</w>"
_BYTE_DECODER = {c: b for b, c in byte_to_unicode().items()}


@dataclass(frozen=True)
class WordMap:
    words: tuple[str, ...]
    token_indices: tuple[tuple[int, ...], ...]  # positions in the encoder sequence, per word
    dropped_words: tuple[str, ...]
    sequence_length: int  # the encoder's sequence length (77 for CLIP)


def _decode(token: str) -> str:
    token = token[: -len(WORD_END)] if token.endswith(WORD_END) else token
    try:
        return bytes(_BYTE_DECODER[c] for c in token).decode("utf-8", errors="replace")
    except KeyError:  # not a byte-level token (another tokenizer family): show it as is
        return token


def group_tokens(tokens: list[str]) -> list[list[int]]:
    """Group token positions (0-based, within ``tokens``) into words by the ``</w>`` end mark.

    A trailing group without an end mark (cut by truncation, or a tokenizer without end marks)
    still forms a word.  Tokenizers that never use ``</w>`` get one word per token.
    """
    if not any(t.endswith(WORD_END) for t in tokens):
        return [[i] for i in range(len(tokens))]
    groups, current = [], []
    for i, tok in enumerate(tokens):
        current.append(i)
        if tok.endswith(WORD_END):
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups


def _is_alnum(text: str) -> bool:
    return any(c.isalnum() for c in text)


def join_touching(prompt: str, groups: list[list[int]], texts: list[str]) -> tuple[list[list[int]], list[str]]:
    """Join consecutive alphanumeric pieces with no whitespace between them in ``prompt``."""
    text = " ".join(prompt.lower().split())
    out_groups: list[list[int]] = []
    out_texts: list[str] = []
    pos = 0
    for group, piece in zip(groups, texts):
        at = text.find(piece, pos)
        touching = at == pos and pos > 0 and not text[pos - 1].isspace()
        if at >= 0:
            pos = at + len(piece)
        if touching and out_texts and _is_alnum(out_texts[-1]) and _is_alnum(piece):
            out_groups[-1] = out_groups[-1] + group
            out_texts[-1] += piece
        else:
            out_groups.append(list(group))
            out_texts.append(piece)
    return out_groups, out_texts


def fit_words(groups, texts, room: int, offset: int, limit: str) -> tuple[list[str], list[tuple[int, ...]], list[str]]:
    """The words whose pieces all lie before ``room``, with their positions (shifted by
    ``offset`` in the encoder input), and the words cut off, logged once against ``limit``."""
    words, indices, dropped = [], [], []
    for group, text in zip(groups, texts):
        if group[-1] < room:
            words.append(text)
            indices.append(tuple(i + offset for i in group))
        else:
            dropped.append(text)
    if dropped:
        log.warning("prompt is over %s; dropped words: %s", limit, word_list(dropped))
    return words, indices, dropped


def map_words(tokenizer, prompt: str, include_special: bool = False) -> WordMap:
    """Split ``prompt`` into words with their positions in the (padded) encoder input."""
    max_length = int(getattr(tokenizer, "model_max_length", 77) or 77)
    if max_length > 4096:  # tokenizers saved without a limit report a huge sentinel
        max_length = 77
    ids = _token_ids(tokenizer, prompt)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    room = max_length - 2  # start and end tokens
    groups = group_tokens(tokens)
    groups, texts = join_touching(prompt, groups, ["".join(_decode(tokens[i]) for i in g) for g in groups])
    # +1: positions count from after <|startoftext|>
    words, indices, dropped = fit_words(groups, texts, room, 1, f"the text encoder's limit of {room} tokens")
    if include_special:
        kept = min(len(tokens), room)
        end = kept + 1
        specials = [("<start>", (0,)), ("<end>", (end,))]
        if end + 1 < max_length:
            specials.append(("<pad>", tuple(range(end + 1, max_length))))
        words = [specials[0][0], *words, *(s[0] for s in specials[1:])]
        indices = [specials[0][1], *indices, *(s[1] for s in specials[1:])]
    return WordMap(tuple(words), tuple(indices), tuple(dropped), max_length)


def _token_ids(tokenizer, prompt: str) -> list[int]:
    """All token ids of the prompt, without specials and without the over-length warning."""
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the limit is handled (and reported) here
    try:
        return list(tokenizer(prompt, add_special_tokens=False, truncation=False).input_ids)
    finally:
        transformers.logging.set_verbosity(verbosity)
