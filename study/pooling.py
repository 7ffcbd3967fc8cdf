"""Pooling: token states [B, T, D] + pool mask [B, T] -> one vector per text [B, D].

Every mode reads positions from the mask, never from padding-side assumptions,
so left and right padding give the same result (as sentence-transformers'
Pooling does). The pool mask is the attention mask, minus the instruction
tokens when `model.exclude_instruction` is set, or only the second copy under
`model.encoding=echo`. All modes are vectorised.

Modes (POOLINGS below, the one list of their names):
    mean             mean of the pooled token states
    last_token       the last pooled token (the appended EOS for decoders)
    first_token      the first pooled token ([CLS] for encoders)
    weighted_mean    SGPT's position-weighted mean
    latent_attention NV-Embed's trainable latent attention, then mean
    mask_tokens      mean of the final states of K mask tokens appended to the text (DiffRetriever);
                     study/inputs.py appends them (model.mask_tokens=K) and marks only them in the pool
                     mask; bidirectional attention only (config validation refuses causal)
"""

from __future__ import annotations

import torch
from torch import nn

POOLINGS = ("mean", "last_token", "first_token", "weighted_mean", "latent_attention", "mask_tokens")
# Under causal attention appended mask tokens see the text but the text never sees them: last-token pooling
# with extra steps, so config validation refuses these with causal attention.
BIDIRECTIONAL_ONLY_POOLINGS = ("mask_tokens",)


def _first_index(mask: torch.Tensor) -> torch.Tensor:
    # argmax returns the first maximal position: the first pooled token.
    return mask.int().argmax(dim=1)


def _last_index(mask: torch.Tensor) -> torch.Tensor:
    t = mask.shape[1]
    return t - 1 - mask.int().flip(1).argmax(dim=1)


def _gather(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


def masked_mean(hidden: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    weights = weights.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)


class LatentAttention(nn.Module):
    """NV-Embed's latent-attention pooling (Lee et al. 2024).

    The token states are the queries; a trainable latent array [num_latents, D]
    is both keys and values; the output goes through an MLP and is then
    mean-pooled over the pooled tokens.
    """

    def __init__(self, hidden_size: int, num_latents: int = 512, num_heads: int = 8):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(
                f"model.latent_attention.num_heads={num_heads} must divide the hidden size {hidden_size}"
            )
        self.latents = nn.Parameter(torch.randn(num_latents, hidden_size) * hidden_size**-0.5)
        self.attn = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        latents = self.latents.to(hidden.dtype).unsqueeze(0).expand(hidden.shape[0], -1, -1)
        out, _ = self.attn(hidden, latents, latents, need_weights=False)
        return masked_mean(self.mlp(out), mask)


class Pooler(nn.Module):
    def __init__(self, mode: str, hidden_size: int | None = None, num_latents: int = 512, num_heads: int = 8):
        super().__init__()
        if mode not in POOLINGS:
            raise ValueError(f"pooling={mode!r} is not valid; choose one of: {', '.join(POOLINGS)}")
        self.mode = mode
        self.latent = LatentAttention(hidden_size, num_latents, num_heads) if mode == "latent_attention" else None

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.mode in ("mean", "mask_tokens"):
            return masked_mean(hidden, mask)
        if self.mode == "first_token":
            return _gather(hidden, _first_index(mask))
        if self.mode == "last_token":
            return _gather(hidden, _last_index(mask))
        if self.mode == "weighted_mean":
            # SGPT (Muennighoff 2022): weight the i-th pooled token by i, so later
            # tokens -- which have seen more of the text in a causal model -- count more.
            return masked_mean(hidden, mask.cumsum(1) * mask)
        return self.latent(hidden, mask)
