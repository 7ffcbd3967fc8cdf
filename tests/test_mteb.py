"""The mteb adapter, offline: mteb's mock retrieval task, and mteb vs our own evaluator on the same data."""

import numpy as np
import pytest
from run_helpers import make_run

mteb = pytest.importorskip("mteb")


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    from study.mteb_adapter import StudyEncoder

    run_dir = make_run(tmp_path_factory.mktemp("mteb"), "run", "model.attention=causal", "model.pooling=last_token")
    return StudyEncoder.from_run(run_dir, precision="32-true")


def passkey_as_mteb_task(split):
    """Our passkey split as an mteb retrieval task (mteb's mock task with our data)."""
    from datasets import Dataset
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
    from mteb.mocks import MockRetrievalTask

    class PasskeyMock(MockRetrievalTask):
        def load_data(self, num_proc=None, **kwargs):
            data = RetrievalSplitData(
                queries=Dataset.from_list([{"id": q, "text": t} for q, t in split.queries.items()]),
                corpus=Dataset.from_list([{"id": d, "text": t} for d, t in split.corpus.items()]),
                relevant_docs=split.qrels, top_ranked=None,
            )
            self.dataset = {"default": {"test": data, "val": data}}
            self.data_loaded = True

    return PasskeyMock()


def test_model_meta_and_protocol(encoder):
    from mteb.models import EncoderProtocol
    from mteb.models.model_meta import ScoringFunction

    meta = encoder.mteb_model_meta
    assert meta.name == "study/run" and meta.similarity_fn_name is ScoringFunction.COSINE
    assert meta.n_parameters > 1e6 and meta.embed_dim == 256
    assert meta.experiment_kwargs == {"attention": "causal", "pooling": "last_token"}
    assert isinstance(encoder, EncoderProtocol)


def test_queries_get_the_task_instruction_documents_none(encoder):
    from mteb.mocks import MockRetrievalTask
    from mteb.types import PromptType

    from study.encode import encode

    meta = MockRetrievalTask.metadata
    instruction = encoder.instruction_for(meta, PromptType.query)
    assert instruction.endswith(": ") and len(instruction) > 5
    assert encoder.instruction_for(meta, PromptType.document) == ""
    texts = ["first text", "a second, longer text about something else"]
    loader = [{"text": texts[:1]}, {"text": texts[1:]}]  # mteb hands batches of texts
    q = encoder.encode(loader, task_metadata=meta, hf_split="test", hf_subset="default", prompt_type=PromptType.query)
    d = encoder.encode(loader, task_metadata=meta, hf_split="test", hf_subset="default",
                       prompt_type=PromptType.document)
    ours_q = encode(encoder.model, encoder.builder, texts, instruction, precision="32-true")
    ours_d = encode(encoder.model, encoder.builder, texts, "", precision="32-true")
    np.testing.assert_allclose(q, ours_q, atol=1e-6)
    np.testing.assert_allclose(d, ours_d, atol=1e-6)
    assert not np.allclose(q, d, atol=1e-3)


@pytest.mark.slow
def test_mteb_evaluate_on_mock_tasks_matches_our_evaluator(encoder):
    from mteb.mocks import MockRetrievalTask
    from mteb.types import PromptType

    from study.evaluate import evaluate_task
    from study.tasks.synthetic import passkey

    result = mteb.evaluate(encoder, MockRetrievalTask(), cache=None, show_progress_bar=False)
    scores = result.task_results[0].scores
    for split in ("val", "test"):
        s = scores[split][0]
        assert 0 <= s["ndcg_at_10"] <= 1 and np.isfinite(s["main_score"])

    # The same data through mteb and through `study eval`'s evaluator gives the same numbers.
    task = passkey([64], 5, 10, seed=7)
    mteb_task = passkey_as_mteb_task(task.splits[0])
    task.query_instruction = encoder.instruction_for(mteb_task.metadata, PromptType.query)
    ours = evaluate_task(encoder.model, encoder.builder, task, 32768, "32-true", "cpu")
    theirs = mteb.evaluate(encoder, mteb_task, cache=None, show_progress_bar=False).task_results[0].scores["test"][0]
    for metric in ("ndcg_at_1", "ndcg_at_10", "recall_at_10"):
        mine = next(r["value"] for r in ours if r["query_id"] is None and r["length"] == 64
                    and r["depth_bucket"] is None and r["metric"] == metric)
        assert theirs[metric] == pytest.approx(mine, abs=1e-4), metric
    # Perfect vs garbage: queries that ARE their relevant documents score 1; with the relevance
    # judgements rotated (each query judged against another query's document) they score low.
    import copy

    split = copy.deepcopy(task.splits[0])
    split.queries = {q: split.corpus[next(iter(rel))] for q, rel in split.qrels.items()}
    encoder.use_instructions = False
    try:
        perfect = mteb.evaluate(encoder, passkey_as_mteb_task(split), cache=None, show_progress_bar=False)
        qids = list(split.qrels)
        split.qrels = {q: split.qrels[qids[(i + 1) % len(qids)]] for i, q in enumerate(qids)}
        garbage = mteb.evaluate(encoder, passkey_as_mteb_task(split), cache=None, show_progress_bar=False)
    finally:
        encoder.use_instructions = True
    assert perfect.task_results[0].scores["test"][0]["ndcg_at_1"] == pytest.approx(1.0)
    assert garbage.task_results[0].scores["test"][0]["ndcg_at_1"] <= 0.2
