"""The embedding model: backbone states -> pooled vector. Shared by training, evaluation and export."""

from __future__ import annotations

import torch
from torch import nn

from study.pooling import Pooler


class Embedder(nn.Module):
    def __init__(self, backbone: nn.Module, pooler: Pooler):
        super().__init__()
        self.backbone = backbone
        self.pooler = pooler

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return self.pooler(hidden, batch["pool_mask"])


def build_embedder(backbone, mcfg) -> Embedder:
    pooler = Pooler(
        mcfg.pooling,
        hidden_size=backbone.hidden_size,
        num_latents=mcfg.latent_attention.num_latents,
        num_heads=mcfg.latent_attention.num_heads,
    )
    return Embedder(backbone.model, pooler)
