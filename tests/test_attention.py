"""Causality probes: the attention switch works for every supported family, impl and padding side."""

import pytest
import torch

from study.backbones.attention import (
    AttentionMismatch,
    UnsupportedBackbone,
    probe_attention,
    set_attention,
    verify_attention,
)
from study.backbones.tiny import tiny_config

FAMILIES = ["qwen2", "llama", "mistral", "qwen3", "gemma3", "bert"]


def build(family, attention, impl, tokenizer):
    from transformers import AutoModel

    cfg = tiny_config(family, tokenizer, num_hidden_layers=2, hidden_size=64, intermediate_size=128,
                      **({"head_dim": 16} if family in ("qwen3", "gemma3") else {}))
    set_attention(cfg, attention)
    torch.manual_seed(0)
    return AutoModel.from_config(cfg, attn_implementation=impl).eval()


def pad_batch(seqs, side, pad_id=0):
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        sl = slice(width - len(s), width) if side == "left" else slice(0, len(s))
        ids[i, sl] = torch.tensor(s)
        mask[i, sl] = 1
    return ids, mask


def real_positions(mask_row):
    return mask_row.nonzero().flatten()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("attention", ["bidirectional", "causal"])
def test_causality_probe_and_padding_invariance(family, impl, side, attention, fake_tokenizer):
    if family == "bert" and side == "left":
        pytest.skip("BERT has absolute positions: it must pad on the right")
    model = build(family, attention, impl, fake_tokenizer)
    g = torch.Generator().manual_seed(1)
    seq = torch.randint(10, 500, (9,), generator=g).tolist()
    changed = seq[:-1] + [(seq[-1] + 7) % 490 + 10]
    short = seq[:5]
    ids, mask = pad_batch([seq, changed, short], side)
    with torch.no_grad():
        h = model(input_ids=ids, attention_mask=mask).last_hidden_state
        alone = model(input_ids=torch.tensor([short]), attention_mask=torch.ones(1, 5, dtype=torch.long)).last_hidden_state
    first = [real_positions(mask[i])[0] for i in range(3)]
    delta0 = (h[0, first[0]] - h[1, first[1]]).abs().max().item()
    if attention == "bidirectional":
        assert delta0 > 1e-3, "position 0 must see the last token under bidirectional attention"
    else:
        assert delta0 < 1e-5, "position 0 must not see later tokens under causal attention"
    # Every position except the changed one differs only if it may look right.
    deltas = (h[0, real_positions(mask[0])] - h[1, real_positions(mask[1])]).abs().amax(-1)
    assert (deltas[:-1] > 1e-3).all() if attention == "bidirectional" else (deltas[:-1] < 1e-5).all()
    # Padding invariance: the padded short row equals the same sequence run alone.
    torch.testing.assert_close(h[2, real_positions(mask[2])], alone[0], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["qwen2", "bert"])
def test_probe_reports_direction_and_verify_refuses_mismatch(family, fake_tokenizer):
    causal = build(family, "causal", "sdpa", fake_tokenizer)
    bidir = build(family, "bidirectional", "sdpa", fake_tokenizer)
    assert probe_attention(causal, len(fake_tokenizer)) == "causal"
    assert probe_attention(bidir, len(fake_tokenizer)) == "bidirectional"
    with pytest.raises(AttentionMismatch, match="'bidirectional' was requested.*causal"):
        verify_attention(causal, len(fake_tokenizer), "bidirectional")


def test_direction_survives_save_and_load(tmp_path, fake_tokenizer):
    from transformers import AutoModel

    build("qwen2", "bidirectional", "sdpa", fake_tokenizer).save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path)
    assert probe_attention(reloaded, len(fake_tokenizer)) == "bidirectional"


def test_unsupported_model_type_fails_loudly():
    from transformers import GPT2Config

    with pytest.raises(UnsupportedBackbone, match="'gpt2' is not supported.*qwen2"):
        set_attention(GPT2Config(), "bidirectional")
