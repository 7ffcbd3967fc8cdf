"""Text -> model inputs: special tokens, an optional instruction prefix, truncation, padding, pool mask.

Instructions and texts are tokenized separately and concatenated, so we know
exactly which positions are instruction tokens (to leave them out of the pool
when asked) and BPE merges never cross the boundary. Tokenizing is split from
collating so the evaluator can sort by length before padding.
"""

from __future__ import annotations

import functools

import torch


class InputBuilder:
    def __init__(self, tokenizer, max_length: int, padding_side: str, append_eos: bool = True,
                 exclude_instruction: bool = False):
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side={padding_side!r}; choose left or right")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.padding_side = padding_side
        self.exclude_instruction = exclude_instruction
        self.pad_id = tokenizer.pad_token_id
        self.prefix, self.suffix = self._special_tokens(tokenizer)
        if append_eos and not self.suffix and tokenizer.eos_token_id is not None:
            self.suffix = [tokenizer.eos_token_id]
        if max_length <= len(self.prefix) + len(self.suffix):
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

    def text_room(self, instruction: str = "") -> int:
        """How many text tokens fit after the special tokens and the instruction (the truncation point)."""
        return max(1, self.max_length - len(self.prefix) - len(self.suffix) - len(self.instruction_ids(instruction)))

    def sequence(self, ids: list[int], instruction: str = "") -> tuple[list[int], int]:
        """Full id sequence (truncated text) and the number of leading non-pooled positions."""
        instr = list(self.instruction_ids(instruction))
        room = self.max_length - len(self.prefix) - len(self.suffix) - len(instr)
        if room < 1:
            instr, room = instr[: max(0, room + len(instr) - 1)], 1
        seq = self.prefix + instr + list(ids[:room]) + self.suffix
        skip = len(self.prefix) + len(instr) if self.exclude_instruction and instr else 0
        return seq, skip

    def collate(self, token_ids: list[list[int]], instruction: str | list[str] = "") -> dict[str, torch.Tensor]:
        """Pad to the longest sequence; `instruction` is one string for all or one per text."""
        instructions = [instruction] * len(token_ids) if isinstance(instruction, str) else instruction
        seqs = [self.sequence(ids, instr) for ids, instr in zip(token_ids, instructions, strict=True)]
        width = max(len(s) for s, _ in seqs)
        input_ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(seqs), width), dtype=torch.long)
        pool = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, (seq, skip) in enumerate(seqs):
            start = width - len(seq) if self.padding_side == "left" else 0
            input_ids[i, start : start + len(seq)] = torch.tensor(seq)
            attention[i, start : start + len(seq)] = 1
            pool[i, start + skip : start + len(seq)] = 1
        return {"input_ids": input_ids, "attention_mask": attention, "pool_mask": pool}

    def __call__(self, texts: list[str], instruction: str | list[str] = "") -> dict[str, torch.Tensor]:
        return self.collate(self.tokenize(texts), instruction)
