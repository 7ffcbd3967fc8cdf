"""`study plan SPEC_OR_CONFIG` (and `study sweep SPEC --plan`): what a sweep or a run will cost, before it runs.

For each cell: model size, tokens, FLOPs for training and evaluation, wall time and GPU-hours on a named
GPU at a stated utilisation, and memory per GPU for the chosen strategy. Nothing is downloaded or built:

Parameters are counted on the model built from its config on torch.device("meta") (no weights, no
memory). The config comes from the tiny-model recipe, a local folder, the Hugging Face cache, or, for the
registered 7B backbones offline, their published shapes (ARCHITECTURES). N = non-embedding parameters
(the matmul weights); the embedding table is a lookup and costs no FLOPs.

Training FLOPs of a trial (L layers, attention width d = heads x head_dim, sequence length T):

    per token, matmuls:    2·N per pass; passes = forward (1) + backward to activations (1)
                           + backward to weights (1 for full fine-tuning, 0 with LoRA: frozen weights get no
                             gradient) + recomputed forward (1 with gradient checkpointing)
                           so 6·N·tokens for full fine-tuning (the usual 6N) and for LoRA + checkpointing,
                           plus LoRA's own weights: 2·N_lora·(3 + checkpointing) per token
    per sequence, attention: 4·L·T²·d per forward (QKᵀ and AV over the whole T x T, what bidirectional
                           attention and padded sdpa batches compute), backward 2x forward: 12·L·T²·d,
                           16·L·T²·d with checkpointing
    tokens per step:       global batch x (query_tokens + (1 + data.hard_negatives) x doc_tokens), global
                           batch = trainer.batch_size x accumulate_grad_batches x devices x num_nodes;
                           batches are padded to their longest text, so doc_tokens defaults to
                           model.max_length (an upper bound: pass --doc-tokens for the data's real lengths)

Evaluation FLOPs: forward only, 2·N·T + 4·L·T²·d per text, for every document (truncated at the eval
length limit) and query of every task: synthetic tasks from eval.lengths x num_docs / num_queries;
LongEmbed and mteb tasks from mteb's descriptive statistics (characters / 4 = tokens, a document of
average length standing for all); other tasks are listed as not estimated.

Time = FLOPs / (peak x utilisation x GPUs); evaluation runs on rank 0 alone while the other GPUs of the
trial wait, so GPU-hours = (train time + eval time) x GPUs. Peaks are dense bf16 tensor-core TFLOP/s
(PEAK_TFLOPS); `--gpu cpu` measures this machine's matmul instead.

Memory per GPU: weights (model.dtype) + trainable weights, gradients and AdamW states (LoRA adapters in
fp32: 16 bytes a parameter; full fine-tuning: 16 bytes in fp32, 8 in bf16) + activations of one micro-batch,
in the compute dtype, assuming a fused attention kernel (no T x T matrix; eager attention adds it):
per token and layer 6·d_model + 2·d_kv + 4·I values are kept (norm inputs/outputs, q, k, v, attention
output, the MLP's gate, up, activation and product); with gradient checkpointing only each layer's input
(d_model values) plus one layer's set during its recomputation. FSDP divides weights, gradients and
optimizer states by the number of GPUs; DDP keeps a full copy on each. Not counted: the CUDA context,
allocator fragmentation and temporary buffers (budget 2-4 GB).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from study.backbones.registry import resolve_backbone
from study.backbones.tiny import tiny_config
from study.backbones.tokenizer import tiny_tokenizer
from study.bench import matmul_peak
from study.config import load_config
from study.errors import ConfigError
from study.launch import devices_count
from study.precision import resolve_precision
from study.sweep.spec import load_spec

# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, and memory in GB.
PEAK_TFLOPS = {"h100": ("H100 SXM", 989.0, 80), "h200": ("H200", 989.0, 141), "a100": ("A100 80GB", 312.0, 80),
               "l40s": ("L40S", 362.0, 48), "cpu": ("this CPU (measured)", None, None)}
CHARS_PER_TOKEN = 4
QUERY_TOKENS = 64
SYNTHETIC_QUERY_TOKENS = 32
# Published config.json shapes of the registered 7B backbones, for planning without the hub.
ARCHITECTURES = {
    "qwen2.5-7b": ("qwen2", dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                 num_attention_heads=28, num_key_value_heads=4, vocab_size=152064)),
    "dream-7b": ("qwen2", dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                               num_attention_heads=28, num_key_value_heads=4, vocab_size=152064)),
    "mistral-7b": ("mistral", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                   num_attention_heads=32, num_key_value_heads=8, vocab_size=32000)),
    "llama3-8b": ("llama", dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                num_attention_heads=32, num_key_value_heads=8, vocab_size=128256)),
    "llada-8b": ("llama", dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=32,
                               num_attention_heads=32, num_key_value_heads=32, vocab_size=126464)),
}
LONGEMBED_MTEB = {"narrativeqa": "LEMBNarrativeQARetrieval", "qmsum": "LEMBQMSumRetrieval",
                  "2wikimqa": "LEMBWikimQARetrieval", "summ_screen_fd": "LEMBSummScreenFDRetrieval",
                  "passkey": "LEMBPasskeyRetrieval", "needle": "LEMBNeedleRetrieval"}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Arch:
    """What the cost formulas need of a model."""
    name: str
    layers: int
    hidden: int  # d_model
    attn_width: int  # heads x head_dim
    kv_width: int  # kv heads x head_dim
    intermediate: int
    heads: int
    params: int  # all parameters of the backbone (no LM head)
    embedding_params: int
    lora_params: int = 0

    @property
    def matmul_params(self) -> int:
        return self.params - self.embedding_params


# ---------------------------------------------------------------- model size from a config


def _hf_config(model_cfg):
    """The backbone's transformers config, from the tiny recipe, a folder, the HF cache or ARCHITECTURES."""
    import transformers


    spec = resolve_backbone(model_cfg.backbone)
    if spec.is_tiny:

        return tiny_config(spec.source.split(":", 1)[1], tiny_tokenizer())
    if Path(spec.source).is_dir():
        return transformers.AutoConfig.from_pretrained(spec.source)
    if spec.name in ARCHITECTURES:
        family, shape = ARCHITECTURES[spec.name]
        return transformers.AutoConfig.for_model(family, **shape)
    try:
        return transformers.AutoConfig.from_pretrained(spec.source, local_files_only=True)
    except OSError:
        raise ConfigError(f"model.backbone={model_cfg.backbone!r}: no config for it offline (not in the Hugging "
                          "Face cache); download its config.json once or pass a local folder") from None


def arch_of(model_cfg) -> Arch:
    """Parameter counts from the model built on the meta device, and the shapes the formulas use."""
    import torch
    from transformers import AutoModel

    config = _hf_config(model_cfg)
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    embedding = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    lora = 0
    if model_cfg.lora.r > 0:
        targets = set(model_cfg.lora.target_modules)
        lora = sum(model_cfg.lora.r * (m.in_features + m.out_features) for n, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in targets)
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return Arch(model_cfg.backbone, config.num_hidden_layers, config.hidden_size, heads * head_dim,
                kv_heads * head_dim, config.intermediate_size, heads, params, embedding, lora)


# ---------------------------------------------------------------- FLOPs


def forward_flops(arch: Arch, length: int) -> float:
    """One text of `length` tokens through the backbone: matmuls + attention."""
    return 2 * arch.matmul_params * length + 4 * arch.layers * length**2 * arch.attn_width


def train_flops(arch: Arch, texts_per_step: list[tuple[int, int]], steps: int, lora: bool,
                checkpointing: bool) -> dict:
    """FLOPs of `steps` optimizer steps; texts_per_step: (count, tokens) of the texts in one global batch."""
    tokens = steps * sum(n * t for n, t in texts_per_step)
    passes = 2 + (0 if lora else 1) + (1 if checkpointing else 0)
    matmul = 2 * arch.matmul_params * tokens * passes + 2 * arch.lora_params * tokens * (3 + checkpointing)
    attention = steps * sum(n * 4 * arch.layers * t**2 * arch.attn_width for n, t in texts_per_step) \
        * (3 + checkpointing)
    return {"tokens": tokens, "matmul": matmul, "attention": attention, "total": matmul + attention}


def eval_texts(cfg: DictConfig) -> tuple[list[tuple[int, int]], list[str]]:
    """(count, tokens) of every text the evaluation encodes, and the tasks whose size is unknown offline."""
    limit = cfg.eval.max_length or int(max(cfg.eval.lengths) * 1.1)
    texts, unknown = [], []
    for name in cfg.eval.tasks:
        kind, _, arg = name.partition(":")
        if kind in ("passkey", "needle") and not arg:
            for n in cfg.eval.lengths:
                texts += [(cfg.eval.num_docs, min(n, limit)), (cfg.eval.num_queries, SYNTHETIC_QUERY_TOKENS)]
        elif kind == "longembed" and arg in LONGEMBED_MTEB or kind == "mteb":
            got = _mteb_texts(LONGEMBED_MTEB.get(arg, arg), limit)
            texts += got if got else []
            if not got:
                unknown.append(name)
        else:
            unknown.append(name)
    return texts, unknown


def _mteb_texts(task_name: str, limit: int) -> list[tuple[int, int]]:
    """Documents and queries of an mteb task from its shipped descriptive statistics (offline)."""
    import mteb  # lazy: a heavy import, only for mteb/LongEmbed names

    task = mteb.get_task(task_name)
    stats = task.metadata.descriptive_stats or {}
    out = []
    for split in task.metadata.eval_splits:
        s = stats.get(split) or {}
        for key in ("documents_text_statistics", "queries_text_statistics"):
            t = s.get(key) or {}
            if t.get("average_text_length"):
                count = round(t["total_text_length"] / t["average_text_length"])
                out.append((count, min(limit, math.ceil(t["average_text_length"] / CHARS_PER_TOKEN))))
    return out


# ---------------------------------------------------------------- memory


def memory_per_gpu(arch: Arch, cfg: DictConfig, micro_texts: list[tuple[int, int]], world: int,
                   weight_dtype: str) -> dict:
    """Bytes per GPU: weights, trainable state (weights + grads + AdamW), activations of one micro-batch."""
    shards = world if cfg.trainer.strategy == "fsdp" else 1
    wbytes = DTYPE_BYTES[weight_dtype]
    weights = arch.params * wbytes / shards
    if cfg.model.lora.r > 0:
        trainable = arch.lora_params * 16 / shards  # fp32 adapters: weight, grad, AdamW m and v
    else:
        trainable = arch.params * (wbytes + (8 if wbytes == 4 else 4)) / shards  # grads + AdamW m, v
    act_bytes = 4 if cfg.trainer.precision == "32-true" or (cfg.trainer.precision == "auto"
                                                             and cfg.trainer.accelerator == "cpu") else 2
    per_layer = 6 * arch.hidden + 2 * arch.kv_width + 4 * arch.intermediate  # values per token
    tokens = sum(n * t for n, t in micro_texts)
    # Eager attention keeps scores and probabilities, heads x T x T per text and layer.
    scores = sum(n * 2 * arch.heads * t * t for n, t in micro_texts) if cfg.model.attn_implementation == "eager" else 0
    if cfg.model.gradient_checkpointing:
        activations = (arch.layers * arch.hidden * tokens + per_layer * tokens + scores) * act_bytes
    else:
        activations = arch.layers * (per_layer * tokens + scores) * act_bytes
    return {"weights": weights, "trainable": trainable, "activations": activations,
            "total": weights + trainable + activations}


# ---------------------------------------------------------------- one cell, a file, the table


@dataclass
class CellPlan:
    label: str
    arch: Arch
    world: int
    global_batch: int
    train: dict
    eval_flops: float
    eval_tokens: int
    unknown_tasks: list[str]
    train_seconds: float
    eval_seconds: float
    memory: dict
    gpu_memory_gb: float | None
    notes: list[str] = field(default_factory=list)

    @property
    def gpu_hours(self) -> float:
        return (self.train_seconds + self.eval_seconds) * self.world / 3600


def peak_flops(gpu: str, cfg: DictConfig | None = None) -> float:
    """FLOP/s at 100% for one device: the table's bf16 peak, or a measured matmul on this CPU."""
    if gpu not in PEAK_TFLOPS:
        raise ConfigError(f"--gpu {gpu!r} is not known; choose one of: {', '.join(PEAK_TFLOPS)}")
    peak = PEAK_TFLOPS[gpu][1]
    if peak is not None:
        return peak * 1e12
    import torch


    bf16 = resolve_precision(cfg.trainer.precision if cfg is not None else "auto", "cpu") != "32-true"
    return matmul_peak(dtype=torch.bfloat16 if bf16 else torch.float32) * 1e9


def _weight_dtype(cfg: DictConfig) -> str:

    if cfg.model.dtype != "auto":
        return cfg.model.dtype
    dtype = resolve_backbone(cfg.model.backbone).dtype
    return dtype if dtype in DTYPE_BYTES else "float32"


def plan_config(cfg: DictConfig, gpu: str = "h100", utilization: float = 0.4, query_tokens: int = QUERY_TOKENS,
                doc_tokens: int | None = None, label: str = "", peak: float | None = None) -> CellPlan:

    if not 0 < utilization <= 1:
        raise ConfigError(f"--utilization {utilization} must be in (0, 1]")
    t = cfg.trainer
    devices = devices_count(t.devices, t.accelerator if gpu == "cpu" else "gpu")
    world = devices * t.num_nodes
    arch = arch_of(cfg.model)
    doc = min(doc_tokens or cfg.model.max_length, cfg.model.max_length)
    query = min(query_tokens, cfg.model.max_length)
    docs_per_query = 1 + cfg.data.hard_negatives
    micro = t.batch_size
    global_batch = micro * t.accumulate_grad_batches * world
    train = train_flops(arch, [(global_batch, query), (global_batch * docs_per_query, doc)], t.max_steps,
                        lora=cfg.model.lora.r > 0, checkpointing=cfg.model.gradient_checkpointing)
    texts, unknown = eval_texts(cfg)
    evaluation = sum(n * forward_flops(arch, tokens) for n, tokens in texts)
    rate = (peak or peak_flops(gpu, cfg)) * utilization
    memory = memory_per_gpu(arch, cfg, [(micro, query), (micro * docs_per_query, doc)], world, _weight_dtype(cfg))
    notes = [f"trainer.devices={t.devices} counted as {devices}"] if str(t.devices) in ("auto", "-1") else []
    return CellPlan(label or cfg.model.backbone, arch, world, global_batch, train, evaluation,
                    sum(n * tokens for n, tokens in texts), unknown, train["total"] / (rate * world),
                    evaluation / rate, memory, PEAK_TFLOPS[gpu][2], notes)


def is_sweep_file(path: Path) -> bool:
    raw = OmegaConf.load(path)
    return isinstance(raw, DictConfig) and any(k in raw for k in ("space", "sampler", "seeds", "objective", "recipe",
                                                                   "base"))


def plan_file(path: str | Path, overrides: list[str] = (), gpu: str = "h100", utilization: float = 0.4,
              query_tokens: int = QUERY_TOKENS, doc_tokens: int | None = None) -> list[CellPlan]:
    """One CellPlan per grid cell of a sweep file (its base for tpe/random), or one for a run config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"'{path}' does not exist (give a sweep file or a `study train --config` file)")
    kw = dict(gpu=gpu, utilization=utilization, query_tokens=query_tokens, doc_tokens=doc_tokens)
    if not is_sweep_file(path):
        cfg = load_config(path, overrides)
        return [plan_config(cfg, **kw, peak=peak_flops(gpu, cfg))]

    spec = load_spec(path)
    cells = spec.cells() if spec.grid else [{"seed": spec.seeds[0]}]
    peak = None
    out = []
    for params in cells:
        cfg = load_config(None, spec.overrides(params) + list(overrides))
        peak = peak or peak_flops(gpu, cfg)
        out.append(plan_config(cfg, **kw, label=" ".join(spec.tags(params)), peak=peak))
    if not spec.grid:
        out[0].notes.append(f"sampler={spec.sampler}: one trial shown (from base); n_trials={spec.n_trials}")
    return out


def si(x: float) -> str:
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def format_plan(rows: list[CellPlan], gpu: str, utilization: float, query_tokens: int = QUERY_TOKENS,
                doc_tokens: int | None = None) -> str:
    import pandas as pd

    name, peak, mem = PEAK_TFLOPS[gpu]
    table = pd.DataFrame([{
        "cell": r.label, "params": si(r.arch.params), "LoRA": si(r.arch.lora_params) if r.arch.lora_params else "-",
        "GPUs": r.world, "batch": r.global_batch, "train tokens": si(r.train["tokens"]),
        "train FLOP": si(r.train["total"]), "attn %": round(100 * r.train["attention"] / r.train["total"]),
        "eval tokens": si(r.eval_tokens), "eval FLOP": si(r.eval_flops),
        "train h": round(r.train_seconds / 3600, 2), "eval h": round(r.eval_seconds / 3600, 2),
        "GPU-h": round(r.gpu_hours, 2),
        "mem/GPU GB": f"{r.memory['total'] / 1e9:.1f} (w {r.memory['weights'] / 1e9:.1f} + opt "
                      f"{r.memory['trainable'] / 1e9:.1f} + act {r.memory['activations'] / 1e9:.1f})"
                      + ("" if mem is None else (" ok" if r.memory["total"] / 1e9 < 0.9 * mem else " TOO BIG")),
    } for r in rows])
    rate = f"{peak:g} TFLOP/s bf16 peak" if peak else "measured matmul peak"
    lines = [f"cost plan on {name} ({rate}) at {utilization:.0%} utilisation; queries {query_tokens} tokens, "
             f"documents {'model.max_length' if doc_tokens is None else doc_tokens} tokens (padded upper bound)",
             table.to_string(index=False),
             f"total: {len(rows)} trials, {si(sum(r.train['total'] + r.eval_flops for r in rows))}FLOP, "
             f"{sum(r.gpu_hours for r in rows):.1f} GPU-hours; one worker runs them in "
             f"{sum(r.train_seconds + r.eval_seconds for r in rows) / 3600:.1f} h (N workers: / N)"]
    unknown = sorted({t for r in rows for t in r.unknown_tasks})
    if unknown:
        lines.append(f"evaluation not estimated (size unknown offline): {', '.join(unknown)}")
    lines += sorted({n for r in rows for n in r.notes})
    lines.append("formulas and what is not counted: study/plan.py")
    return "\n".join(lines)
