"""Backbones: registry (names), loading, and attention direction (one module each)."""

from study.backbones.attention import AttentionMismatch, UnsupportedBackbone, probe_attention, set_attention
from study.backbones.loading import Backbone, load_backbone
from study.backbones.registry import REGISTRY, resolve_backbone

__all__ = [
    "REGISTRY", "AttentionMismatch", "Backbone", "UnsupportedBackbone", "load_backbone", "probe_attention",
    "resolve_backbone", "set_attention",
]
