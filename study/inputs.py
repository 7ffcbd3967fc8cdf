"""Text -> model inputs: special tokens, an optional instruction prefix, truncation, padding, pool mask.

Instructions and texts are tokenized separately and concatenated, so we know
exactly which positions are instruction tokens (to leave them out of the pool
when asked) and BPE merges never cross the boundary. Tokenizing is split from
collating so the evaluator can sort by length before padding.

Encodings (`model.encoding`, docs/encodings.md) and the mask-token readout are built here too, as a layout of
one sequence and the span of it that is pooled:

    full      <prefix> [instruction] text [masks] <suffix>         pooled: text..suffix (instruction if kept)
    echo      <prefix> [instruction] text text [masks] <suffix>    pooled: the second copy..suffix only
    masks     K mask tokens (model.pooling=mask_tokens)             pooled: the K mask positions only

`chunked` needs no layout of its own: each chunk is laid out as `full` (study/encode.py splits documents).
Under echo each copy gets half of the room, so the first copy is exactly the text that is pooled.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

# How much of a document the model reads and how (docs/encodings.md): full = the text once (truncated);
# echo = the text twice, pooled over the second copy; chunked = documents split into windows encoded as one
# batch and aggregated by study/model.py (mean) or study/encode.py (max); queries are never chunked.
ENCODINGS = ("full", "echo", "chunked")
CHUNK_AGGREGATES = ("mean", "max")


def mask_token_id(tokenizer) -> tuple[int, str]:
    """The id appended by model.pooling=mask_tokens and which token it is.

    The tokenizer's mask token (BERT's [MASK], Dream's <|mask|>, the tiny tokenizer's <mask>); a tokenizer
    without one (Qwen2, Llama) gets its pad token, then unk, then eos: a token the model never reads as text
    in our inputs, whose final state is all readout."""
    for attr in ("mask_token", "pad_token", "unk_token", "eos_token"):
        value = getattr(tokenizer, f"{attr}_id", None)
        if value is not None:
            return int(value), attr
    raise ValueError("model.pooling=mask_tokens: the tokenizer has no mask, pad, unk or eos token to append")


@dataclass(frozen=True)
class ChunkSpec:
    """model.chunk.*: windows of `length` text tokens, `overlap` shared between neighbours, `aggregate` mean|max."""

    length: int = 512
    overlap: int = 0
    aggregate: str = "mean"


class InputBuilder:
    def __init__(self, tokenizer, max_length: int, padding_side: str, append_eos: bool = True,
                 exclude_instruction: bool = False, encoding: str = "full", mask_tokens: int = 0,
                 chunk: ChunkSpec | None = None):
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side={padding_side!r}; choose left or right")
        if encoding not in ("full", "echo", "chunked"):
            raise ValueError(f"encoding={encoding!r}; choose one of: full, echo, chunked")
        self.encoding = encoding
        self.copies = 2 if encoding == "echo" else 1
        # Documents are chunked only under encoding=chunked (study/encode.py encode_documents).
        self.chunk = (chunk or ChunkSpec()) if encoding == "chunked" else None
        self.mask_tokens = int(mask_tokens)
        self.mask_id, self.mask_source = mask_token_id(tokenizer) if self.mask_tokens else (None, None)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.padding_side = padding_side
        self.exclude_instruction = exclude_instruction
        self.pad_id = tokenizer.pad_token_id
        self.prefix, self.suffix = self._special_tokens(tokenizer)
        if append_eos and not self.suffix and tokenizer.eos_token_id is not None:
            self.suffix = [tokenizer.eos_token_id]
        if max_length < len(self.prefix) + len(self.suffix) + self.mask_tokens + self.copies:
            raise ValueError(f"max_length={max_length} leaves no room for text")

    @staticmethod
    def _special_tokens(tokenizer) -> tuple[list[int], list[int]]:
        """The ids the tokenizer adds around a text (e.g. [CLS] ... [SEP], <s> ... </s>)."""
        plain = tokenizer("x", add_special_tokens=False)["input_ids"]
        full = tokenizer("x")["input_ids"]
        for start in range(len(full) - len(plain) + 1):
            if full[start : start + len(plain)] == plain:
                return full[:start], full[start + len(plain):]
        return [], []

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"] if texts else []

    @functools.lru_cache(maxsize=64)
    def instruction_ids(self, instruction: str) -> tuple[int, ...]:
        return tuple(self.tokenizer(instruction, add_special_tokens=False)["input_ids"]) if instruction else ()

    def _fixed(self) -> int:
        return len(self.prefix) + len(self.suffix) + self.mask_tokens

    def text_room(self, instruction: str = "") -> int:
        """How many text tokens are read (the truncation point): what fits after the special tokens, the
        instruction and any mask tokens; under echo, half of that (each copy holds the same text)."""
        room = self.max_length - self._fixed() - len(self.instruction_ids(instruction))
        return max(1, room // self.copies)

    def layout(self, ids: list[int], instruction: str = "") -> tuple[list[int], int, int]:
        """(id sequence, first pooled position, end of the pooled span) of one text, truncated to fit."""
        instr = list(self.instruction_ids(instruction))
        room = self.max_length - self._fixed() - len(instr)
        if room < self.copies:
            instr, room = instr[: max(0, room + len(instr) - self.copies)], self.copies
        text = list(ids[: room // self.copies])
        seq = self.prefix + instr + text
        if self.copies == 1:
            start = len(self.prefix) + len(instr) if self.exclude_instruction and instr else 0
        else:  # echo: only the second copy (and what follows it) is pooled; every pooled token has seen the text
            start = len(seq)
            seq = seq + text
        if self.mask_tokens:
            start = len(seq)
            seq = seq + [self.mask_id] * self.mask_tokens
            return seq + self.suffix, start, start + self.mask_tokens
        seq = seq + self.suffix
        return seq, start, len(seq)

    def sequence(self, ids: list[int], instruction: str = "") -> tuple[list[int], int]:
        """Full id sequence (truncated text) and the number of leading non-pooled positions."""
        seq, start, _ = self.layout(ids, instruction)
        return seq, start

    def collate(self, token_ids: list[list[int]], instruction: str | list[str] = "") -> dict[str, torch.Tensor]:
        """Pad to the longest sequence; `instruction` is one string for all or one per text."""
        instructions = [instruction] * len(token_ids) if isinstance(instruction, str) else instruction
        seqs = [self.layout(ids, instr) for ids, instr in zip(token_ids, instructions, strict=True)]
        width = max(len(s) for s, _, _ in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(seqs), width), dtype=torch.long)
        pool = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (seq, first, end) in enumerate(seqs):
            start = width - len(seq) if self.padding_side == "left" else 0
            input_ids[i, start : start + len(seq)] = torch.tensor(seq)
            attention[i, start : start + len(seq)] = 1
            pool[i, start + first : start + end] = 1
        return {"input_ids": input_ids, "attention_mask": attention, "pool_mask": pool}

    def __call__(self, texts: list[str], instruction: str | list[str] = "") -> dict[str, torch.Tensor]:
        return self.collate(self.tokenize(texts), instruction)

    # ------------------------------------------------------------ chunked documents

    def chunk_window(self, instruction: str = "") -> tuple[int, int]:
        """(window, step) in text tokens: model.chunk.length, capped by what one sequence holds."""
        spec = self.chunk or ChunkSpec()
        window = max(1, min(spec.length, self.text_room(instruction)))
        return window, max(1, window - min(spec.overlap, window - 1))

    def split(self, token_ids: list[list[int]], instruction: str = "") -> tuple[list[list[int]], list[int]]:
        """Every document's windows, in document order, and the document index of each window.

        A document is cut into windows of `window` tokens starting every `step` tokens until one reaches
        its end; a document no longer than one window is one chunk (exactly the `full` sequence)."""
        window, step = self.chunk_window(instruction)
        chunks, owner = [], []
        for d, ids in enumerate(token_ids):
            start = 0
            while True:
                chunks.append(list(ids[start : start + window]))
                owner.append(d)
                if start + window >= len(ids):
                    break
                start += step
        return chunks, owner

    def documents(self, texts: list[str], instruction: str = "") -> dict[str, torch.Tensor]:
        """A training batch of documents: one row per text, or under encoding=chunked one row per chunk with
        `chunk_owner` (the document of each row) for the embedder to aggregate (study/model.py)."""
        if self.chunk is None:
            return self(texts, instruction)
        chunks, owner = self.split(self.tokenize(texts), instruction)
        batch = self.collate(chunks, instruction)
        batch["chunk_owner"] = torch.tensor(owner, dtype=torch.long)
        return batch

    def answer_in_one_chunk(self, n_tokens: int, span: tuple[int, int], instruction: str = "") -> bool:
        """Whether the token span [start, end) of a document of `n_tokens` lies inside one of its chunks."""
        window, step = self.chunk_window(instruction)
        start, end = span
        if end > n_tokens:
            return False
        if n_tokens <= window:
            return True
        last = -(-(n_tokens - window) // step)  # index of the window that reaches the end
        k = min(start // step, last)  # the last window that starts at or before the span
        return k * step + window >= end


def builder_from_config(tokenizer, max_length: int, padding_side: str, mcfg) -> InputBuilder:
    """The InputBuilder of a `model` config: special tokens, instruction, encoding, chunks, mask tokens."""
    chunk = getattr(mcfg, "chunk", None)
    spec = ChunkSpec(int(chunk.length), int(chunk.overlap), str(chunk.aggregate)) if chunk is not None else None
    return InputBuilder(tokenizer, max_length, padding_side, mcfg.append_eos, mcfg.exclude_instruction,
                        encoding=getattr(mcfg, "encoding", "full"),
                        mask_tokens=getattr(mcfg, "mask_tokens", 0) if mcfg.pooling == "mask_tokens" else 0,
                        chunk=spec)
