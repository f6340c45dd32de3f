"""Text that came off the wire: checked before it is kept, clipped before it is echoed.

Two rules every door (websocket JSON, OSC, HTTP paths) follows:

- **Only real Unicode is kept.**  JSON may spell a lone UTF-16 surrogate (``"\\ud800"``);
  Python decodes it into a ``str`` that cannot be encoded back to UTF-8, so one such prompt
  kept in the settings would break every later status message and tokenizer call.
  :func:`find_unencodable` finds one anywhere in a decoded message (keys too), without
  recursion, and also measures nesting so a deep document is refused, not followed.
- **What is echoed is short.**  An error names the bad value, but a 250 KB field name must
  not become a 250 KB reply and log line: :func:`quote` gives a ``repr`` of at most
  :data:`ECHO_CHARS` characters plus the original length.

Only the standard library is imported.
"""

from __future__ import annotations

ECHO_CHARS = 80  # the most characters of a sender's value an error or log line repeats
MAX_DEPTH = 32  # JSON nesting a control may have; real controls are 2 deep
MAX_ERROR_CHARS = 600  # an error sentence is clipped here as a last guard


def quote(value, limit: int = ECHO_CHARS) -> str:
    """``repr(value)``, clipped to ``limit`` characters with the full length said, safe to
    encode as UTF-8 (lone surrogates are shown escaped)."""
    text = value if isinstance(value, str) else repr(value)
    shown = repr(text[:limit]) if isinstance(value, str) else text[:limit]
    shown = shown.encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > limit:
        return f"{shown}… ({len(text)} characters)"
    return shown


def clip(sentence: str, limit: int = MAX_ERROR_CHARS) -> str:
    """An outgoing sentence, clipped and made encodable (the last guard before the wire)."""
    sentence = sentence.encode("utf-8", "backslashreplace").decode("utf-8")
    return sentence if len(sentence) <= limit else sentence[: limit - 1] + "…"


def word_list(words, limit: int = 200, sep: str = " ") -> str:
    """Words joined by ``sep`` for a log line or a reply: at most about ``limit`` characters,
    and when clipped it still names the last word and the count."""
    text = sep.join(words)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… {words[-1][:ECHO_CHARS]} ({len(words)} words)"


def is_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def find_unencodable(value, max_depth: int = MAX_DEPTH) -> str | None:
    """The reason ``value`` (a decoded JSON document) may not be kept, or None.

    Walks lists and dicts with an explicit stack: refuses nesting deeper than ``max_depth``
    and any string or key holding a lone surrogate."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not is_encodable(item):
                return "it holds a lone UTF-16 surrogate (like \\ud800), which is not text; send valid Unicode"
            continue
        if isinstance(item, (list, dict)):
            if depth > max_depth:
                return f"it is nested more than {max_depth} levels deep"
            if isinstance(item, dict):
                stack.extend((k, depth) for k in item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
    return None

