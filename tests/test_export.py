"""`study export --format sentence-transformers`: the exported folder reproduces the run's embeddings.

Run folders come from run_helpers.make_run (freshly initialised weights, the layout `study train` writes)
and one real tiny training run.
"""

from pathlib import Path

import numpy as np
import pytest
from run_helpers import make_run

from study.cli import main

pytest.importorskip("sentence_transformers")

TEXTS = [
    "Short.",
    "A medium sized text about attention that reaches both ways across the document. " * 3,
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. " * 12,
    "Another text, with punctuation; and numbers 12345.",
]


def ours_vs_st(run_dir: Path, out: Path) -> tuple[float, object]:
    from sentence_transformers import SentenceTransformer

    from study.encode import encode
    from study.inference import eval_builder, load_trained

    embedder, backbone, cfg = load_trained(run_dir)
    ours = encode(embedder, eval_builder(cfg, backbone), TEXTS, precision="32-true")
    st = SentenceTransformer(str(out), device="cpu", local_files_only=True)
    theirs = st.encode(TEXTS, batch_size=len(TEXTS), convert_to_numpy=True)  # one padded batch
    assert np.allclose(np.linalg.norm(theirs, axis=1), 1, atol=1e-5)  # Normalize module present
    return float(np.min(np.sum(ours * theirs, axis=1))), st


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    ("model.attention=causal", "model.pooling=last_token"),              # decoder, left padding
    ("model.attention=bidirectional", "model.pooling=weighted_mean"),
    ("model.backbone=tiny-bert", "model.pooling=first_token"),           # encoder, right padding
])
def test_export_reproduces_embeddings(tmp_path, overrides):
    from study.backbones.attention import probe_attention

    run_dir = make_run(tmp_path, "r", *overrides)
    out = tmp_path / "st"
    assert main(["export", str(run_dir), "--format", "sentence-transformers", str(out)]) == 0
    cosine, st = ours_vs_st(run_dir, out)
    assert cosine > 0.9999
    # The attention direction travels in the config and is what the loaded model does.
    attention = "causal" if "model.attention=causal" in overrides else "bidirectional"
    hf = st[0].auto_model
    assert probe_attention(hf, hf.config.vocab_size) == attention
    assert st.tokenizer.padding_side == ("right" if "model.backbone=tiny-bert" in overrides else "left")
    spec = __import__("json").loads((out / "study_export.json").read_text())
    assert spec["min_cosine"] > 0.9999 and spec["attention"] == attention


@pytest.mark.slow
def test_export_of_a_trained_run_and_of_lora(tmp_path):
    code = main(["train", f"output_dir={tmp_path}", "run_name=trained", "trainer.max_steps=2", "trainer.batch_size=4",
                 "trainer.val_check_interval=2", "data.num_pairs=16", "data.num_val_pairs=0", "data.doc_max_words=80",
                 "eval.lengths=[64]", "eval.num_queries=2", "eval.num_docs=4", "model.max_length=128",
                 "wandb.mode=disabled"])
    assert code == 0
    out = tmp_path / "st-trained"
    assert main(["export", str(tmp_path / "trained"), "--format", "sentence-transformers", str(out)]) == 0
    cosine, st = ours_vs_st(tmp_path / "trained", out)
    assert cosine > 0.9999
    assert st.tokenizer.padding_side == "left"  # the run's (decoder) padding side

    lora = make_run(tmp_path, "lora", "model.lora.r=4", "model.pooling=last_token", perturb_lora=True)
    out = tmp_path / "st-lora"
    assert main(["export", str(lora), "--format", "sentence-transformers", str(out)]) == 0
    cosine, st = ours_vs_st(lora, out)
    assert cosine > 0.9999
    assert not any("lora" in n for n, _ in st[0].auto_model.named_parameters())  # merged


def test_unexportable_options_and_bad_format_exit_2(tmp_path, capsys):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    from study.config import load_config, save_config

    save_config(load_config(None, ["model.pooling=latent_attention"]), run_dir / "config.yaml")
    out = tmp_path / "out"
    assert main(["export", str(run_dir), "--format", "onnx", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'onnx'" in err and "sentence-transformers" in err
    assert main(["export", str(run_dir), "--format", "sentence-transformers", str(out)]) == 2
    err = capsys.readouterr().err
    assert "latent_attention" in err and "mean" in err
    save_config(load_config(None, ["model.exclude_instruction=true"]), run_dir / "config.yaml")
    assert main(["export", str(run_dir), "--format", "sentence-transformers", str(out)]) == 2
    assert "model.exclude_instruction" in capsys.readouterr().err
    assert not out.exists()
    # A non-empty output folder is never overwritten.
    (out / "keep.txt").parent.mkdir()
    (out / "keep.txt").write_text("mine")
    save_config(load_config(None, []), run_dir / "config.yaml")
    assert main(["export", str(run_dir), "--format", "sentence-transformers", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"
