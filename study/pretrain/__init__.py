"""Pretrain matched tiny backbones offline: autoregressive vs masked diffusion (+ LLM2Vec MNTP adaptation).

    config.py      typed `study pretrain` config, cache key, default names
    objectives.py  the losses (next-token, MDLM/LLaDA 1/t-weighted masked, MNTP)
    run.py         cached build: model, data order, training loop, W&B run + artifact, results table
    store.py       cache folders, the name index, lineage (read by the backbone registry and loader)

Imports stay lazy: the registry reads `store` while validating configs.
"""


def load_pretrain_config(config_file=None, overrides=()):
    from study.pretrain.config import load_pretrain_config as load

    return load(config_file, overrides)


def pretrain(cfg):
    from study.pretrain.run import pretrain as run

    return run(cfg)
