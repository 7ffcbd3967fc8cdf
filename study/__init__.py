"""Embedding ablation study: does bidirectional attention help long-context text embeddings?

The data flow, one module each:
config -> backbones (registry, loading, attention) -> pooling -> losses -> module/train
-> tasks + evaluate -> results + tracking; sweep dispatches runs; analysis reads results.
"""

__version__ = "0.1.0"
