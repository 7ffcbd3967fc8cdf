"""`auto` precision: bf16 autocast only where bf16 is native; explicit settings pass through."""

import torch

from study.encode import autocast
from study.precision import native_bf16, resolve_precision


def test_auto_follows_the_hardware_and_explicit_values_pass_through():
    expected = "bf16-mixed" if native_bf16("cpu") else "32-true"
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("32-true", "cpu") == "32-true"
    assert resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"


def test_encode_autocast_uses_the_resolved_precision():
    x = torch.randn(4, 4)
    with autocast(torch.device("cpu"), "bf16-mixed"):
        assert (x @ x).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "auto"):
        assert (x @ x).dtype == (torch.bfloat16 if native_bf16("cpu") else torch.float32)
