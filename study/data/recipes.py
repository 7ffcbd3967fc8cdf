"""The paper's training sets, mapped to our columns (query, positive, negatives, instruction).

    format            where it lives                                  its columns
    e5-echo           a folder of <dataset>.jsonl (LLM2Vec's           query, positive, negative; the instruction
                      cache/echo-data: the public E5 mix of            comes from the file name (E5_INSTRUCTIONS)
                      Springer et al., distributed as a download,
                      not a hub dataset)
    reasonaug         hub siyue/ReasonAug (jsonl)                       user_query, positive_document,
                                                                      hard_negative_document, task (the instruction)
    msmarco-instr     hub samaya-ai/msmarco-w-instructions             query (the query with its instruction),
                      (Tevatron layout, parquet)                      positive_passages, new_negatives,
                                                                      negative_passages: lists of {title, text}
    pairs             ours                                            query, positive[, negatives][, instruction]
                                                                      (a single `negative` string is accepted)

`data.train` names any of them (a folder, a .jsonl/.json/.parquet file or a hub id); the format is
recognised from the folder's files or the columns, so `data.train=siyue/ReasonAug` just works.
Instructions end in ": " (the form study/inputs.py prepends). Documents with a title are
"title\\n\\ntext", as in our BEIR tasks. Negatives keep their order: instruction negatives
(msmarco-instr `new_negatives`) come first, so data.hard_negatives=1 picks one of them.

Differences from the reference code (DiffEmbed / LLM2Vec), on purpose: batches mix the E5 datasets
(LLM2Vec fills each batch from one dataset), and msmarco-instr is trained with in-batch negatives
plus data.hard_negatives hard negatives (DiffEmbed's RepLLaMA loss uses 15 hard negatives and no
in-batch negatives).
"""

from __future__ import annotations

from pathlib import Path

from study.errors import ConfigError

# LLM2Vec's E5 instructions (llm2vec/dataset/E5Data.py); two alternate by row where two are given.
E5_INSTRUCTIONS = {
    "allnli": ("Given a premise, retrieve a hypothesis that is entailed by the premise",
               "Retrieve semantically similar text"),
    "eli5_question_answer": ("Provided a user question, retrieve the highest voted answers on Reddit ELI5 forum",),
    "fever": ("Given a claim, retrieve documents that support or refute the claim",),
    "hotpot_qa": ("Given a multi-hop question, retrieve documents that can help answer the question",),
    "miracl": ("Given a question, retrieve Wikipedia passages that answer the question",),
    "mrtydi": ("Given a question, retrieve Wikipedia passages that answer the question",),
    "msmarco_passage": ("Given a web search query, retrieve relevant passages that answer the query",),
    "msmarco_document": ("Given a web search query, retrieve relevant documents that answer the query",),
    "nq": ("Given a question, retrieve Wikipedia passages that answer the question",),
    "quora_duplicates": ("Given a question, retrieve questions that are semantically equivalent to the given question",
                         "Find questions that have the same meaning as the input question"),
    "squad": ("Retrieve Wikipedia passages that answer the question",),
    "trivia_qa": ("Retrieve Wikipedia passages that answer the question",),
}
MSMARCO_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query following the instructions: "
COLUMNS = ("query", "positive", "negatives", "instruction")


def _instruction(text: str) -> str:
    text = (text or "").strip().rstrip(".:;").strip()
    return f"{text}: " if text else ""


def is_echo_folder(path: Path) -> bool:
    """LLM2Vec's echo-data layout: <E5 dataset>.jsonl files, no `datasets` metadata."""
    return path.is_dir() and any((path / f"{name}.jsonl").is_file() for name in E5_INSTRUCTIONS) \
        and not (path / "dataset_dict.json").exists() and not (path / "dataset_info.json").exists()


def load_echo_folder(path: Path):
    """The E5 mix from an echo-data folder, every known file with its dataset's instruction."""
    import datasets

    parts = []
    for name, prompts in E5_INSTRUCTIONS.items():
        file = path / f"{name}.jsonl"
        if not file.is_file():
            continue
        ds = datasets.load_dataset("json", data_files=str(file), split="train")
        missing = {"query", "positive", "negative"} - set(ds.column_names)
        if missing:
            raise ConfigError(f"data.train={str(path)!r}: {file.name} lacks columns {sorted(missing)} "
                              "(echo-data rows hold query, positive, negative)")
        parts.append(ds.map(lambda row, i: {"query": row["query"], "positive": row["positive"],
                                            "negatives": [row["negative"]],
                                            "instruction": _instruction(prompts[i % len(prompts)])},
                            with_indices=True, remove_columns=ds.column_names, features=_features()))
    return datasets.DatasetDict({"train": datasets.concatenate_datasets(parts)})


def _doc(passage: dict) -> str:
    title, text = (passage.get("title") or "").strip(), passage.get("text") or ""
    return f"{title}\n\n{text}" if title else text


def _reasonaug(row: dict) -> dict:
    negative = row.get("hard_negative_document")
    return {"query": row["user_query"], "positive": row["positive_document"],
            "negatives": [negative] if negative else [], "instruction": _instruction(row.get("task"))}


def _msmarco(row: dict) -> dict:
    negatives = [_doc(p) for p in (row.get("new_negatives") or []) + (row.get("negative_passages") or [])]
    return {"query": row["query"], "positive": _doc(row["positive_passages"][0]), "negatives": negatives,
            "instruction": MSMARCO_INSTRUCTION}


def _pairs(row: dict) -> dict:
    negatives = row.get("negatives")
    if negatives is None:
        negatives = [row["negative"]] if row.get("negative") else []
    return {"query": row["query"], "positive": row["positive"], "negatives": list(negatives),
            "instruction": row.get("instruction") or ""}


FORMATS = {  # name: (columns that identify it, row mapper)
    "reasonaug": ({"user_query", "positive_document"}, _reasonaug),
    "msmarco-instr": ({"query", "positive_passages"}, _msmarco),
    "pairs": ({"query", "positive"}, _pairs),
}


def detect_format(columns) -> str:
    for name, (needed, _) in FORMATS.items():
        if needed <= set(columns):
            return name
    raise KeyError(sorted(columns))


def normalise(ds, src: str):
    """Every split of a DatasetDict mapped to our columns; ConfigError naming the formats if none fits."""
    import datasets

    columns = ds["train"].column_names
    try:
        fmt = detect_format(columns)
    except KeyError:
        known = "; ".join(f"{n}: {', '.join(sorted(c))}" for n, (c, _) in FORMATS.items())
        raise ConfigError(f"data.train={src!r} has columns {sorted(columns)}, which match no known training format "
                          f"({known}; or an E5 echo-data folder)") from None
    mapper = FORMATS[fmt][1]
    out = {}
    for split, part in ds.items():
        if fmt == "pairs" and set(part.column_names) <= set(COLUMNS) and "negatives" in part.column_names:
            out[split] = part  # already ours
            continue
        rows = part.filter(lambda r: bool(r.get("positive_passages"))) if fmt == "msmarco-instr" else part
        out[split] = rows.map(mapper, remove_columns=part.column_names, features=_features())
    return datasets.DatasetDict(out)


def _features():
    import datasets

    text = datasets.Value("string")
    return datasets.Features({"query": text, "positive": text, "negatives": datasets.Sequence(text),
                              "instruction": text})
