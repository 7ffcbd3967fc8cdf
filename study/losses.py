"""Contrastive loss: InfoNCE over cosine similarity with in-batch and hard negatives.

Each query is scored against every document of the (global) batch: its own
positive, the other queries' positives and every hard negative. Under DDP the
documents are gathered from all processes with gradients
(torch's functional all_gather_single_autograd), so a 2-process run sees the same negatives
and gives the same loss as one process over the same global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed._functional_collectives import all_gather_single_autograd, wait_tensor


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """All processes' rows concatenated in rank order, and this rank's offset.

    Every rank must hold the same number of rows (DDP's even sampler gives that).
    This is the functional collective torch's deprecation of
    torch.distributed.nn.all_gather points to. With gloo, torch 2.13 can still abort
    at interpreter exit after either one ("terminate called without an active
    exception"): see tests/test_losses.py.
    """
    if not _distributed():
        return x, 0
    gathered = wait_tensor(all_gather_single_autograd(x.contiguous(), 0, torch.distributed.group.WORLD))
    return gathered, torch.distributed.get_rank() * x.shape[0]


class InfoNCE(nn.Module):
    def __init__(self, temperature: float = 0.02, gather: bool = True):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature={temperature} must be > 0")
        self.temperature = temperature
        self.gather = gather

    def forward(self, queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None = None) -> torch.Tensor:
        """queries, positives: [B, D]; negatives: [B * k, D] (any order) or None."""
        q = F.normalize(queries.float(), dim=-1)
        pos = F.normalize(positives.float(), dim=-1)
        neg = F.normalize(negatives.float(), dim=-1) if negatives is not None and negatives.numel() else None
        if self.gather:
            pos, offset = gather_with_grad(pos)
            neg = gather_with_grad(neg)[0] if neg is not None else None
        else:
            offset = 0
        docs = pos if neg is None else torch.cat([pos, neg])
        logits = q @ docs.T / self.temperature
        labels = torch.arange(q.shape[0], device=q.device) + offset
        return F.cross_entropy(logits, labels)
