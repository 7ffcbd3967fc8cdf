"""Pretrain matched tiny backbones offline: autoregressive vs masked diffusion (+ LLM2Vec MNTP adaptation).

    config.py      typed `study pretrain` config, cache key, default names
    corpus.py      the offline pretraining corpus (GCIDE, KJV, Brown), built once and cached
    objectives.py  the losses (next-token, MDLM/LLaDA 1/t-weighted masked, MNTP)
    run.py         cached build: model, data order, training loop, W&B run + artifact, results table

Builds are found by name through study/backbones/index.py (the backbone index), which the registry reads.
"""

from study.pretrain.config import load_pretrain_config
from study.pretrain.run import pretrain

__all__ = ["load_pretrain_config", "pretrain"]
