"""Attention capture (DAAM), independent of the architecture: the hooker that wraps a model
family's processors, the aggregation into per-step word maps, CLIP token → word mapping."""

from .aggregate import Aggregator
from .capture import AttentionCapture, LayerFilter
from .words import WordMap, map_words

__all__ = ["Aggregator", "AttentionCapture", "LayerFilter", "WordMap", "map_words"]
