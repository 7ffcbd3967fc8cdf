"""Embedding ablation study: does bidirectional attention help long-context text embeddings?

The data flow, one job per module (imports at the top of each show what it depends on):

    cli -> config (one loader: config.load_structured; errors in errors.py)
        -> backbones/ (registry, index, loading, attention) -> model (+ pooling, inputs) -> module + losses
        -> train (Lightning) -> inference (save, load, evaluate an embedder) -> tasks/ + evaluate
        -> results (identity, schema, tables) + tracking (W&B runs)
    sweep/ dispatches runs (Optuna); pretrain/ builds the tiny backbones; analysis/ reads results tables.
"""

__version__ = "0.1.0"
