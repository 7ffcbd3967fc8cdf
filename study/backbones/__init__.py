"""Backbones, one module each: registry (names), index (pretrained builds by name), tiny (random-init configs),
loading (load_backbone: weights, tokenizer, attention direction), attention (the switch and its probe),
native (Dream/LLaDA as native Qwen2/Llama), gguf (weights shipped as GGUF), verify (`study verify-backbone`).

Nothing is imported here, so importing one of them (config.py reads attention.ATTENTIONS) never loads the rest.
"""
