"""Pretraining tiny backbones: the losses by hand, matched initial weights, attention direction, the cached
build (folder, results rows, offline W&B run, cache hit), MNTP adaptation, lineage and fine-tuning from it."""

import json
import math

import pandas as pd
import pytest
import torch
from test_corpus import SMALL

from study.cli import main
from study.pretrain import objectives as obj
from study.pretrain.config import load_pretrain_config

# Tiny budget: 16 steps of 4 x 32 tokens on the small corpus of tests/test_corpus.py.
TINY = ["tokens=2048", "seq_len=32", "batch_size=4", "eval_every=8", "log_every=4", "val_tokens=256",
        "warmup=2", f"corpus.max_tokens={SMALL['max_tokens']}", f"corpus.sources=[{','.join(SMALL['sources'])}]",
        "adapt_tokens=512"]


# ------------------------------------------------------------------ losses, by hand


def _ce(logits_row, target):
    return -(logits_row[target] - torch.logsumexp(logits_row, 0)).item()


def test_autoregressive_loss_is_mean_next_token_ce():
    torch.manual_seed(0)
    logits, ids = torch.randn(2, 4, 5), torch.randint(0, 5, (2, 4))
    expected = sum(_ce(logits[b, i], ids[b, i + 1]) for b in range(2) for i in range(3)) / 6
    assert obj.autoregressive_loss(logits, ids).item() == pytest.approx(expected, rel=1e-5)


def test_masked_diffusion_loss_weights_masked_tokens_by_one_over_t():
    torch.manual_seed(0)
    logits, ids = torch.randn(2, 4, 5), torch.randint(0, 5, (2, 4))
    masked = torch.tensor([[True, False, True, False], [False, False, False, True]])
    p = torch.tensor([0.25, 0.8])
    c = obj.Corruption(inputs=ids, masked=masked, p_mask=p)
    expected = (_ce(logits[0, 0], ids[0, 0]) / 0.25 + _ce(logits[0, 2], ids[0, 2]) / 0.25
                + _ce(logits[1, 3], ids[1, 3]) / 0.8) / 8
    assert obj.masked_diffusion_loss(logits, ids, c).item() == pytest.approx(expected, rel=1e-5)
    # Dream-style shift: the masked token i is read from the logits at i-1.
    expected_shift = (_ce(logits[0, 1], ids[0, 2]) / 0.25 + _ce(logits[1, 2], ids[1, 3]) / 0.8) / 8
    assert obj.masked_diffusion_loss(logits, ids, c, shift=True).item() == pytest.approx(expected_shift, rel=1e-5)
    # MNTP: the mean CE over masked tokens (position 0 has no left neighbour), read from i-1.
    expected_mntp = (_ce(logits[0, 1], ids[0, 2]) + _ce(logits[1, 2], ids[1, 3])) / 2
    assert obj.mntp_loss(logits, ids, c).item() == pytest.approx(expected_mntp, rel=1e-5)


def test_diffusion_corruption_masks_each_sequence_at_its_own_ratio():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 50, (64, 2000))
    c = obj.diffusion_corruption(ids, mask_id=3, eps=1e-3, generator=gen)
    assert torch.equal(c.inputs[c.masked], torch.full_like(c.inputs[c.masked], 3))
    assert torch.equal(c.inputs[~c.masked], ids[~c.masked])
    share = c.masked.float().mean(1)
    assert (share - c.p_mask).abs().max() < 0.05  # per-row mask share follows that row's p
    assert c.p_mask.min() >= 1e-3 and c.p_mask.max() <= 1 and c.p_mask.std() > 0.2  # t ~ U(0, 1)
    shifted = obj.diffusion_corruption(ids, 3, 1e-3, gen, shift=True)
    assert not shifted.masked[:, 0].any()


# ------------------------------------------------------------------ models


@pytest.fixture(scope="module")
def cfg():
    return load_pretrain_config(overrides=TINY)


def test_both_objectives_start_from_the_same_weights_and_differ_in_attention(cfg, tokenizer):
    from study.backbones.attention import probe_attention
    from study.pretrain.run import build_model

    ar = build_model(cfg, tokenizer, obj.attention_for("autoregressive"))
    md = build_model(cfg, tokenizer, obj.attention_for("masked_diffusion"))
    a, b = ar.state_dict(), md.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert probe_attention(ar.model, len(tokenizer)) == "causal"
    assert probe_attention(md.model, len(tokenizer)) == "bidirectional"
    # The AR loss at a position never sees later tokens: change the last token, earlier terms stay.
    ids = torch.randint(10, len(tokenizer), (1, 12))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % len(tokenizer)
    with torch.no_grad():
        la, lb = ar(input_ids=ids).logits, ar(input_ids=changed).logits
        assert torch.allclose(la[:, :-1], lb[:, :-1], atol=1e-5)
        ma, mb = md(input_ids=ids).logits, md(input_ids=changed).logits
        assert not torch.allclose(ma[:, 0], mb[:, 0], atol=1e-5)
    other = build_model(load_pretrain_config(overrides=TINY + ["seed=1"]), tokenizer, "causal")
    assert not torch.equal(other.state_dict()["model.embed_tokens.weight"], a["model.embed_tokens.weight"])


def test_same_data_order_for_both_objectives(cfg):
    import numpy as np

    from study.pretrain.run import train_batches

    stream = np.arange(10_000, dtype=np.uint16) % 8000
    a = list(train_batches(stream, 32, 4, 5, seed=0))
    b = list(train_batches(stream, 32, 4, 5, seed=0))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], next(train_batches(stream, 32, 4, 1, seed=1)))


# ------------------------------------------------------------------ CLI, cache, registry


def test_bad_objective_and_bad_combinations_exit_2(capsys):
    assert main(["pretrain", "objective=diffusion"]) == 2
    err = capsys.readouterr().err
    assert "objective='diffusion'" in err and "autoregressive, masked_diffusion" in err
    assert main(["pretrain", "objective=masked_diffusion", "adapt=mntp"]) == 2
    assert "adapt=mntp" in capsys.readouterr().err
    assert main(["pretrain", "shift=true"]) == 2
    assert main(["pretrain", "precision=16-mixed"]) == 2
    assert "auto, bf16-mixed, 32-true" in capsys.readouterr().err


def test_unbuilt_registered_name_says_how_to_build_it(tmp_path, monkeypatch):
    from study.backbones.registry import resolve_backbone
    from study.errors import ConfigError

    monkeypatch.setenv("STUDY_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match="study pretrain objective=masked_diffusion"):
        resolve_backbone("tiny-diffusion")


@pytest.fixture(scope="module")
def diffusion_build():
    """A tiny masked-diffusion build registered as tiny-diffusion in the session's cache."""
    assert main(["pretrain", "objective=masked_diffusion", "name=tiny-diffusion", *TINY]) == 0
    from study.backbones.index import pretrained_folder

    return pretrained_folder("tiny-diffusion")


@pytest.mark.slow
def test_pretrain_writes_folder_results_wandb_and_second_call_is_cached(diffusion_build, capsys, tokenizer):
    folder = diffusion_build
    for f in ("config.json", "model.safetensors", "tokenizer.json", "pretrain_config.yaml", "lineage.json",
              "manifest.json", "results.parquet"):
        assert (folder / f).is_file(), f
    manifest = json.loads((folder / "manifest.json").read_text())
    lineage = manifest["lineage"]
    assert lineage["objective"] == "masked_diffusion" and lineage["attention"] == "bidirectional"
    assert manifest["metrics"]["tokens"] == 16 * 4 * 32 and manifest["metrics"]["steps"] == 16
    # Loss curve rows: the results-table schema, task=pretrain, a step column.
    table = pd.read_parquet(folder / "results.parquet")
    assert set(table.task) == {"pretrain"} and set(table.length) == {32}
    val = table[table.metric == "val_loss"].sort_values("step")
    assert list(val.step) == [0, 8, 16] and list(table[table.metric == "train_loss"].step) == [4, 8, 12, 16]
    assert (table.run_id == lineage["pretrain_run_id"]).all() and set(table.backbone) == {"tiny-diffusion"}
    assert val.value.iloc[-1] < val.value.iloc[0]  # it learned something
    assert val.value.iloc[-1] == pytest.approx(manifest["metrics"]["val_loss"])
    runs = list(folder.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and lineage["pretrain_run_id"] in runs[0].name and runs[0].stat().st_size > 0
    # The pretrained model loads as a base model (what embedding training uses) and is bidirectional.
    from transformers import AutoModel

    from study.backbones.attention import probe_attention

    assert probe_attention(AutoModel.from_pretrained(folder), len(tokenizer)) == "bidirectional"

    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["pretrain", "objective=masked_diffusion", "name=tiny-diffusion", *TINY, "wandb.tags=[again]"]) == 0
    assert capsys.readouterr().out.startswith("cached: tiny-diffusion")
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert len(list(folder.glob("wandb/offline-run-*"))) == 1


@pytest.mark.slow
def test_mntp_adapts_the_ar_backbone_with_open_attention(tokenizer):
    from transformers import AutoModel

    from study.backbones.attention import probe_attention
    from study.backbones.index import pretrained_folder, read_lineage

    assert main(["pretrain", "objective=autoregressive", "adapt=mntp", "name=tiny-ar-mntp", *TINY]) == 0
    mntp = read_lineage(pretrained_folder("tiny-ar-mntp"))
    parent = mntp["parent"]
    assert mntp["adapt"] == "mntp" and mntp["attention"] == "bidirectional"
    assert parent["objective"] == "autoregressive" and parent["attention"] == "causal"
    assert parent["pretrain_run_id"] != mntp["pretrain_run_id"]
    ar_folder = pretrained_folder(parent["name"])  # registered as tiny-ar-<hash8> (not the default settings)
    assert parent["name"].startswith("tiny-ar-") and ar_folder is not None
    assert probe_attention(AutoModel.from_pretrained(ar_folder), len(tokenizer)) == "causal"
    adapted = AutoModel.from_pretrained(pretrained_folder("tiny-ar-mntp"))
    assert probe_attention(adapted, len(tokenizer)) == "bidirectional"
    base = AutoModel.from_pretrained(ar_folder)
    assert not torch.equal(adapted.embed_tokens.weight, base.embed_tokens.weight)


@pytest.mark.slow
def test_study_train_fine_tunes_from_the_pretrained_weights_and_records_lineage(diffusion_build, tmp_path):
    from omegaconf import OmegaConf
    from safetensors.torch import load_file

    from study.backbones.loading import load_backbone
    from study.config import ModelConfig

    lineage = json.loads((diffusion_build / "lineage.json").read_text())
    mcfg = OmegaConf.structured(ModelConfig(backbone="tiny-diffusion"))
    backbone = load_backbone(mcfg)
    assert backbone.info["pretrain"]["pretrain_run_id"] == lineage["pretrain_run_id"]
    assert backbone.info["pretrain"]["cache_key"] == lineage["cache_key"]

    code = main(["train", f"output_dir={tmp_path}", "run_name=ft", "model.backbone=tiny-diffusion",
                 "trainer.max_steps=2", "trainer.batch_size=4", "trainer.val_check_interval=2", "data.num_pairs=16",
                 "data.num_val_pairs=4", "data.doc_max_words=60", "eval.lengths=[64]", "eval.num_queries=2",
                 "eval.num_docs=4", "model.max_length=64", "eval.tasks=[passkey]"])
    assert code == 0
    pretrained = load_file(diffusion_build / "model.safetensors")["model.embed_tokens.weight"]
    tuned = load_file(tmp_path / "ft" / "model" / "model.safetensors")
    tuned = next(v for k, v in tuned.items() if k.endswith("embed_tokens.weight"))
    random_init = load_backbone(OmegaConf.structured(ModelConfig(backbone="tiny-qwen2"))).model.embed_tokens.weight
    assert (tuned - pretrained).norm() < 0.1 * (tuned - random_init.detach()).norm()
    assert math.isfinite(pd.read_parquet(tmp_path / "ft" / "results.parquet").value.sum())
