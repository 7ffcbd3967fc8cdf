"""Attention metrics (study/attention_metrics.py): exact values on attention maps whose answers are known, and
the per-layer hook run against transformers' own output_attentions."""

import math

import pytest
import torch

from study.attention_metrics import attention_metrics, layer_attention_metrics
from study.backbones.attention import configured_attention

T = 10


def uniform(t: int, causal: bool = False) -> torch.Tensor:
    """[1, 1, t, t]: each query spreads its attention evenly over the keys it can see."""
    allowed = torch.tril(torch.ones(t, t)) if causal else torch.ones(t, t)
    return (allowed / allowed.sum(-1, keepdim=True))[None, None]


def test_uniform_bidirectional_map_has_the_counted_shares_and_full_entropy():
    m = attention_metrics(uniform(T), distances=[3, T], near=2)
    # Keys with |j - i| > 3: max(0, i-3) before + max(0, T-1-i-3) after; summed over i: 2 * (6*7/2) = 42 of T*T.
    assert m["far_mass_D3"] == pytest.approx(42 / T**2)
    assert m["far_mass_D10"] == 0  # no key is that far in 10 tokens
    # Within 2 after: min(2, T-1-i) keys of T; summed over i: 2*8 + 1 + 0 = 17.
    assert m["forward_mass_2"] == pytest.approx(17 / T**2) == pytest.approx(m["backward_mass_2"])
    assert m["forward_mass"] == pytest.approx((T - 1) / 2 / T) and m["self_mass"] == pytest.approx(1 / T)
    assert m["entropy"] == pytest.approx(math.log(T)) and m["entropy_norm"] == pytest.approx(1)


def test_causal_map_has_exactly_zero_forward_mass_and_entropy_normalised_by_visible_keys():
    m = attention_metrics(uniform(T, causal=True), distances=[3], near=2, causal=True)
    assert m["forward_mass"] == 0 and m["forward_mass_2"] == 0
    assert m["backward_mass_2"] > 0
    # Query i sees i+1 keys: entropy ln(i+1); normalised by what it sees, every query (but the first) is uniform.
    assert m["entropy"] == pytest.approx(sum(math.log(i + 1) for i in range(T)) / T)
    assert m["entropy_norm"] == pytest.approx(1)
    # The same map judged as bidirectional: ln(i+1)/ln(T) < 1 -- the flag matters.
    assert attention_metrics(uniform(T, causal=True))["entropy_norm"] < 0.9


def test_one_hot_rows_have_zero_entropy():
    diagonal = torch.eye(T)[None, None].repeat(1, 3, 1, 1)
    m = attention_metrics(diagonal, distances=[1])
    assert m["entropy"] == 0 and m["entropy_norm"] == 0 and m["self_mass"] == 1 and m["far_mass_D1"] == 0
    first = torch.zeros(1, 1, T, T)
    first[..., 0] = 1  # every query on the first token (an attention sink)
    m = attention_metrics(first, distances=[5], near=3)
    assert m["entropy"] == 0 and m["forward_mass"] == 0
    assert m["far_mass_D5"] == pytest.approx(4 / T)  # queries 6..9 are more than 5 tokens from it


def test_padding_is_ignored():
    short = attention_metrics(uniform(6), distances=[2], near=2)
    padded = torch.rand(2, 1, T, T)  # garbage on padding query rows
    padded[1, :, :6, :] = 0
    padded[1, :, :6, :6] = uniform(6)[0]
    padded[0] = uniform(T)[0]
    mask = torch.tensor([[1] * T, [1] * 6 + [0] * 4])
    both = attention_metrics(padded, mask, distances=[2], near=2)
    full = attention_metrics(uniform(T), distances=[2], near=2)
    for key in short:  # every query weighs the same: 10 from the first document, 6 from the second
        expected = (T * full[key] + 6 * short[key]) / (T + 6)
        assert both[key] == pytest.approx(expected), key


def test_bad_shapes_and_empty_masks_raise():
    with pytest.raises(ValueError, match="expected"):
        attention_metrics(torch.ones(2, 3, 4))
    with pytest.raises(ValueError, match="no valid token"):
        attention_metrics(uniform(4), torch.zeros(1, 4))


@pytest.mark.parametrize("backbone", ["tiny-qwen2", "tiny-bert"])
@pytest.mark.parametrize("attention", ["causal", "bidirectional"])
def test_layer_hooks_match_output_attentions(backbone, attention):
    from study.backbones.loading import load_backbone
    from study.config import load_config

    cfg = load_config(None, [f"model.backbone={backbone}", f"model.attention={attention}"])
    model = load_backbone(cfg.model, seed=0).model.eval()
    assert configured_attention(model.config) == attention  # what the probe uses to normalise entropy
    ids = torch.randint(10, 100, (2, 24), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 18:] = 0  # right padding
    kw = dict(distances=[4], near=3, causal=attention == "causal")
    per_layer = layer_attention_metrics(model, ids, mask, **kw)
    assert model.config._attn_implementation == "sdpa"  # restored after the probe

    model.set_attn_implementation("eager")
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    assert len(per_layer) == len(reference) == model.config.num_hidden_layers
    for got, att in zip(per_layer, reference):
        assert got == pytest.approx(attention_metrics(att, mask, **kw))
    forward = [m["forward_mass"] for m in per_layer]
    if attention == "causal":
        assert max(forward) == 0
    else:
        assert min(forward) > 0.2
