"""Build CLIP's BPE tokenizer files (``vocab.json`` + ``merges.txt``) from open_clip's BPE list.

The shipped SDXL/SD1.5 config folders carry the real 49,408-token CLIP vocabulary so that
single-file checkpoints load without a model hub. It was made once with::

    python -m likeness.engines.diffusers.clip_vocab bpe_simple_vocab_16e6.txt.gz OUT_DIR

from ``open_clip/bpe_simple_vocab_16e6.txt.gz`` inside the open-clip-torch wheel; the merge
order and token ids follow open_clip's ``SimpleTokenizer`` (256 byte symbols, the same with
``</w>``, 48,894 merges, then ``<|startoftext|>`` and ``<|endoftext|>``).
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

N_MERGES = 49152 - 256 - 2


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def build_clip_vocab(bpe_lines: list[str]) -> tuple[dict[str, int], list[str]]:
    """(vocab, merges) from the lines of open_clip's BPE file (first line is a header)."""
    merges = [line for line in bpe_lines[1 : N_MERGES + 1] if line.strip()]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(tokens)}, merges


def write_clip_vocab(gz_path: str | Path, out_dir: str | Path) -> None:
    """Write ``vocab.json`` and ``merges.txt`` (Hugging Face CLIPTokenizer layout)."""
    with gzip.open(gz_path, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    vocab, merges = build_clip_vocab(lines)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m likeness.engines.diffusers.clip_vocab BPE_GZ OUT_DIR")
    write_clip_vocab(sys.argv[1], sys.argv[2])
