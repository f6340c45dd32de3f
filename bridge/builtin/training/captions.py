"""Captions → token ids padded to the encoder length, and which object each token names."""

from __future__ import annotations

import torch


class CaptionEncoder:
    """Token ids of captions plus, per token, which object (if any) the token names.

    Each caption word is tokenized on its own (and cached: captions use a few dozen words):
    CLIP splits text into words before BPE, so the concatenation equals tokenizing the whole
    caption (tests/test_shapes_train.py checks this).
    """

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.length = int(tokenizer.model_max_length)
        self.words: dict[str, list[int]] = {}

    def word_ids(self, word: str) -> list[int]:
        if word not in self.words:
            self.words[word] = self.tok(word, add_special_tokens=False)["input_ids"]
        return self.words[word]

    def encode(self, pieces) -> tuple[list[int], list[int]]:
        """ids and owners of one caption, padded to the encoder's length."""
        ids, owner = [self.tok.bos_token_id], [-1]
        for word, obj in pieces:
            w_ids = self.word_ids(word)
            ids += w_ids
            owner += [obj] * len(w_ids)
        ids.append(self.tok.eos_token_id)
        owner.append(-1)
        pad = self.length - len(ids)
        if pad < 0:
            raise ValueError(f"caption of {len(ids)} tokens is longer than the encoder's {self.length}")
        return ids + [self.tok.pad_token_id] * pad, owner + [-1] * pad

    def batch(self, scenes):
        """ids (B, L) and owner (B, L): owner is the object index of each token, −1 for others.

        Guidance dropout happens later, on the encoded training set (``TrainingSet.empty_ids``).
        """
        pairs = [self.encode(scene.pieces) for scene in scenes]
        return torch.tensor([i for i, _ in pairs]), torch.tensor([o for _, o in pairs])
