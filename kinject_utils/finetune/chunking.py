"""Cut documents into the paper's equal 256-token training chunks, BOS/EOS marking document boundaries.

The paper (Ovadia et al. 2023, section 4) fine-tunes on the knowledge base cut into equal chunks of
256 tokens, documents concatenated or split. :func:`chunk_corpus` does that (``pack=True``) or splits
each document on its own (the un-packed baseline).

    chunks = chunk_corpus(texts, tokenizer)                  # equal 256-token chunks, BOS/EOS
"""
from __future__ import annotations

from typing import Any, Sequence


def _boundary_ids(tokenizer: Any) -> tuple[int | None, int | None]:
    """(BOS, EOS) ids to put around each document; BOS is dropped when it equals EOS (GPT-2 style)."""
    bos, eos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)
    if bos is not None and bos == eos:
        bos = None  # one <|endoftext|> between documents is the convention for such tokenizers
    if bos is None and eos is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token, so document boundaries "
                         "cannot be marked; set tokenizer.eos_token (e.g. to a special token it has) first")
    return bos, eos


def chunk_corpus(texts: Sequence[str], tokenizer: Any, chunk_len: int = 256, *, pack: bool = True,
                 drop_last: bool = False) -> list[list[int]]:
    """Cut documents into equal chunks of ``chunk_len`` tokens, BOS/EOS marking document boundaries.

    Each document becomes ``[BOS] + tokens + [EOS]`` (whichever of the two the tokenizer has;
    tokens are encoded with ``add_special_tokens=False`` so Gemma's automatic BOS is not doubled).
    With ``pack`` (the paper's chunking) the documents are concatenated into one stream and cut
    every ``chunk_len`` tokens, so short documents share a chunk and long ones are split; only the
    last chunk can be shorter (dropped with ``drop_last``). Without ``pack`` each document is split
    on its own (chunks then need padding in a batch: the un-packed baseline). Empty documents are
    skipped. Deterministic: same texts and tokenizer, same chunks.

    Example:
        >>> chunk_corpus(["a b", "c"], tok, chunk_len=4)  # doctest: +SKIP
        [[BOS, a, b, EOS], [BOS, c, EOS]]

    Raises:
        TypeError: ``texts`` is not a list of strings.
        ValueError: ``chunk_len`` < 2, or the tokenizer has no BOS and no EOS.
    """
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts[{bad[0]}] is {type(texts[bad[0]]).__name__}, not str; pass document texts")
    if isinstance(chunk_len, bool) or not isinstance(chunk_len, int) or chunk_len < 2:
        raise ValueError(f"chunk_len must be an integer >= 2 (the paper uses 256), got {chunk_len!r}")
    bos, eos = _boundary_ids(tokenizer)
    docs = [t for t in texts if t.strip()]
    encoded = tokenizer(docs, add_special_tokens=False, verbose=False)["input_ids"] if docs else []
    pieces: list[list[int]] = []
    for ids in encoded:
        pieces.append(([bos] if bos is not None else []) + list(ids) + ([eos] if eos is not None else []))
    chunks: list[list[int]] = []
    if pack:
        stream = [t for p in pieces for t in p]
        chunks = [stream[i:i + chunk_len] for i in range(0, len(stream), chunk_len)]
        if drop_last and chunks and len(chunks[-1]) < chunk_len:
            chunks.pop()
    else:
        for p in pieces:
            chunks.extend(p[i:i + chunk_len] for i in range(0, len(p), chunk_len))
        if drop_last:
            chunks = [c for c in chunks if len(c) == chunk_len]
    return chunks
