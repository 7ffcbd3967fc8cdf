"""Bad input is refused with exit code 2, the bad value named, no traceback, and nothing written (issue 9).

Each case runs the CLI in-process from an empty-ish working folder holding only the input files it
needs; the folder is snapshotted before and after. Rule under test: config, data, backbone and storage
are validated first, the run or study folder is created last.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from study.cli import main

TINY = ["trainer.max_steps=2", "eval.tasks=[passkey]", "eval.lengths=[64]", "eval.num_queries=2", "eval.num_docs=4",
        "save_model=false", "wandb.mode=disabled"]
SPEC = {"name": "bad", "base": {"eval": {"tasks": ["passkey"], "lengths": [128]}},
        "space": {"model.pooling": {"type": "categorical", "choices": ["mean"]}}, "sampler": "grid", "seeds": [0],
        "objective": {"metric": "average/ndcg_at_1", "direction": "maximize"}}


def spec(tmp: Path, **changes) -> str:
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump({**SPEC, **changes}))
    return str(path)


def text(tmp: Path, name: str, content: str) -> str:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    return str(path)


def beir(tmp: Path, corpus: str, queries: str = '{"_id": "q1", "text": "where?"}\n',
         qrels: str = "query-id\tcorpus-id\tscore\nq1\td1\t1\n") -> str:
    folder = tmp / "beirdata"
    text(tmp, "beirdata/corpus.jsonl", corpus)
    text(tmp, "beirdata/queries.jsonl", queries)
    text(tmp, "beirdata/qrels/test.tsv", qrels)
    return f"eval.tasks=[beir:{folder}]"


def pairs(tmp: Path, rows: list[dict]) -> str:
    return text(tmp, "pairs.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


PAIR = {"query": "q", "positive": "p", "negatives": ["n"]}

# (id, argv from the tmp folder, fragment the message must hold)
CASES = [
    # config keys: choices
    ("attention", lambda t: ["train", "model.attention=diagonal"], "'diagonal'"),
    ("pooling", lambda t: ["train", "model.pooling=max"], "'max'"),
    ("precision", lambda t: ["train", "trainer.precision=fp8"], "'fp8'"),
    ("eval-precision", lambda t: ["train", "eval.precision=half"], "'half'"),
    ("padding-side", lambda t: ["train", "model.padding_side=up"], "'up'"),
    ("dtype", lambda t: ["train", "model.dtype=int8"], "'int8'"),
    ("strategy", lambda t: ["train", "trainer.strategy=horovod"], "'horovod'"),
    ("scheduler", lambda t: ["train", "optim.scheduler=step"], "'step'"),
    ("wandb-mode", lambda t: ["train", "wandb.mode=live"], "'live'"),
    # config keys: names and types (int, float, bool, str, Optional[int], List[str], List[int], group)
    ("unknown-key", lambda t: ["train", "model.atention=causal"], "model.atention"),
    ("unknown-group", lambda t: ["train", "modle.attention=causal"], "modle.attention"),
    ("not-key-value", lambda t: ["train", "seed"], "'seed'"),
    ("int-type", lambda t: ["train", "trainer.max_steps=ten"], "'ten'"),
    ("int-given-float", lambda t: ["train", "trainer.batch_size=1.5"], "1.5"),
    ("float-type", lambda t: ["train", "optim.lr=fast"], "'fast'"),
    ("bool-type", lambda t: ["train", "save_model=maybe"], "'maybe'"),
    ("optional-int-type", lambda t: ["train", "eval.max_length=long"], "'long'"),
    ("list-str-type", lambda t: ["train", "eval.tasks=passkey"], "'passkey'"),
    ("list-int-item", lambda t: ["train", "eval.lengths=[abc]"], "'abc'"),
    ("str-given-list", lambda t: ["train", "trainer.devices=[1]"], "[1]"),
    ("group-given-scalar", lambda t: ["train", "model.lora=3"], "value: 3"),
    # config keys: numbers
    ("seed-negative", lambda t: ["train", "seed=-1"], "seed=-1"),
    ("eval-seed-negative", lambda t: ["train", "eval.seed=-5"], "eval.seed=-5"),
    ("lengths-empty", lambda t: ["train", "eval.lengths=[]"], "eval.lengths=[]"),
    ("length-too-short", lambda t: ["train", "eval.lengths=[8]"], "8"),
    ("tasks-empty", lambda t: ["train", "eval.tasks=[]"], "eval.tasks is empty"),
    ("batch-zero", lambda t: ["train", "trainer.batch_size=0"], "trainer.batch_size=0"),
    ("temperature-negative", lambda t: ["train", "loss.temperature=-1"], "loss.temperature=-1"),
    ("lr-zero", lambda t: ["train", "optim.lr=0"], "optim.lr=0"),
    ("num-docs-zero", lambda t: ["train", "eval.num_docs=0"], "eval.num_docs=0"),
    ("warmup-negative", lambda t: ["train", "optim.warmup_steps=-3"], "optim.warmup_steps=-3"),
    ("dropout-one", lambda t: ["train", "model.lora.dropout=1.0"], "model.lora.dropout=1.0"),
    ("val-interval-zero", lambda t: ["train", "trainer.val_check_interval=0"], "trainer.val_check_interval=0"),
    ("clip-negative", lambda t: ["train", "trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1"),
    ("run-name-path", lambda t: ["train", "run_name=../escape"], "'../escape'"),
    # backbone
    ("backbone-unknown", lambda t: ["train", "model.backbone=not-a-model"], "'not-a-model'"),
    ("backbone-offline-hub", lambda t: ["train", "model.backbone=nonexistent-org/nonexistent-model", *TINY],
     "'nonexistent-org/nonexistent-model'"),
    # files: --config
    ("config-invalid-yaml", lambda t: ["train", "--config", text(t, "bad.yaml", "model: {attention: [causal\n")],
     "bad.yaml"),
    ("config-missing", lambda t: ["train", "--config", str(t / "missing.yaml")], "missing.yaml"),
    ("config-not-mapping", lambda t: ["train", "--config", text(t, "list.yaml", "- a\n- b\n")], "list.yaml"),
    ("config-unknown-key", lambda t: ["train", "--config", text(t, "k.yaml", "trainer: {max_stepz: 3}\n")],
     "trainer.max_stepz"),
    # output folder
    ("output-dir-is-file", lambda t: ["train", f"output_dir={text(t, 'afile', 'x')}", *TINY], "afile"),
    ("output-dir-under-file", lambda t: ["train", f"output_dir={text(t, 'bfile', 'x')}/sub", *TINY], "bfile"),
    ("output-dir-unwritable", lambda t: ["train", "output_dir=/proc/study-runs", *TINY], "/proc/study-runs"),
    # training data
    ("data-missing-fields", lambda t: ["train", f"data.train={pairs(t, [{'question': 'q', 'answer': 'a'}] * 6)}",
                                       *TINY], "pairs.jsonl"),
    ("data-malformed-jsonl", lambda t: ["train", f"data.train={text(t, 'broken.jsonl', '{not json')}", *TINY],
     "broken.jsonl"),
    ("batch-larger-than-data", lambda t: ["train", f"data.train={pairs(t, [PAIR] * 3)}", "trainer.batch_size=4", *TINY],
     "trainer.batch_size=4"),
    # evaluation data
    ("beir-malformed-jsonl", lambda t: ["train", *TINY, beir(t, '{"_id": "d1", "text": "doc"\n')], "corpus.jsonl:1"),
    ("beir-missing-field", lambda t: ["train", *TINY, beir(t, '{"id": "d1", "text": "doc"}\n')], "_id"),
    ("beir-bad-qrels", lambda t: ["train", *TINY, beir(t, '{"_id": "d1", "text": "doc"}\n',
                                                        qrels="query-id\tcorpus-id\tscore\nq1\td1\tmany\n")], "many"),
    ("beir-missing-folder", lambda t: ["train", *TINY, f"eval.tasks=[beir:{t}/nowhere]"], "nowhere"),
    ("task-unknown", lambda t: ["train", "eval.tasks=[haystack]"], "'haystack'"),
    # other subcommands' config
    ("config-cmd", lambda t: ["config", "model.pooling=sum"], "'sum'"),
    ("eval-cmd", lambda t: ["eval", "model.backbone=tiny-qwen2", "model.attention=sideways"], "'sideways'"),
    ("eval-offline-hub", lambda t: ["eval", "model.backbone=nonexistent-org/nonexistent-model", *TINY[1:],
                                    f"output_dir={t}/evals"], "'nonexistent-org/nonexistent-model'"),
    ("eval-two-targets", lambda t: ["eval", "a", "b"], "['a', 'b']"),
    ("pretrain-objective", lambda t: ["pretrain", "objective=bogus"], "'bogus'"),
    # sweep files
    ("sweep-invalid-yaml", lambda t: ["sweep", text(t, "s.yaml", "name: x\nspace: {a: [\n")], "s.yaml"),
    ("sweep-missing", lambda t: ["sweep", str(t / "none.yaml")], "none.yaml"),
    ("sweep-unknown-key", lambda t: ["sweep", spec(t, budget=3)], "'budget'"),
    ("sweep-empty-choices", lambda t: ["sweep", spec(t, space={"model.pooling": {"type": "categorical",
                                                                                 "choices": []}})], "choices=[]"),
    ("sweep-tpe-empty-space", lambda t: ["sweep", spec(t, space={}, sampler="tpe", n_trials=2)], "space is empty"),
    ("sweep-base-lengths-empty", lambda t: ["sweep", spec(t, base={"eval": {"lengths": []}})], "eval.lengths=[]"),
    ("sweep-output-dir-file", lambda t: ["sweep", spec(t, base={**SPEC["base"], "output_dir": text(t, "cfile", "x")})],
     "cfile"),
    ("sweep-recipe-invalid-yaml", lambda t: ["sweep", spec(t, recipe=Path(text(t, "r.yaml", "a: [\n")).name)],
     "r.yaml"),
    # sweep flags and storage
    ("sweep-workers-zero", lambda t: ["sweep", spec(t), "--workers", "0"], "--workers 0"),
    ("sweep-workers-text", lambda t: ["sweep", spec(t), "--workers", "two"], "'two'"),
    ("sweep-study-name", lambda t: ["sweep", spec(t), "--study-name", "../up"], "'../up'"),
    ("storage-no-scheme", lambda t: ["sweep", spec(t), "--storage", "nonsense"], "nonsense"),
    ("storage-unreachable", lambda t: ["sweep", spec(t), "--storage", "postgresql://u:pw@127.0.0.1:9/db"],
     "127.0.0.1:9"),
    ("storage-unknown-driver", lambda t: ["sweep", spec(t), "--storage", "nosuchdb://h/db"], "nosuchdb://h/db"),
    ("storage-journal-under-file", lambda t: ["sweep", spec(t), "--storage", f"{text(t, 'dfile', 'x')}/s.journal"],
     "dfile"),
    ("storage-journal-unwritable", lambda t: ["sweep", spec(t), "--storage", "/proc/study/s.journal"],
     "/proc/study/s.journal"),
    ("storage-sqlite-unwritable", lambda t: ["sweep", spec(t), "--storage", "sqlite:////proc/study/o.db"],
     "/proc/study/o.db"),
    ("status-no-study", lambda t: ["status", "nope"], "'nope'"),
    ("status-bad-storage", lambda t: ["status", "nope", "--storage", "nonsense"], "nonsense"),
    # other flags
    ("demo-workers", lambda t: ["demo", "--workers", "0"], "--workers 0"),
    ("plan-gpu", lambda t: ["plan", spec(t), "--gpu", "tpu"], "'tpu'"),
    ("plan-utilization", lambda t: ["plan", spec(t), "--utilization", "-1"], "-1"),
    ("plan-query-tokens", lambda t: ["plan", spec(t), "--query-tokens", "0"], "--query-tokens 0"),
    ("report-resamples", lambda t: ["report", "--results", spec(t), "--resamples", "0", "--no-wandb"], "--resamples 0"),
    ("report-correction", lambda t: ["report", "--results", spec(t), "--correction", "none", "--no-wandb"], "'none'"),
    ("power-target", lambda t: ["power", "pilot", "--target", "-1"], "--target -1"),
    ("power-no-pilot", lambda t: ["power", "nopilot"], "'nopilot'"),
    ("export-no-run", lambda t: ["export", str(t / "norun"), str(t / "out")], "norun"),
    ("probe-no-run", lambda t: ["probe", str(t / "norun")], "norun"),
    ("verify-dtype", lambda t: ["verify-backbone", "x", "--dtype", "fp4"], "'fp4'"),
    ("build-task-name", lambda t: ["build-task", "nope"], "'nope'"),
    ("unknown-flag", lambda t: ["train", "--bogus-flag"], "--bogus-flag"),
    ("unknown-command", lambda t: ["fly"], "'fly'"),
]


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("argv, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_names_the_value_and_writes_nothing(tmp_path, monkeypatch, capsys, argv, fragment):
    monkeypatch.chdir(tmp_path)
    args = argv(tmp_path)
    before = snapshot(tmp_path)
    try:
        code = main(args)
    except SystemExit as e:  # argparse: usage errors
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2, out[-2000:] + err[-2000:]
    assert fragment in err, err[-2000:]
    assert "Traceback" not in err + out
    assert snapshot(tmp_path) == before
    assert "pw@" not in err + out  # storage passwords never printed


def test_the_table_is_big_enough():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


def test_a_sweep_over_an_unreachable_hub_backbone_is_refused_before_the_study_exists(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = spec(tmp_path, space={"model.backbone": {"type": "categorical",
                                                    "choices": ["tiny-qwen2", "nonexistent-org/nonexistent-model"]}})
    before = snapshot(tmp_path)
    assert main(["sweep", path]) == 2
    err = capsys.readouterr().err
    assert "'nonexistent-org/nonexistent-model' cannot be loaded" in err and "Traceback" not in err
    assert snapshot(tmp_path) == before
