"""Which word of a prompt a run starts on: its *focus*, the one rule every client follows.

The viewer's selection, TouchDesigner's Word parameter, OSC's ``/selected`` and a timelapse's
``single`` / ``side`` / ``particles`` layouts all start on the same word: the bridge sends it as
``run_start.focus`` (docs/PROTOCOL.md) and the timelapse reads it from the recording's start.

The rule, in order:

1. the first word that is a known noun (a shape of the built-in model, in the singular or the
   plural: the model was trained on exactly these, so "a yellow star and a green circle" starts
   on "star");
2. otherwise the first word that is neither a stop word (article, determiner, conjunction,
   preposition, a few auxiliaries) nor punctuation ("a misty forest at dawn" starts on
   "misty": without a part-of-speech tagger an adjective cannot be told from a noun, and a
   tagger is not worth its weight here);
3. otherwise the first word (a prompt of stop words only still selects something).

No torch, no model: a pure function of the words.
"""

from __future__ import annotations

from .builtin.shapes_data import SHAPES

# Nouns the built-in shapes model knows (its captions' object and background words).
NOUNS = frozenset(SHAPES) | {"background"}

ARTICLES = {"a", "an", "the"}
DETERMINERS = {"this", "that", "these", "those", "some", "any", "each", "every", "all", "both", "no",
               "my", "your", "his", "her", "its", "our", "their", "another", "other", "such"}
CONJUNCTIONS = {"and", "or", "but", "nor", "so", "yet", "while", "as", "if", "than", "then", "because",
                "although", "though", "whereas", "plus", "&"}
PREPOSITIONS = {"about", "above", "across", "after", "against", "along", "amid", "among", "around", "at",
                "before", "behind", "below", "beneath", "beside", "besides", "between", "beyond", "by",
                "down", "during", "for", "from", "in", "inside", "into", "like", "near", "of", "off",
                "on", "onto", "out", "outside", "over", "past", "per", "through", "throughout", "to",
                "toward", "towards", "under", "underneath", "until", "up", "upon", "via", "with",
                "within", "without"}
AUXILIARIES = {"is", "are", "was", "were", "be", "been", "being", "has", "have", "had", "it", "there"}
STOP_WORDS = frozenset(ARTICLES | DETERMINERS | CONJUNCTIONS | PREPOSITIONS | AUXILIARIES)


def _bare(word: str) -> str:
    return "".join(c for c in word.lower() if c.isalnum())


def is_noun(word: str) -> bool:
    bare = _bare(word)
    return bare in NOUNS or (bare.endswith("es") and bare[:-2] in NOUNS) or (bare.endswith("s") and bare[:-1] in NOUNS)


def is_content(word: str) -> bool:
    """A word worth starting on: not punctuation, not a stop word."""
    bare = _bare(word)
    return bool(bare) and bare not in STOP_WORDS


def focus_index(words) -> int:
    """Index of the word a run starts on (see the module's rule); 0 for no words."""
    words = list(words)
    for i, word in enumerate(words):
        if is_noun(word):
            return i
    for i, word in enumerate(words):
        if is_content(word):
            return i
    return 0
