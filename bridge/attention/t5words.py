"""Tokens → words for sentencepiece (T5) prompts, and the joined CLIP + T5 words of SD3.

Sentencepiece marks the *start* of every whitespace-separated word with "▁" and has no start
token: "a red-ish apple," → ``▁a ▁red - ish ▁apple ,``.  A word is a "▁" piece and the pieces
after it, except that a piece of punctuation only is a word of its own (as CLIP's words keep
punctuation apart): "a", "red", "-", "ish", "apple", ",".  A bare "▁" piece (sentencepiece
writes one before a character it has no "▁x" piece for) belongs to the word after it.

The encoder sees at most ``max_length - 1`` pieces, then ``</s>``, then padding; ``max_length``
is the *pipeline's* ``max_sequence_length`` (what it pads and truncates to), not the
tokenizer's.  Words whose pieces do not all fit are dropped and reported.
"""

from __future__ import annotations

import difflib
import logging

from ..wiretext import word_list
from .words import WordMap, _token_ids, fit_words

log = logging.getLogger(__name__)

SPACE = "▁"
SPECIALS = ("<start>", "<end>", "<pad>")


def group_pieces(pieces: list[str]) -> list[list[int]]:
    """Group piece positions into words: a "▁" starts one, punctuation is one by itself."""
    groups: list[list[int]] = []
    pending: list[int] = []  # bare "▁" pieces waiting for the piece they announce
    prev_alnum = False
    for i, piece in enumerate(pieces):
        text = piece.replace(SPACE, "")
        if not text:
            pending.append(i)
            continue
        alnum = any(c.isalnum() for c in text)
        starts = piece.startswith(SPACE) or bool(pending)
        if groups and alnum and prev_alnum and not starts:
            groups[-1].extend(pending + [i])
        else:
            groups.append(pending + [i])
        pending, prev_alnum = [], alnum
    if pending and groups:
        groups[-1].extend(pending)
    return groups


def t5_words(tokenizer, prompt: str, max_length: int, include_special: bool = False) -> WordMap:
    """Words of ``prompt`` with their positions in the T5 encoder input of ``max_length``."""
    pieces = tokenizer.convert_ids_to_tokens(_token_ids(tokenizer, prompt))
    room = max_length - 1  # the end token </s>
    groups = group_pieces(pieces)
    texts = ["".join(pieces[i] for i in group).replace(SPACE, "") for group in groups]
    words, indices, dropped = fit_words(groups, texts, room, 0, f"T5's limit of {room} pieces")
    if include_special:
        end = min(len(pieces), room)
        words.append("<end>")
        indices.append((end,))
        if end + 1 < max_length:
            words.append("<pad>")
            indices.append(tuple(range(end + 1, max_length)))
    return WordMap(tuple(words), tuple(indices), tuple(dropped), max_length)


def _all_words(wm: WordMap, include_special: bool) -> list[tuple[str, tuple[int, ...] | None]]:
    """(text, positions or None when dropped) in prompt order; specials left out."""
    kept = [(w, ix) for w, ix in zip(wm.words, wm.token_indices) if not (include_special and w in SPECIALS)]
    return kept + [(w, None) for w in wm.dropped_words]


def _specials(wm: WordMap) -> dict[str, tuple[int, ...]]:
    return {w: ix for w, ix in zip(wm.words, wm.token_indices) if w in SPECIALS}


def joint_words(clip: WordMap, t5: WordMap, t5_offset: int, include_special: bool = False) -> WordMap:
    """One word list for a text sequence [CLIP positions; T5 positions from ``t5_offset``].

    The two tokenizations are aligned word by word on their lower-cased text; a word present
    in both gets both its CLIP tokens and its T5 pieces (its map is the mean over all of
    them), a word only one part holds (cut by that part's limit, or split differently) keeps
    that part's positions.  Where the two split a stretch differently but spell the same
    letters ("don't" in CLIP, "don ' t" in T5) the stretch is one word.  Words neither part
    holds are dropped.
    """
    a = _all_words(t5, include_special)
    b = _all_words(clip, include_special)
    shift = lambda ix: None if ix is None else tuple(i + t5_offset for i in ix)  # noqa: E731
    merged: list[tuple[str, tuple[int, ...]]] = []
    dropped: list[str] = []

    def emit(text, parts):
        positions = tuple(i for ix in parts if ix for i in ix)
        (merged.append((text, positions)) if positions else dropped.append(text))

    matcher = difflib.SequenceMatcher(a=[w.lower() for w, _ in a], b=[w.lower() for w, _ in b], autojunk=False)
    for op, i0, i1, j0, j1 in matcher.get_opcodes():
        if op == "equal":
            for (text, ix), (_, jx) in zip(a[i0:i1], b[j0:j1]):
                emit(text, (jx, shift(ix)))
        elif op == "replace" and "".join(w for w, _ in a[i0:i1]).lower() == "".join(w for w, _ in b[j0:j1]).lower():
            # one stretch, cut differently: each part counts only when all its pieces fit
            t5_ix = None if any(ix is None for _, ix in a[i0:i1]) else tuple(i for _, ix in a[i0:i1] for i in ix)
            clip_ix = None if any(jx is None for _, jx in b[j0:j1]) else tuple(j for _, jx in b[j0:j1] for j in jx)
            emit("".join(w for w, _ in a[i0:i1]), (clip_ix, shift(t5_ix)))
        else:
            for text, ix in a[i0:i1]:
                emit(text, (shift(ix),))
            for text, jx in b[j0:j1]:
                emit(text, (jx,))
    if dropped:
        log.warning("dropped words (over both text encoders' limits): %s", word_list(dropped))
    words = [w for w, _ in merged]
    indices = [ix for _, ix in merged]
    if include_special:
        cs, ts = _specials(clip), _specials(t5)
        front = [("<start>", cs["<start>"])] if "<start>" in cs else []
        back = []
        for name in ("<end>", "<pad>"):
            ix = cs.get(name, ()) + (shift(ts[name]) if name in ts else ())
            if ix:
                back.append((name, ix))
        words = [w for w, _ in front] + words + [w for w, _ in back]
        indices = [ix for _, ix in front] + indices + [ix for _, ix in back]
    return WordMap(tuple(words), tuple(indices), tuple(dropped), t5_offset + t5.sequence_length)


__all__ = ["group_pieces", "joint_words", "t5_words"]
