"""Which precision to compute in: bf16 autocast only where the hardware runs bf16 natively.

On CPUs without AVX512-BF16 or AMX, bf16 matmuls are emulated and about 4x SLOWER than fp32
(measured on this project's Intel dev machines, 2 threads, 2048^3 torch.mm via
study.bench.matmul_gflops: 15 vs 59 GFLOP/s), while on CPUs with
them (AMD EPYC Zen 4, Sapphire Rapids) and on GPUs bf16 is about 2x faster. `auto` picks per machine,
so the same config is fast on a laptop, a CI box and a GPU node.
"""

from __future__ import annotations

import torch

AUTO = "auto"
# trainer.precision / eval.precision (Lightning's names); auto resolves per machine (resolve_precision)
PRECISIONS = (AUTO, "32-true", "bf16-mixed", "16-mixed", "bf16-true")
# A plain training loop (study pretrain) runs autocast or fp32 only.
LOOP_PRECISIONS = (AUTO, "bf16-mixed", "32-true")


def native_bf16(device: torch.device | str) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
                    or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())
    return False


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """`auto` -> `bf16-mixed` where bf16 is native, else `32-true`; any other value is returned as is."""
    if precision != AUTO:
        return precision
    return "bf16-mixed" if native_bf16(device) else "32-true"


def training_device(accelerator: str) -> str:
    """The device type a Lightning `accelerator` setting will train on."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"
