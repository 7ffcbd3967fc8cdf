"""The pretraining losses, as pure functions of token ids and a model's logits.

- autoregressive: causal attention, next-token cross-entropy (mean over positions 1..T-1).
- masked_diffusion (MDLM / LLaDA): bidirectional attention; per sequence t ~ U(0, 1) and
  mask ratio p = (1 - eps) t + eps; each token is replaced by <mask> with probability p;
  loss = sum over masked tokens of CE / p, divided by the number of tokens (B x T): the
  Monte-Carlo estimate of the negative ELBO per token, an upper bound on the NLL.
  `shift=True` is Dream's variant: logits at position i predict the (masked) token i+1,
  so the AR-style head layout is kept; position 0 is never masked then.
- mntp (LLM2Vec): bidirectional attention; mask a fixed share of tokens; the masked token
  i is predicted from position i-1 (the AR head's layout); mean CE over masked tokens.

Corruption is separated from the loss so tests can check the loss by hand and the
validation loss can use a fixed random stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Corruption:
    inputs: torch.Tensor  # [B, T] ids given to the model
    masked: torch.Tensor  # [B, T] bool, the tokens to predict
    p_mask: torch.Tensor  # [B] mask ratio of each sequence (the 1/p weight)


def _token_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           reduction="none").view(targets.shape)


def autoregressive_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy: logits at i predict ids at i+1."""
    return _token_ce(logits[:, :-1], ids[:, 1:]).mean()


def diffusion_corruption(ids: torch.Tensor, mask_id: int, eps: float, generator: torch.Generator,
                         shift: bool = False) -> Corruption:
    """MDLM/LLaDA forward process: t ~ U(0,1) per sequence, mask each token with p = (1-eps)t + eps."""
    b, t_len = ids.shape
    t = torch.rand(b, generator=generator, device=ids.device)
    p_mask = (1 - eps) * t + eps
    masked = torch.rand(b, t_len, generator=generator, device=ids.device) < p_mask[:, None]
    if shift:
        masked[:, 0] = False  # nothing to its left predicts it
    return Corruption(torch.where(masked, torch.full_like(ids, mask_id), ids), masked, p_mask)


def masked_diffusion_loss(logits: torch.Tensor, ids: torch.Tensor, corruption: Corruption,
                          shift: bool = False) -> torch.Tensor:
    """sum_{masked} CE / p_mask, over B x T tokens (LLaDA's estimator)."""
    b, t_len = ids.shape
    if shift:
        ce = _token_ce(logits[:, :-1], ids[:, 1:])
        masked = corruption.masked[:, 1:]
    else:
        ce = _token_ce(logits, ids)
        masked = corruption.masked
    weighted = ce * masked / corruption.p_mask[:, None]
    return weighted.sum() / (b * t_len)


def mntp_corruption(ids: torch.Tensor, mask_id: int, prob: float, generator: torch.Generator) -> Corruption:
    """LLM2Vec MNTP: mask a `prob` share of tokens (never position 0: it has no left neighbour)."""
    masked = torch.rand(ids.shape, generator=generator, device=ids.device) < prob
    masked[:, 0] = False
    p = torch.full((ids.shape[0],), prob, device=ids.device)
    return Corruption(torch.where(masked, torch.full_like(ids, mask_id), ids), masked, p)


def mntp_loss(logits: torch.Tensor, ids: torch.Tensor, corruption: Corruption) -> torch.Tensor:
    """Mean CE of masked tokens, token i read from the logits at position i-1."""
    ce = _token_ce(logits[:, :-1], ids[:, 1:])
    masked = corruption.masked[:, 1:]
    return (ce * masked).sum() / masked.sum().clamp(min=1)


def attention_for(objective: str) -> str:
    """The attention each objective trains with (the study's only other difference)."""
    return "causal" if objective == "autoregressive" else "bidirectional"
