"""Concept names: what a request, a control or a preset may ask concept maps for.

Light module (no torch): the controls and presets check names before any model is near.
"""

from __future__ import annotations

from .errors import InvalidRequest
from .limits import LIMITS


def parse_concepts(concepts) -> tuple[str, ...]:
    """Concept names from a list or a comma-separated text, stripped, empty ones left out;
    InvalidRequest (one sentence) for too many, too long, repeated or non-text ones."""
    if isinstance(concepts, str):
        concepts = [concepts]
    if not isinstance(concepts, (list, tuple)) or not all(isinstance(c, str) for c in concepts):
        raise InvalidRequest('concepts must be a list of words, like ["sky", "circle", "background"]')
    names = tuple(c.strip() for item in concepts for c in item.split(","))  # "sky, circle" is two
    names = tuple(n for n in names if n)
    if len(names) > LIMITS.concepts:
        raise InvalidRequest(f"at most {LIMITS.concepts} concepts at once, got {len(names)}")
    for name in names:
        if len(name) > LIMITS.concept_chars:
            raise InvalidRequest(f"a concept is at most {LIMITS.concept_chars} characters, got {len(name)} in {name[:20]!r}…")
    if len(set(names)) != len(names):
        raise InvalidRequest(f"each concept once, please: {', '.join(names)}")
    return names
