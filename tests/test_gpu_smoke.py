"""The GPU smoke script's code path on CPU (--tiny), and its clear exit on a machine without a GPU."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest
import torch

from study import gpu_smoke
from study.cli import main

SCRIPT = Path(__file__).parent.parent / "scripts" / "gpu_smoke.sh"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tiny_smoke_runs_every_check_on_cpu(monkeypatch, capsys):
    # A world of one, in this process; monkeypatch restores the launcher variables afterwards.
    for var, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(_port())}.items():
        monkeypatch.setenv(var, value)
    assert main(["gpu-smoke", "--tiny", "--length", "32", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    assert "1 bf16: native=None" in out and "OK" in out.splitlines()[1]
    kernels = next(line for line in out.splitlines() if line.startswith("2 sdpa kernel"))
    assert "no mask -> " in kernels and "padding mask -> " in kernels and "unknown" not in kernels
    assert "3 DDP (gloo): all-reduce over 1 ranks = 1 OK" in out
    step = next(line for line in out.splitlines() if line.startswith("4 LoRA step"))
    assert "LoRA r=16" in step and step.endswith("OK")
    assert "5 memory: peak allocated per GPU 0:" in out and "gpu-smoke: all checks passed" in out
    assert not torch.distributed.is_initialized()


def test_tiny_model_has_the_7b_layout():
    big, tiny = gpu_smoke.model_config(False), gpu_smoke.model_config(True)
    assert (big.hidden_size, big.num_hidden_layers, big.num_attention_heads, big.num_key_value_heads,
            big.intermediate_size) == (3584, 28, 28, 4, 18944)
    assert type(big) is type(tiny) and big.is_causal is False and tiny.is_causal is False


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
def test_without_a_gpu_it_exits_3_with_a_message(capsys):
    assert main(["gpu-smoke"]) == 3
    assert "no CUDA GPU visible to this process" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="nvidia-smi exists here")
def test_script_without_nvidia_smi_exits_3():
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert "gpu-smoke: no NVIDIA GPU on this machine" in done.stderr
