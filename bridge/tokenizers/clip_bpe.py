"""Build a Hugging Face ``CLIPTokenizer`` folder from the original CLIP BPE merges file.

CLIP's vocabulary is fully determined by its merges list: 256 byte-level characters, the same
256 with the word-end mark ``</w>``, one token per merge (in merge order), then
``<|startoftext|>`` and ``<|endoftext|>``.  With all 48 894 merges that is the 49 408-token
vocabulary of every Stable Diffusion 1.x/2.x/XL text encoder.  Keeping only the first K merges
gives a smaller but still real CLIP vocabulary (rarer words split into more subwords), which
keeps the built-in models' embedding tables small.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

BPE_MERGES_GZ = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
FULL_MERGES = 49152 - 256 - 2  # CLIP uses the first 48 894 merge lines of the file
START, END = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 77


def byte_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level map: printable bytes map to themselves, others to unused code points.

    The order of the values is the order of the first 256 vocabulary entries.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


def read_merges(gz_path: str | Path = BPE_MERGES_GZ, max_merges: int | None = None) -> list[tuple[str, str]]:
    """The merge pairs of a CLIP BPE file, in priority order (first line is a header)."""
    limit = FULL_MERGES if max_merges is None else min(int(max_merges), FULL_MERGES)
    if limit < 0:
        raise ValueError(f"max_merges must be ≥ 0, got {max_merges}")
    text = gzip.open(gz_path, "rt", encoding="utf-8").read()
    lines = text.split("\n")[1 : 1 + limit]
    return [tuple(line.split()) for line in lines]  # type: ignore[misc]


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """token → id, in CLIP order."""
    chars = list(byte_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [START, END]
    return {tok: i for i, tok in enumerate(tokens)}


def write_clip_tokenizer(
    out_dir: str | Path,
    max_merges: int | None = None,
    gz_path: str | Path = BPE_MERGES_GZ,
    pad_token: str = END,
    model_max_length: int = MAX_LENGTH,
) -> Path:
    """Write vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json.

    ``max_merges=None`` keeps all merges (the full 49 408-token CLIP vocabulary).
    ``pad_token`` is ``<|endoftext|>`` for SD 1.x; SD 2.x tokenizers pad with ``"!"``.
    Returns the folder, loadable with ``CLIPTokenizer.from_pretrained(out_dir)``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    merges = read_merges(gz_path, max_merges)
    vocab = build_vocab(merges)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    with open(out / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    specials = {"bos_token": START, "eos_token": END, "unk_token": END, "pad_token": pad_token}
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2), encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        **specials,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return out


def vocab_size(max_merges: int | None = None) -> int:
    n = FULL_MERGES if max_merges is None else min(int(max_merges), FULL_MERGES)
    return 512 + n + 2
