"""The paper's recipes: training-set formats mapped to our columns (offline, on small fixtures in the
hub datasets' own formats), the recipe configs and sweeps validate, and their evaluation tasks are named."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from study.config import load_config
from study.data.pairs import load_pairs
from study.data.recipes import E5_INSTRUCTIONS, MSMARCO_INSTRUCTION
from study.errors import ConfigError
from study.sweep.spec import load_spec
from study.tasks import TaskUnavailable, check_task_names

ROOT = Path(__file__).parent.parent
FIXTURES = Path(__file__).parent / "fixtures" / "recipes"


def rows(train: str | Path) -> list[dict]:
    dd = load_pairs(OmegaConf.create({"train": str(train), "num_val_pairs": 1}))
    assert set(dd) == {"train", "validation"}
    out = [r for split in ("train", "validation") for r in dd[split]]
    assert all(set(r) == {"query", "positive", "negatives", "instruction"} for r in out)
    return sorted(out, key=lambda r: r["query"])


def test_e5_echo_folder_gets_each_files_instruction():
    got = rows(FIXTURES / "echo-data")
    assert len(got) == 10  # nq + allnli; a file that is no E5 dataset is left out
    nq = [r for r in got if r["query"].startswith("who wrote")]
    assert {r["instruction"] for r in nq} == {E5_INSTRUCTIONS["nq"][0] + ": "}
    first = next(r for r in nq if "first" in r["query"])
    assert first["positive"].startswith("The first verse") and first["negatives"] == [
        "The first verse of a different song is sung in Ohio."]
    nli = [r for r in got if r["query"].startswith("A man")]
    # allnli alternates its two instructions by row, as LLM2Vec does.
    assert {r["instruction"] for r in nli} == {p + ": " for p in E5_INSTRUCTIONS["allnli"]}


def test_reasonaug_rows():
    got = rows(FIXTURES / "reasonaug.jsonl")
    assert len(got) == 5
    r = next(r for r in got if "sides 0, 1 and 2" in r["query"])
    assert r["positive"].startswith("Check a^2 + b^2")
    assert r["negatives"] == ["The mean of 0 and 2 is 1 (arithmetic mean)."]
    assert r["instruction"] == ("Given a math problem, retrieve the relevant problems that apply the same theorem "
                                "as the query: ")
    assert next(r for r in got if "sides 4, 5" in r["query"])["negatives"] == []  # null hard negative


def test_msmarco_with_instructions_rows():
    got = rows(FIXTURES / "msmarco-w-instructions.jsonl")
    assert len(got) == 5  # the row without a positive passage is dropped
    r = next(r for r in got if "liquid 2" in r["query"])
    assert r["query"].endswith("not Fahrenheit.")  # the query keeps its own instruction
    assert r["instruction"] == MSMARCO_INSTRUCTION
    assert r["positive"] == "Liquid 2\n\nLiquid 2 boils at 92 degrees Celsius at sea level."
    # The instruction negative (answers the query, breaks the instruction) comes first.
    assert r["negatives"] == ["Liquid 2 boils at 196 degrees Fahrenheit.", "Liquid 2 freezes at -12 degrees."]


def test_unknown_columns_are_refused_naming_the_formats(tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"question": "q", "answer": "a"}\n' * 3)
    with pytest.raises(ConfigError, match=r"columns \['answer', 'question'\].*reasonaug: positive_document, user_query"):
        load_pairs(OmegaConf.create({"train": str(bad), "num_val_pairs": 1}))


def test_recipe_configs_and_sweeps_validate_with_the_papers_settings():
    long = load_config(ROOT / "configs" / "recipes" / "long_document.yaml")
    assert (long.model.lora.r, long.model.lora.alpha, long.model.lora.dropout) == (16, 32, 0.05)
    assert (long.model.max_length, long.trainer.max_steps, long.optim.lr, long.optim.warmup_steps) == (4096, 1000, 5e-5, 100)
    assert long.loss.temperature == 0.02 and long.data.hard_negatives == 1
    assert int(long.trainer.devices) * long.trainer.batch_size == 16 and long.trainer.precision == "bf16-mixed"
    assert long.model.gradient_checkpointing
    ar = load_spec(ROOT / "sweeps" / "paper_long_document_ar.yaml")
    assert ar.base["optim.lr"] == 1e-4 and ar.base["model.max_length"] == 4096 and len(ar.cells()) == 6
    assert load_spec(ROOT / "sweeps" / "paper_long_document_dream.yaml").base["optim.lr"] == 5e-5
    reasoning = load_config(ROOT / "configs" / "recipes" / "reasoning.yaml")
    assert reasoning.data.train == "siyue/ReasonAug"
    follow = load_config(ROOT / "configs" / "recipes" / "instruction_following.yaml")
    assert follow.data.train == "samaya-ai/msmarco-w-instructions" and follow.model.lora.r == 32
    assert int(follow.trainer.devices) * follow.trainer.batch_size * follow.trainer.accumulate_grad_batches == 128
    for name in ("paper_reasoning", "paper_instruction_following"):
        assert len(load_spec(ROOT / "sweeps" / f"{name}.yaml").cells()) == 4


def test_the_papers_evaluation_tasks_pass_name_validation():
    longembed = ["narrativeqa", "qmsum", "2wikimqa", "summ_screen_fd", "passkey", "needle"]
    check_task_names([f"longembed:{c}" for c in longembed])
    check_task_names([f"mteb:LEMB{t}Retrieval" for t in ("NarrativeQA", "QMSum", "WikimQA", "SummScreenFD",
                                                         "Passkey", "Needle")])
    check_task_names([f"mteb:Bright{t}Retrieval" for t in ("Aops", "Leetcode", "TheoremQAQuestions",
                                                           "TheoremQATheorems", "Biology", "Pony")])
    # FollowIR is p-MRR reranking in mteb: refused before training, with the way to score it.
    for name in ("Core17", "Robust04", "News21"):
        with pytest.raises(TaskUnavailable, match=f"mteb:{name}InstructionRetrieval' is an mteb InstructionReranking"):
            check_task_names([f"mteb:{name}InstructionRetrieval"])


def test_a_sweep_recipe_must_exist(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nrecipe: nope.yaml\n")
    with pytest.raises(ConfigError, match="recipe='nope.yaml': no such file"):
        load_spec(spec)
