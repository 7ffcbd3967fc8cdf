"""Stand-ins for Dream's and LLaDA's remote code, and tiny checkpoints in their own formats.

Written into a checkpoint folder at test time (config.json with `auto_map`,
configuration_*.py, modeling_*.py, safetensors under the released key names),
so `trust_remote_code=True` loads them through transformers' real dynamic-module
machinery, offline. The modelling code is an independent plain-torch reading
of the released models' forward pass (not transformers' Llama/Qwen2 classes):
full attention that ignores masks and `is_causal` (as the released code does),
RoPE by rotate-half, RMSNorm in fp32, and for LLaDA `ff_out(silu(ff_proj(x)) *
up_proj(x))`. So comparing the native load with it checks the mapping's
semantics (a gate/up swap or a wrong RoPE base shows), not just its names.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

_COMMON = '''
import math
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast


class RMSNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        return self.weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


def rope(q, k, theta):
    dim, length = q.shape[-1], q.shape[-2]
    inv = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32, device=q.device) / dim)
    freqs = torch.outer(torch.arange(length, dtype=torch.float32, device=q.device), inv)
    emb = torch.cat([freqs, freqs], -1)
    cos, sin = emb.cos(), emb.sin()

    def rot(x):
        return torch.cat([-x[..., dim // 2:], x[..., : dim // 2]], -1)

    return (q * cos + rot(q) * sin).to(q.dtype), (k * cos + rot(k) * sin).to(k.dtype)


def full_attention(q, k, v, heads, kv_heads, theta):
    b, t, _ = q.shape
    hd = q.shape[-1] // heads
    q = q.view(b, t, heads, hd).transpose(1, 2)
    k = k.view(b, t, kv_heads, hd).transpose(1, 2)
    v = v.view(b, t, kv_heads, hd).transpose(1, 2)
    q, k = rope(q, k, theta)
    k = k.repeat_interleave(heads // kv_heads, 1)
    v = v.repeat_interleave(heads // kv_heads, 1)
    att = torch.softmax((q @ k.transpose(-1, -2)) / math.sqrt(hd), -1) @ v
    return att.transpose(1, 2).reshape(b, t, heads * hd)


def swiglu(gate, up, x, swap):
    return nn.functional.silu(up(x)) * gate(x) if swap else nn.functional.silu(gate(x)) * up(x)
'''

LLADA_CONFIG_PY = '''
from transformers import PretrainedConfig


class LLaDAConfig(PretrainedConfig):  # OLMo field names, with the same aliases as the released class
    model_type = "llada"

    @property
    def hidden_size(self):
        return self.d_model

    @property
    def num_attention_heads(self):
        return self.n_heads

    @property
    def num_hidden_layers(self):
        return self.n_layers
'''

LLADA_MODELING_PY = _COMMON + '''
from .configuration_llada import LLaDAConfig


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, hd = c.d_model, c.d_model // c.n_heads
        self.attn_norm, self.ff_norm = RMSNorm(d, c.rms_norm_eps), RMSNorm(d, c.rms_norm_eps)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, c.n_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, c.n_kv_heads * hd, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_proj = nn.Linear(d, c.mlp_hidden_size, bias=False)
        self.up_proj = nn.Linear(d, c.mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(c.mlp_hidden_size, d, bias=False)
        self.c = c

    def forward(self, x):
        h = self.attn_norm(x)
        a = full_attention(self.q_proj(h), self.k_proj(h), self.v_proj(h), self.c.n_heads, self.c.n_kv_heads,
                           self.c.rope_theta)
        x = x + self.attn_out(a)
        h = self.ff_norm(x)
        return x + self.ff_out(swiglu(self.ff_proj, self.up_proj, h, getattr(self.c, "standin_swap_mlp", False)))


class LLaDAModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(c.embedding_size or c.vocab_size, c.d_model),
            blocks=nn.ModuleList([Block(c) for _ in range(c.n_layers)]),
            ln_f=RMSNorm(c.d_model, c.rms_norm_eps),
            ff_out=nn.Linear(c.d_model, c.embedding_size or c.vocab_size, bias=False),
        ))


class LLaDAModelLM(PreTrainedModel):
    config_class = LLaDAConfig
    base_model_prefix = "model"

    def __init__(self, config):
        super().__init__(config)
        self.model = LLaDAModel(config)
        self.post_init()

    def _init_weights(self, module):
        pass

    def forward(self, input_ids=None, attention_mask=None, output_hidden_states=None, **kwargs):
        t = self.model.transformer
        x = t.wte(input_ids)
        states = [x]
        for block in t.blocks:  # the released code passes attn_mask=None, is_causal=False
            x = block(x)
            states.append(x)
        x = t.ln_f(x)
        states[-1] = x
        return CausalLMOutputWithPast(logits=t.ff_out(x), hidden_states=tuple(states) if output_hidden_states else None)
'''

DREAM_CONFIG_PY = '''
from transformers import PretrainedConfig


class DreamConfig(PretrainedConfig):
    model_type = "Dream"
'''

DREAM_MODELING_PY = _COMMON + '''
from .configuration_dream import DreamConfig


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, hd = c.hidden_size, c.hidden_size // c.num_attention_heads
        self.q_proj = nn.Linear(d, d, bias=True)
        self.k_proj = nn.Linear(d, c.num_key_value_heads * hd, bias=True)
        self.v_proj = nn.Linear(d, c.num_key_value_heads * hd, bias=True)
        self.o_proj = nn.Linear(d, d, bias=False)


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=False)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=False)


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self_attn, self.mlp = Attention(c), MLP(c)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.c = c

    def forward(self, x):
        c, at = self.c, self.self_attn
        h = self.input_layernorm(x)
        x = x + at.o_proj(full_attention(at.q_proj(h), at.k_proj(h), at.v_proj(h), c.num_attention_heads,
                                         c.num_key_value_heads, c.rope_theta))
        h = self.post_attention_layernorm(x)
        swap = getattr(c, "standin_swap_mlp", False)
        return x + self.mlp.down_proj(swiglu(self.mlp.gate_proj, self.mlp.up_proj, h, swap))


class DreamBaseModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList([Layer(c) for _ in range(c.num_hidden_layers)])
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class DreamModel(PreTrainedModel):
    config_class = DreamConfig
    base_model_prefix = "model"

    def __init__(self, config):
        super().__init__(config)
        self.model = DreamBaseModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module):
        pass

    def forward(self, input_ids=None, attention_mask=None, output_hidden_states=None, **kwargs):
        x = self.model.embed_tokens(input_ids)
        states = [x]
        for layer in self.model.layers:
            x = layer(x)
            states.append(x)
        x = self.model.norm(x)
        states[-1] = x
        return CausalLMOutputWithPast(logits=self.lm_head(x), hidden_states=tuple(states) if output_hidden_states else None)
'''

VOCAB = 96


def write_tokenizer(folder: Path, tokenizer_class: str | None = None, auto_map: dict | None = None) -> None:
    """A word-level tokenizer over w0..w90 plus specials (VOCAB ids), saved as tokenizer.json."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]
    vocab = {t: i for i, t in enumerate(specials + [f"w{i}" for i in range(VOCAB - len(specials))])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                 unk_token="<unk>", mask_token="<mask>")
    hf.save_pretrained(folder)
    if tokenizer_class or auto_map:
        cfg_file = folder / "tokenizer_config.json"
        cfg = json.loads(cfg_file.read_text())
        cfg.update({"tokenizer_class": tokenizer_class} if tokenizer_class else {})
        cfg.update({"auto_map": auto_map} if auto_map else {})
        cfg_file.write_text(json.dumps(cfg))


def _rand(gen, *shape, scale=0.2):
    return torch.randn(*shape, generator=gen) * scale


def llada_checkpoint(folder: Path, seed: int = 0, shards: int = 2, swap_mlp: bool = False,
                     dims: tuple = (32, 4, 2, 2, 48), **overrides) -> dict:
    """A tiny LLaDA checkpoint in LLaDA's own config format and key names; returns its state dict.

    dims = (d_model, n_heads, n_kv_heads, n_layers, mlp_hidden_size); LLaDA-8B's are (4096, 32, 32, 32, 12288).
    """
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    d, heads, kv, layers, mlp = dims
    scale = min(0.2, d ** -0.5)
    config = {
        "model_type": "llada", "architectures": ["LLaDAModelLM"],
        "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig", "AutoModel": "modeling_llada.LLaDAModelLM",
                     "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"},
        "d_model": d, "n_heads": heads, "n_kv_heads": kv, "n_layers": layers, "mlp_hidden_size": mlp,
        "mlp_ratio": 4, "vocab_size": VOCAB, "embedding_size": VOCAB, "max_sequence_length": 128,
        "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "rope": True, "alibi": False, "block_type": "llama",
        "activation_type": "silu", "layer_norm_type": "rms", "layer_norm_with_affine": True,
        "attention_layer_norm": False, "include_bias": False, "include_qkv_bias": False, "weight_tying": False,
        "block_group_size": 1, "input_emb_norm": False, "scale_logits": False, "rope_full_precision": True,
        "mask_token_id": 4, "eos_token_id": 2, "pad_token_id": 0, "use_cache": False,
        "standin_swap_mlp": swap_mlp, **overrides,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    (folder / "configuration_llada.py").write_text(LLADA_CONFIG_PY)
    (folder / "modeling_llada.py").write_text(LLADA_MODELING_PY)
    write_tokenizer(folder)
    g = torch.Generator().manual_seed(seed)
    sd = {"model.transformer.wte.weight": _rand(g, VOCAB, d, scale=1.0),
          "model.transformer.ln_f.weight": 1 + _rand(g, d),
          "model.transformer.ff_out.weight": _rand(g, VOCAB, d, scale=scale)}
    hd = d // heads
    for i in range(layers):
        p = f"model.transformer.blocks.{i}."
        sd.update({
            p + "attn_norm.weight": 1 + _rand(g, d), p + "ff_norm.weight": 1 + _rand(g, d),
            p + "q_proj.weight": _rand(g, d, d, scale=scale), p + "k_proj.weight": _rand(g, kv * hd, d, scale=scale),
            p + "v_proj.weight": _rand(g, kv * hd, d, scale=scale), p + "attn_out.weight": _rand(g, d, d, scale=scale),
            p + "ff_proj.weight": _rand(g, mlp, d, scale=scale), p + "up_proj.weight": _rand(g, mlp, d, scale=scale),
            p + "ff_out.weight": _rand(g, d, mlp, scale=scale),
        })
    _save_sharded(folder, sd, shards, save_file)
    return sd


def dream_checkpoint(folder: Path, seed: int = 0, swap_mlp: bool = False, dims: tuple = (32, 4, 2, 2, 48)) -> dict:
    """A tiny Dream checkpoint: Dream's config (model_type "Dream", auto_map) and Qwen2-style key names.

    dims = (hidden, heads, kv_heads, layers, intermediate); Dream-7B's are (3584, 28, 4, 28, 18944).
    """
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    d, heads, kv, layers, inter = dims
    scale = min(0.2, d ** -0.5)
    config = {
        "model_type": "Dream", "architectures": ["DreamModel"],
        "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
        "hidden_size": d, "num_attention_heads": heads, "num_key_value_heads": kv, "num_hidden_layers": layers,
        "intermediate_size": inter, "vocab_size": VOCAB, "max_position_embeddings": 256, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "rope_scaling": None, "hidden_act": "silu", "tie_word_embeddings": False,
        "use_sliding_window": False, "sliding_window": None, "attention_dropout": 0.0, "mask_token_id": 4,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "torch_dtype": "float32",
        "standin_swap_mlp": swap_mlp,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    (folder / "configuration_dream.py").write_text(DREAM_CONFIG_PY)
    (folder / "modeling_dream.py").write_text(DREAM_MODELING_PY)
    # Dream's tokenizer_config names its own class (tokenization_dream.py): native loading must not need it.
    write_tokenizer(folder, tokenizer_class="DreamTokenizer",
                    auto_map={"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]})
    g = torch.Generator().manual_seed(seed)
    hd = d // heads
    sd = {"model.embed_tokens.weight": _rand(g, VOCAB, d, scale=1.0), "model.norm.weight": 1 + _rand(g, d),
          "lm_head.weight": _rand(g, VOCAB, d, scale=scale)}
    for i in range(layers):
        p = f"model.layers.{i}."
        sd.update({
            p + "input_layernorm.weight": 1 + _rand(g, d), p + "post_attention_layernorm.weight": 1 + _rand(g, d),
            p + "self_attn.q_proj.weight": _rand(g, d, d, scale=scale), p + "self_attn.q_proj.bias": _rand(g, d),
            p + "self_attn.k_proj.weight": _rand(g, kv * hd, d, scale=scale), p + "self_attn.k_proj.bias": _rand(g, kv * hd),
            p + "self_attn.v_proj.weight": _rand(g, kv * hd, d, scale=scale), p + "self_attn.v_proj.bias": _rand(g, kv * hd),
            p + "self_attn.o_proj.weight": _rand(g, d, d, scale=scale),
            p + "mlp.gate_proj.weight": _rand(g, inter, d, scale=scale), p + "mlp.up_proj.weight": _rand(g, inter, d, scale=scale),
            p + "mlp.down_proj.weight": _rand(g, d, inter, scale=scale),
        })
    _save_sharded(folder, sd, 1, save_file)
    return sd


def _save_sharded(folder: Path, sd: dict, shards: int, save_file) -> None:
    if shards == 1:
        save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
        return
    keys = sorted(sd)
    weight_map = {}
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: sd[k].contiguous() for k in keys[i::shards]}
        save_file(part, str(folder / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    total = sum(t.numel() * t.element_size() for t in sd.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
