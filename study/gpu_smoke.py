"""GPU smoke test, run once on a new machine (scripts/gpu_smoke.sh, `make gpu-smoke`): every visible GPU,
one process each (torchrun), no hub access, a few minutes.

    1. bf16     the GPU runs bf16 natively; a bf16 matmul agrees with fp32; its TFLOP/s
    2. sdpa     which scaled_dot_product_attention kernel runs for the study's shapes (bf16, head_dim 128),
                without and with a padding mask (flash / mem-efficient / cudnn / math), from the profiler
    3. DDP      all ranks join one NCCL group; an all-reduce sums to the world size
    4. LoRA     one DDP training step of a random-init Qwen2.5-7B-shaped model (config built here, no hub),
                bidirectional, LoRA r=16 on q,k,v,o,gate,up,down, non-reentrant gradient checkpointing, bf16,
                mean pooling, InfoNCE with negatives gathered across GPUs; step time, tokens/s, TFLOP/s
    5. memory   peak allocated memory on every GPU, next to study/plan.py's estimate for the same step

`--tiny` runs the same code on CPU with tiny shapes (gloo, fp32 allowed): what the tests run. Without a
launcher it runs as a world of one. Exit code 0 when every check passed, 1 when one failed, 3 when
there is no GPU (and not --tiny).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import sys
import time

import torch
import torch.distributed as dist

from study.losses import InfoNCE
from study.plan import ARCHITECTURES, Arch, memory_per_gpu, si, train_flops

KERNELS = {"flash": "flash", "efficient": "mem-efficient", "cudnn": "cudnn", "math": "math"}
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=512)


def say(rank: int, text: str) -> None:
    if rank == 0:
        print(text, flush=True)


def _init_group(backend: str) -> tuple[int, int, int]:
    """Join torchrun's group, or make a world of one when started without a launcher."""
    if "RANK" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(backend, timeout=dt.timedelta(minutes=10))
    return dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_world_size()


def check_bf16(device: torch.device, size: int) -> dict:
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else None
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, generator=gen)
    b = torch.randn(size, size, device=device, generator=gen)
    ref = a @ b
    low = (a.bfloat16() @ b.bfloat16()).float()
    rel = ((low - ref).norm() / ref.norm()).item()
    a16, b16 = a.bfloat16(), b.bfloat16()
    _sync(device)
    start, reps = time.perf_counter(), 5
    for _ in range(reps):
        a16 @ b16
    _sync(device)
    tflops = 2 * size**3 * reps / (time.perf_counter() - start) / 1e12
    return {"native": native, "relative_error": rel, "tflops": tflops, "ok": rel < 2e-2 and native is not False}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sdpa_kernel(device: torch.device, heads: int, head_dim: int, length: int, masked: bool, dtype) -> str:
    """The kernel the dispatcher picks for these shapes, read from the profiled aten op names."""
    import torch.nn.functional as F
    from torch.profiler import ProfilerActivity, profile

    q, k, v = (torch.randn(2, heads, length, head_dim, device=device, dtype=dtype) for _ in range(3))
    mask = None
    if masked:  # a padded batch: the second row's last quarter is padding (a boolean keep-mask, as transformers passes)
        mask = torch.ones(2, 1, length, length, dtype=torch.bool, device=device)
        mask[1, :, :, -length // 4:] = False
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    names = [e.key for e in prof.key_averages() if "_scaled_dot_product" in e.key]
    for key, label in KERNELS.items():
        hit = next((n for n in names if key in n), None)
        if hit:
            return f"{label} ({hit})"
    return f"math ({', '.join(names)})" if names else "unknown (no sdpa op was profiled)"


def model_config(tiny: bool):
    from transformers import Qwen2Config

    shape = TINY if tiny else ARCHITECTURES["qwen2.5-7b"][1]
    return Qwen2Config(**shape, max_position_embeddings=32768, rope_theta=1_000_000.0, use_cache=False,
                       attention_dropout=0.0, is_causal=False, tie_word_embeddings=False)


def lora_step(device: torch.device, rank: int, world: int, tiny: bool, batch: int, length: int,
              query_length: int, dtype) -> dict:
    """One DDP step of contrastive LoRA fine-tuning on a random-init model of the real shapes."""
    from peft import LoraConfig, get_peft_model
    from torch.nn.parallel import DistributedDataParallel
    from transformers import AutoModel


    config = model_config(tiny)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModel.from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=targets))
    model.train()
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    loss_fn = InfoNCE(0.02)
    gen = torch.Generator().manual_seed(rank)

    def embed(n: int, t: int) -> torch.Tensor:
        ids = torch.randint(0, config.vocab_size, (n, t), generator=gen).to(device)
        mask = torch.ones(n, t, dtype=torch.long, device=device)
        mask[n // 2:, t - t // 4:] = 0  # padded rows, as in real batches
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            hidden = ddp(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        queries, docs = embed(batch, query_length), embed(2 * batch, length)
        loss = loss_fn(queries, docs[:batch], docs[batch:])
        loss.backward()
        optimizer.step()
        return loss.item()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step()  # warm-up: kernels, allocator, NCCL buckets
    _sync(device)
    start = time.perf_counter()
    loss = step()
    _sync(device)
    seconds = time.perf_counter() - start
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    params = sum(p.numel() for p in model.parameters()) - lora
    embedding = model.get_input_embeddings().weight.numel()
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    heads, hd = config.num_attention_heads, config.hidden_size // config.num_attention_heads
    arch = Arch("qwen2.5-7b-shaped", config.num_hidden_layers, config.hidden_size, heads * hd,
                config.num_key_value_heads * hd, config.intermediate_size, heads, params, embedding, lora)
    texts = [(batch * world, query_length), (2 * batch * world, length)]
    flops = train_flops(arch, texts, 1, lora=True, checkpointing=True)["total"]
    return {"loss": loss, "seconds": seconds, "params": params, "lora": lora, "peak_bytes": peak, "arch": arch,
            "tokens": sum(n * t for n, t in texts), "tflops_per_gpu": flops / seconds / world / 1e12,
            "finite": bool(torch.isfinite(torch.tensor(loss)))}


def planned_memory(arch: Arch, batch: int, length: int, query_length: int, dtype) -> float:
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"trainer": {"strategy": "ddp", "precision": "bf16-mixed", "accelerator": "gpu"},
                            "model": {"lora": {"r": 16}, "gradient_checkpointing": True,
                                      "attn_implementation": "sdpa"}})
    name = "bfloat16" if dtype == torch.bfloat16 else "float32"
    return memory_per_gpu(arch, cfg, [(batch, query_length), (2 * batch, length)], 1, name)["total"]


def run(tiny: bool = False, length: int | None = None, batch: int = 4) -> int:
    """`study gpu-smoke` (argv is parsed in study/cli.py): 0 all checks passed, 1 a check failed, 3 no GPU."""
    if not tiny and not torch.cuda.is_available():
        build = "a CPU build of torch" if torch.version.cuda is None else f"torch {torch.__version__}, CUDA {torch.version.cuda}"
        print(f"gpu-smoke: no CUDA GPU visible to this process ({build}); nothing to check here. "
              "On a GPU machine install a CUDA build of torch; --tiny runs the code path on CPU.", file=sys.stderr)
        return 3
    length = length or (64 if tiny else 4096)
    device_type = "cpu" if tiny else "cuda"
    rank, local_rank, world = _init_group("gloo" if tiny else "nccl")
    device = torch.device(device_type, local_rank) if device_type == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    ok = True
    try:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (--tiny)"
        say(rank, f"gpu-smoke: {world} x {name}, torch {torch.__version__}, CUDA {torch.version.cuda}")
        b = check_bf16(device, 256 if tiny else 8192)
        ok &= b["ok"]
        say(rank, f"1 bf16: native={b['native']} matmul rel. error vs fp32 {b['relative_error']:.1e}, "
                  f"{b['tflops']:.1f} TFLOP/s {'OK' if b['ok'] else 'FAILED'}")
        heads, hd = (4, 16) if tiny else (28, 128)
        kernels = {m: sdpa_kernel(device, heads, hd, length, m, dtype) for m in (False, True)}
        say(rank, f"2 sdpa kernel ({dtype}, {heads} heads x {hd}, {length} tokens): no mask -> {kernels[False]}, "
                  f"padding mask -> {kernels[True]}")
        total = torch.ones(1, device=device)
        dist.all_reduce(total)
        ok &= total.item() == world
        say(rank, f"3 DDP ({dist.get_backend()}): all-reduce over {world} ranks = {total.item():.0f} "
                  f"{'OK' if total.item() == world else 'FAILED'}")
        try:
            r = lora_step(device, rank, world, tiny, batch, length, 64 if not tiny else 16, dtype)
        except torch.OutOfMemoryError:
            say(rank, f"4 LoRA step: out of GPU memory at {batch} x {length} tokens per GPU; retry with "
                      "--length 2048 or --batch 2 (and read `study plan` for what fits)")
            return 1
        ok &= r["finite"]
        say(rank, f"4 LoRA step ({si(r['params'])} params, LoRA r=16 {si(r['lora'])}, checkpointing, "
                  f"{world} GPU DDP): loss {r['loss']:.3f}, {r['seconds']:.2f} s, {r['tokens'] / r['seconds']:,.0f} "
                  f"tokens/s, {r['tflops_per_gpu']:.0f} TFLOP/s per GPU {'OK' if r['finite'] else 'FAILED (loss not finite)'}")
        peaks = [None] * world
        dist.all_gather_object(peaks, r["peak_bytes"])
        plan = planned_memory(r["arch"], batch, length, 64 if not tiny else 16, dtype)
        say(rank, "5 memory: peak allocated per GPU " + ", ".join(f"{i}: {b / 1e9:.2f} GB" for i, b in enumerate(peaks))
            + f"; study/plan.py estimate {plan / 1e9:.2f} GB" + (" (CPU: not measured)" if device.type == "cpu" else ""))
        say(rank, "gpu-smoke: " + ("all checks passed" if ok else "SOME CHECKS FAILED"))
        return 0 if ok else 1
    finally:
        dist.destroy_process_group()

