"""Cross-attention capture (DAAM) on diffusers UNets: processors, aggregation, token → word mapping."""

from .aggregate import Aggregator, feature_size
from .capture import AttentionCapture, LayerFilter, RunAborted, cross_attention_modules
from .words import WordMap, map_words

__all__ = ["Aggregator", "AttentionCapture", "LayerFilter", "RunAborted", "WordMap", "cross_attention_modules", "feature_size", "map_words"]
