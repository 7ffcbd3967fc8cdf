"""`study verify-backbone NAME`: a Dream/LLaDA checkpoint loaded natively (backbones/native.py) against its own
remote code, both through load_backbone, compared on their last hidden states."""

from __future__ import annotations

import gc

import torch

from study.backbones.attention import probe_attention
from study.backbones.loading import load_backbone
from study.backbones.native import compare_hidden, last_hidden
from study.config import load_config
from study.errors import ConfigError

VERIFY_TEXT = (
    "Given a question, retrieve passages that answer it: what is the passkey hidden in the long document? "
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
)


def verify_backbone(name: str, dtype: str = "float32", device: str | None = None) -> dict:
    """Load `name` natively and with its own remote code (both bidirectional) and compare last hidden states.

    Both loads go through load_backbone, i.e. exactly what training uses,
    one after the other (a 7B model in fp32 needs ~32 GB, not twice that).
    Input: a fixed English text plus 16 fixed random ids, unpadded.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    overrides = [f"model.backbone={name}", "model.attention=bidirectional", f"model.dtype={dtype}"]
    result, hidden = {}, []
    for side, extra in (("native", []), ("remote", ["model.trust_remote_code=true"])):
        bb = load_backbone(load_config(overrides=overrides + extra).model)
        if side == "native":
            result["kind"] = getattr(bb.model.config, "native_mapping", None)
            if not result["kind"]:
                raise ConfigError(
                    f"model.backbone={name!r} is not a Dream or LLaDA checkpoint (model_type "
                    f"{bb.info['model_type']!r}); verify-backbone compares their native load with their remote code")
            vocab = len(bb.tokenizer)
            text_ids = bb.tokenizer(VERIFY_TEXT, return_tensors="pt").input_ids[0]
            extra_ids = torch.randint(min(16, vocab // 2), vocab, (16,), generator=torch.Generator().manual_seed(0))
            ids = torch.cat([text_ids, extra_ids]).unsqueeze(0)
        model = bb.model.to(device).eval()
        hidden.append(last_hidden(model, ids))
        result[f"{side}_attention"] = probe_attention(model, vocab)
        del bb, model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    result.update(compare_hidden(*hidden), tokens=ids.shape[1], dtype=dtype, device=str(device))
    return result
