"""Test set-up: every library cache in a temporary folder, W&B offline, CPU only."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_TMP = Path(tempfile.mkdtemp(prefix="study-tests-"))
# Our own cache (tokenizer, training pairs) is shared by the whole session; STUDY_CACHE
# from the environment is respected so repeated local runs can reuse it.
os.environ.setdefault("STUDY_CACHE", str(_TMP / "study-cache"))
for var, sub in [("HF_HOME", "hf"), ("MPLCONFIGDIR", "mpl"), ("WANDB_CACHE_DIR", "wandb-cache"),
                 ("WANDB_CONFIG_DIR", "wandb-config"), ("WANDB_DATA_DIR", "wandb-data"),
                 ("MTEB_CACHE", "mteb"), ("IR_DATASETS_HOME", "ir_datasets")]:
    os.environ[var] = str(_TMP / sub)
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.pop("WANDB_DIR", None)


@pytest.fixture(scope="session")
def tokenizer():
    from study.backbones.tokenizer import tiny_tokenizer

    return tiny_tokenizer()


class FakeTokenizer:
    """Stands in for a tokenizer where only the vocabulary size and special ids matter."""

    def __init__(self, vocab_size: int = 512):
        self.vocab_size = vocab_size
        self.pad_token_id, self.bos_token_id, self.eos_token_id = 0, 1, 2

    def __len__(self) -> int:
        return self.vocab_size


@pytest.fixture
def fake_tokenizer():
    return FakeTokenizer()
