"""Attention metrics: how far, in which direction and how spread out each query attends, per layer.

`attention_metrics` is a pure function of attention probabilities `att` [batch, heads, T, T] (row i: query
position i, a distribution over the T key positions) and a padding mask [batch, T] (1 = real token; queries
and keys are the same tokens). With a_ij the probability of valid query i on valid key j, d = j - i:

  far_mass_D<D>      sum of a_ij over |d| > D   (the paper: D = 1000; 0 when the document has <= D + 1
                     tokens, as no key is that far: the row's `length` says which case it is)
  forward_mass_<N>   sum over 1 <= d <= N       (the N keys just after the query; exactly 0 under causal attention)
  backward_mass_<N>  sum over -N <= d <= -1     (the N keys just before it; the paper: N = 50)
  forward_mass       sum over d >= 1            (all later keys)
  self_mass          a_ii
  entropy            -sum_j a_ij ln a_ij, in nats
  entropy_norm       entropy / ln(n_i), n_i = the keys query i may attend to (all valid keys; under causal
                     attention those with j <= i): 1 = uniform over what it can see, 0 = one key. Queries with
                     n_i = 1 (the first token under causal attention) have no spread to measure and are left out.

Each is a mean over valid queries and heads (every query weighs the same). `layer_attention_metrics` runs a
model once and reduces each layer's map inside a forward hook, so only one [batch, heads, T, T] map is alive
at a time (memory O(heads x T^2), not O(layers x heads x T^2) as with output_attentions=True).
"""

from __future__ import annotations

import torch
from transformers.utils.output_capturing import OutputRecorder


def attention_metrics(att: torch.Tensor, mask: torch.Tensor | None = None, *, distances=(1000,), near: int = 50,
                      causal: bool = False) -> dict[str, float]:
    """att [batch, heads, T, T] attention probabilities, mask [batch, T] -> the metrics of the module docstring."""
    if att.dim() != 4 or att.shape[-1] != att.shape[-2]:
        raise ValueError(f"attention of shape {tuple(att.shape)}; expected [batch, heads, T, T]")
    b, heads, t, _ = att.shape
    valid = torch.ones(b, t, dtype=torch.bool, device=att.device) if mask is None else mask.to(att.device).bool()
    if not valid.any():
        raise ValueError("the mask leaves no valid token")
    att = att.float()  # padding keys carry no mass (the model masks them); padding queries are left out below
    n_queries = heads * valid.sum()

    # Mass by offset d = key - query, summed over documents, heads and valid queries (one bincount, O(T^2)).
    pos = torch.arange(t, device=att.device)
    offset = (pos.view(1, -1) - pos.view(-1, 1)) + (t - 1)  # [query, key], shifted to >= 0
    per_pair = (att.sum(1) * valid[:, :, None]).sum(0)  # [query, key]
    by_offset = torch.bincount(offset.flatten(), weights=per_pair.flatten().double(), minlength=2 * t - 1)
    by_offset = by_offset / n_queries
    d = torch.arange(-(t - 1), t, device=att.device)
    out = {
        f"forward_mass_{near}": by_offset[(d >= 1) & (d <= near)].sum().item(),
        f"backward_mass_{near}": by_offset[(d <= -1) & (d >= -near)].sum().item(),
        "self_mass": by_offset[d == 0].sum().item(),
        "forward_mass": by_offset[d >= 1].sum().item(),
    }
    for dist in distances:
        out[f"far_mass_D{dist}"] = by_offset[d.abs() > dist].sum().item()

    entropy = torch.special.entr(att).sum(-1)  # [batch, heads, T]; entr(0) = 0
    out["entropy"] = ((entropy * valid[:, None]).sum() / n_queries).item()
    visible = valid.cumsum(-1) if causal else valid.sum(-1, keepdim=True).expand(b, t)  # n_i per query
    spread = valid & (visible > 1)
    normalised = entropy / visible.clamp_min(2).log()[:, None]
    out["entropy_norm"] = ((normalised * spread[:, None]).sum() / (heads * spread.sum()).clamp_min(1)).item()
    return out


@torch.inference_mode()
def layer_attention_metrics(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, causal: bool,
                            **kw) -> list[dict[str, float]]:
    """Run `model` (a transformers model, PEFT-wrapped or not) once under eager attention: per attention layer,
    in call order (= layer index), `attention_metrics` of its probabilities with `attention_mask`."""
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model
    results = []

    def reduce(module, args, output, index):
        weights = output[index] if isinstance(output, tuple) else None
        if weights is None:
            raise RuntimeError(f"{type(module).__name__} returned no attention weights (attention implementation "
                               f"{hf.config._attn_implementation!r}; the metrics need 'eager')")
        results.append(attention_metrics(weights, attention_mask, causal=causal, **kw))

    handles = [m.register_forward_hook(lambda mod, a, o, i=index: reduce(mod, a, o, i))
               for m, index in attention_modules(hf)]
    previous = hf.config._attn_implementation
    hf.set_attn_implementation("eager")  # sdpa and flash attention never materialise the probabilities
    try:
        model(input_ids=input_ids, attention_mask=attention_mask)
    finally:
        hf.set_attn_implementation(previous)
        for h in handles:
            h.remove()
    return results


def attention_modules(model) -> list[tuple[torch.nn.Module, int]]:
    """(module, index of the weights in its output) for each self-attention module, as transformers itself finds
    them for output_attentions (each model class's `_can_record_outputs["attentions"]`)."""
    specs = []
    for m in model.modules():
        spec = (getattr(type(m), "_can_record_outputs", None) or {}).get("attentions")
        specs += [_recorder(s) for s in (spec if isinstance(spec, list) else [spec]) if s is not None]
    found = []
    for name, m in model.named_modules():
        for s in specs:
            cls = isinstance(m, s.target_class) if s.target_class else type(m).__name__.endswith(s.class_name)
            if cls and (s.layer_name is None or f".{s.layer_name.strip('.')}." in f".{name}."):
                found.append((m, s.index))
                break
    if not found:
        raise RuntimeError(f"no attention modules found in {type(model).__name__} (model_type "
                           f"{getattr(model.config, 'model_type', '?')!r}): it declares none in _can_record_outputs")
    return found


def _recorder(spec) -> OutputRecorder:
    # _can_record_outputs entries: a class, a class name, or an OutputRecorder; weights are output[1] by default
    if isinstance(spec, OutputRecorder):
        return spec
    if isinstance(spec, str):
        return OutputRecorder(target_class=None, index=1, class_name=spec)
    return OutputRecorder(target_class=spec, index=1)
