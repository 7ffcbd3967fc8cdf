"""Bidirectionality probes on tiny random-init models: causal attention never looks or reacts forward."""

import pandas as pd
import pytest
from run_helpers import make_run

from study.cli import main

SMALL = ["probe.lengths=[64,160]", "probe.num_docs=2", "probe.depths=[0.3,0.7]", "probe.distances=[16,100]",
         "probe.near=8"]


def probe(attention: str, pooling: str = "mean"):
    from study.backbones.loading import load_backbone
    from study.config import load_config
    from study.inference import eval_builder
    from study.model import build_embedder
    from study.probes import parse_settings, probe_embedder, to_table

    cfg = load_config(None, [f"model.attention={attention}", f"model.pooling={pooling}"])
    backbone = load_backbone(cfg.model, seed=0)
    embedder = build_embedder(backbone, cfg.model)
    rows = probe_embedder(embedder, eval_builder(cfg, backbone), parse_settings(SMALL))
    return to_table(rows, {"run_id": "x", "run_name": "x", "created_at": "", "backbone": "tiny-qwen2",
                           "attention": attention, "pooling": pooling, "seed": 0})


def means(table: pd.DataFrame) -> pd.Series:
    agg = table[table.query_id.isna() & table.layer.isna() & table.depth.isna()]
    return agg.groupby("metric").value.min(), agg.groupby("metric").value.max()


@pytest.mark.slow
def test_causal_has_no_forward_attention_or_forward_sensitivity_bidirectional_has_both():
    causal_min, causal_max = means(probe("causal", "last_token"))
    table = probe("bidirectional", "last_token")
    bi_min, bi_max = means(table)
    print("causal min/max", causal_min.round(4).to_dict(), causal_max.round(4).to_dict())
    print("bidirectional min/max", bi_min.round(4).to_dict(), bi_max.round(4).to_dict())
    # Causal: no attention on later keys, and the state at p ignores text after p (fp32: exactly 0).
    assert causal_max["forward_mass_8"] == 0 and causal_max["forward_mass"] == 0
    assert causal_max["state_change_after"] < 1e-6
    assert causal_min["backward_mass_8"] > 0.02 and causal_min["state_change_before"] > 1e-3
    # ... while last-token pooling still reads the whole text: the embedding reacts to both sides.
    assert causal_min["embedding_change_after"] > 1e-3
    # Bidirectional: attention and the state at p use both sides.
    # (random init spreads attention widely: the 8 keys after a query hold a few percent, all later keys
    # about half -- measured 0.05-0.12 and 0.49-0.50; causal: exactly 0 and 0)
    assert bi_min["forward_mass_8"] > 0.02 and bi_min["forward_mass"] > 0.3
    assert bi_min["state_change_after"] > 1e-3
    assert bi_min["state_change_before"] > 1e-3
    # Shares are probabilities; the far share grows with document length (more far keys exist).
    for t in (causal_max, bi_max):
        assert 0 <= t["far_mass_D16"] <= 1 and t["self_mass"] <= 1
    # Per-layer rows exist for each of the 4 layers, and the layer mean is their mean.
    att = table[(table.task == "probe/attention_distance") & (table.metric == "forward_mass_8") & (table.length == 64)]
    per_layer = att[att.layer.notna()]
    assert sorted(per_layer.layer) == [0, 1, 2, 3]
    assert att[att.layer.isna()].value.item() == pytest.approx(per_layer.value.mean())
    far = table[(table.metric == "far_mass_D16") & table.layer.isna()].set_index("length").value
    assert far[160] > far[64]


@pytest.mark.slow
def test_probe_cli_writes_table_and_wandb_and_appends(tmp_path, capsys):
    args = ["probe", "model.attention=causal", f"output_dir={tmp_path}", "run_name=p", *SMALL[:1],
            "probe.num_docs=1", "probe.depths=[0.5]", "probe.attention=false"]
    assert main(args) == 0
    assert "state_change_after" in capsys.readouterr().out
    table = pd.read_parquet(tmp_path / "p" / "probes.parquet")
    assert set(table.task) == {"probe/context_sensitivity"}
    assert set(table.attention) == {"causal"} and table.run_id.nunique() == 1
    per_doc = table[table.query_id.notna()]
    assert len(per_doc) == 2 * 4 and per_doc.depth.eq(0.5).all()  # 2 lengths x 4 metrics
    assert list((tmp_path / "p").glob("wandb/offline-run-*/run-*.wandb"))
    assert main(args) == 0  # a second probe appends
    assert len(pd.read_parquet(tmp_path / "p" / "probes.parquet")) == 2 * len(table)


@pytest.mark.slow
def test_probe_of_runs_reports_every_layer_for_both_directions(tmp_path, capsys):
    """`study probe <run>` on a causal and a bidirectional run folder: attention metrics for each of the 4
    layers (+ the layer mean); forward mass exactly 0 under causal attention, not under bidirectional."""
    args = ["probe.lengths=[64]", "probe.num_docs=1", "probe.sensitivity=false", "probe.distances=[16]",
            "probe.near=8"]
    metrics = {"far_mass_D16", "forward_mass_8", "backward_mass_8", "forward_mass", "self_mass", "entropy",
               "entropy_norm"}
    per_layer = {}
    for attention in ("causal", "bidirectional"):
        run = make_run(tmp_path, attention, f"model.attention={attention}")
        assert main(["probe", str(run), *args]) == 0
        assert "entropy_norm" in capsys.readouterr().out
        table = pd.read_parquet(run / "probes.parquet")
        assert set(table.task) == {"probe/attention_distance"} and set(table.attention) == {attention}
        assert set(table.metric) == metrics and set(table.length) == {64}
        layers = table[table.layer.notna()]
        assert all(sorted(g) == [0, 1, 2, 3] for _, g in layers.groupby("metric").layer)
        per_layer[attention] = layers.pivot_table(index="layer", columns="metric", values="value")
    causal, bi = per_layer["causal"], per_layer["bidirectional"]
    print("causal\n", causal.round(3).to_string(), "\nbidirectional\n", bi.round(3).to_string())
    assert (causal.forward_mass_8 == 0).all() and (causal.forward_mass == 0).all()
    assert (bi.forward_mass_8 > 0.02).all() and (bi.forward_mass > 0.3).all()
    for t in (causal, bi):  # 64 tokens: some keys are more than 16 away; entropy is a share of its maximum
        assert t.far_mass_D16.between(0.01, 1).all() and t.entropy_norm.between(0.5, 1 + 1e-6).all()
        assert (t.entropy > 0).all()


def test_bad_probe_keys_exit_2(tmp_path, capsys):
    assert main(["probe", "probe.lenghts=[64]"]) == 2
    assert "probe.lengths" in capsys.readouterr().err
    assert main(["probe", "probe.depths=[1.5]"]) == 2
    assert "probe.depths" in capsys.readouterr().err
    assert main(["probe", "probe.near=0"]) == 2  # the forward/backward window
    assert "probe.near=0" in capsys.readouterr().err
    assert main(["probe", "probe.distances=[1000,0]"]) == 2  # the far thresholds
    assert "probe.distances=[1000, 0]" in capsys.readouterr().err
    assert main(["probe", "probe.near=many"]) == 2
    assert "probe.near" in capsys.readouterr().err
    assert main(["probe", str(tmp_path), "model.pooling=mean"]) == 2  # a run's model is fixed
    assert "model.pooling=mean" in capsys.readouterr().err
