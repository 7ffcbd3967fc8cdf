"""The LightningModule: contrastive fine-tuning of an embedder. Handed its parts ready-made.

It never sees the whole config: the embedder (backbone + pooler), the loss and
an optimizer factory come in from study.train, so the same module serves tiny
CPU runs and 7B LoRA runs under DDP/FSDP.
"""

from __future__ import annotations

from typing import Callable

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from study.losses import InfoNCE
from study.model import Embedder


class ContrastiveModule(pl.LightningModule):
    def __init__(self, embedder: Embedder, loss: InfoNCE, optimizer_factory: Callable):
        super().__init__()
        self.embedder = embedder
        self.loss = loss
        self.optimizer_factory = optimizer_factory
        self._val_queries: list[torch.Tensor] = []
        self._val_positives: list[torch.Tensor] = []

    def _step(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        queries = self.embedder(batch["query"])
        docs = self.embedder(batch["docs"])
        n = queries.shape[0]
        return self.loss(queries, docs[:n], docs[n:]), queries, docs[:n]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, queries, _ = self._step(batch)
        if not torch.isfinite(loss):
            # Fail loudly: a sweep records the trial as FAIL with this reason.
            raise FloatingPointError(f"non-finite training loss ({loss.item()}) at step {self.global_step}")
        self.log("train/loss", loss, prog_bar=True, batch_size=queries.shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        loss, queries, positives = self._step(batch)
        self.log("val/loss", loss, batch_size=queries.shape[0], sync_dist=True)
        self._val_queries.append(F.normalize(queries.float(), dim=-1))
        self._val_positives.append(F.normalize(positives.float(), dim=-1))

    def on_validation_epoch_end(self) -> None:
        if not self._val_queries:
            return
        # Top-1 accuracy of each held-out query against all held-out positives:
        # a cheap retrieval score for pruning and learning curves.
        q, p = torch.cat(self._val_queries), torch.cat(self._val_positives)
        accuracy = ((q @ p.T).argmax(dim=1) == torch.arange(len(q), device=q.device)).float().mean()
        self.log("val/accuracy", accuracy, sync_dist=True)
        self._val_queries.clear()
        self._val_positives.clear()

    def configure_optimizers(self):
        return self.optimizer_factory([p for p in self.parameters() if p.requires_grad])
