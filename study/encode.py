"""Encode texts to unit-norm embeddings: no gradients, length-sorted token-budget batches, precision=auto
(bf16 autocast where bf16 is native, else fp32: study/precision.py).

Sorting by length and filling each batch up to `batch_tokens` (rows x padded
length) keeps padding small and memory flat across mixed-length corpora; the
longest batch comes first so an out-of-memory shows up at once.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from study.inputs import InputBuilder
from study.precision import resolve_precision

AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}
# On a CPU, `batch_tokens` is only a ceiling: batches of about this many tokens keep a tiny backbone's
# activations in the per-core L2 cache (4096 x 128 x 4 bytes = 2 MB). `study bench` measured mini-qwen2
# at 1024-4096 tokens 12-35% faster with 4096-token batches than with 32768 (the same embeddings: rows are
# independent). A document longer than this is still one row of its own.
CPU_BATCH_TOKENS = 4096


def length_batches(lengths: list[int], batch_tokens: int) -> list[np.ndarray]:
    """Indices grouped longest-first so that rows x longest row <= batch_tokens (at least one row)."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches, start = [], 0
    while start < len(order):
        width = lengths[order[start]]
        rows = max(1, batch_tokens // max(width, 1))
        batches.append(order[start : start + rows])
        start += rows
    return batches


def autocast(device: torch.device, precision: str):
    """Autocast for `precision`; `auto` is bf16 only where bf16 is native (study/precision.py)."""

    dtype = AUTOCAST.get(resolve_precision(precision, device))
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def encode(
    embed: Callable[[dict], torch.Tensor],
    builder: InputBuilder,
    texts: list[str],
    instruction: str = "",
    batch_tokens: int = 32768,
    precision: str = "auto",
    device: torch.device | str = "cpu",
    cache=None,
) -> np.ndarray:
    """Unit-norm float32 embeddings [len(texts), D]; `cache` (an EmbeddingCache) skips the model on a hit."""
    device = torch.device(device)
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    if cache is not None:
        key = cache.key(builder, texts, instruction, precision)
        hit = cache.get(key)
        if hit is not None and hit.shape[0] == len(texts):
            cache.hits += 1
            return hit
        cache.misses += 1
        emb = _encode(embed, builder, texts, instruction, batch_tokens, precision, device)
        cache.put(key, emb)
        return emb
    return _encode(embed, builder, texts, instruction, batch_tokens, precision, device)


def _encode(embed, builder: InputBuilder, texts: list[str], instruction: str, batch_tokens: int, precision: str,
            device: torch.device) -> np.ndarray:
    return _encode_ids(embed, builder, builder.tokenize(texts), instruction, batch_tokens, precision, device)


@torch.inference_mode()
def _encode_ids(embed, builder: InputBuilder, token_ids: list[list[int]], instruction: str, batch_tokens: int,
                precision: str, device: torch.device) -> np.ndarray:
    lengths = [len(builder.sequence(ids, instruction)[0]) for ids in token_ids]
    if device.type == "cpu":
        batch_tokens = min(batch_tokens, CPU_BATCH_TOKENS)
    out: list[torch.Tensor | None] = [None] * len(token_ids)
    for idx in length_batches(lengths, batch_tokens):
        batch = builder.collate([token_ids[i] for i in idx], instruction)
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device, precision):
            emb = embed(batch)
        emb = F.normalize(emb.float(), dim=-1).cpu()
        for row, i in enumerate(idx):
            out[i] = emb[row]
    return torch.stack(out).numpy()


# ---------------------------------------------------------------- model.encoding=chunked


@dataclass
class ChunkedEmbeddings:
    """Unit-norm chunk embeddings [chunks, D] of documents whose chunks are contiguous rows: document i owns
    rows starts[i]:starts[i+1]. Scored by max-sim (a document is as good as its best chunk)."""

    vectors: np.ndarray
    starts: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    def scores(self, queries: np.ndarray) -> np.ndarray:
        """[queries x documents]: each document's best chunk score."""
        return np.maximum.reduceat(queries @ self.vectors.T, self.starts, axis=1)

    def best_chunk(self, queries: np.ndarray) -> np.ndarray:
        """[queries x documents]: the index (within the document) of the chunk that scores best."""
        sims = queries @ self.vectors.T
        ends = np.append(self.starts[1:], sims.shape[1])
        return np.stack([sims[:, a:b].argmax(axis=1) for a, b in zip(self.starts, ends)], axis=1)


def document_scores(queries: np.ndarray, docs) -> np.ndarray:
    """[queries x documents] scores: cosine for vectors, max-sim for ChunkedEmbeddings."""
    return docs.scores(queries) if isinstance(docs, ChunkedEmbeddings) else queries @ docs.T


def encode_documents(
    embed: Callable[[dict], torch.Tensor],
    builder: InputBuilder,
    texts: list[str],
    instruction: str = "",
    batch_tokens: int = 32768,
    precision: str = "auto",
    device: torch.device | str = "cpu",
    cache=None,
):
    """Documents -> unit-norm vectors [N, D], as `encode` unless the builder chunks them (model.encoding=chunked).

    Chunked: every document is cut into windows (InputBuilder.split); the chunks of all documents are encoded
    together, length-sorted into token-budget batches like any texts (no per-document loop), then aggregated:
    `mean` gives one renormalised vector per document, `max` returns ChunkedEmbeddings for max-sim scoring.
    The chunk vectors are cached like any embeddings (the builder's chunk settings are part of the key)."""
    if builder.chunk is None or not texts:
        return encode(embed, builder, texts, instruction, batch_tokens, precision, device, cache)
    device = torch.device(device)
    chunks, owner = builder.split(builder.tokenize(texts), instruction)
    vectors = None
    if cache is not None:
        key = cache.key(builder, texts, instruction, precision, kind="chunks")
        vectors = cache.get(key)
        if vectors is not None and vectors.shape[0] == len(chunks):
            cache.hits += 1
        else:
            cache.misses += 1
            vectors = None
    if vectors is None:
        vectors = _encode_ids(embed, builder, chunks, instruction, batch_tokens, precision, device)
        if cache is not None:
            cache.put(key, vectors)
    owner = np.asarray(owner)
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    if builder.chunk.aggregate == "max":
        return ChunkedEmbeddings(vectors, starts)
    sums = np.add.reduceat(vectors.astype(np.float64), starts, axis=0)
    return (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).astype(np.float32)
