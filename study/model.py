"""The embedding model: backbone states -> pooled vector. Shared by training, evaluation and export
(study/inference.py saves, loads and evaluates it)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from study.pooling import Pooler


class Embedder(nn.Module):
    def __init__(self, backbone: nn.Module, pooler: Pooler):
        super().__init__()
        self.backbone = backbone
        self.pooler = pooler

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        pooled = self.pooler(hidden, batch["pool_mask"])
        owner = batch.get("chunk_owner")
        return pooled if owner is None else mean_of_chunks(pooled, owner)


def mean_of_chunks(chunks: torch.Tensor, owner: torch.Tensor, num_docs: int | None = None) -> torch.Tensor:
    """model.encoding=chunked, aggregate=mean: per document the mean of its unit-norm chunk embeddings,
    renormalised ([chunks, D] + document index of each chunk -> [documents, D]); differentiable."""
    num_docs = int(owner.max()) + 1 if num_docs is None else num_docs
    unit = F.normalize(chunks.float(), dim=-1)
    sums = torch.zeros(num_docs, unit.shape[1], dtype=unit.dtype, device=unit.device).index_add(0, owner.to(unit.device), unit)
    return F.normalize(sums, dim=-1).to(chunks.dtype)


def build_embedder(backbone, mcfg) -> Embedder:
    pooler = Pooler(
        mcfg.pooling,
        hidden_size=backbone.hidden_size,
        num_latents=mcfg.latent_attention.num_latents,
        num_heads=mcfg.latent_attention.num_heads,
    )
    return Embedder(backbone.model, pooler)
