"""Texts -> model inputs: special tokens, instruction prefix left out of the pool, both padding sides."""

import pytest
import torch

from study.inputs import InputBuilder


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_and_pool_mask(tokenizer, side):
    b = InputBuilder(tokenizer, max_length=64, padding_side=side, exclude_instruction=True)
    batch = b(["a short text", "a somewhat longer text with more words in it"], instruction="Retrieve: ")
    ids, att, pool = batch["input_ids"], batch["attention_mask"], batch["pool_mask"]
    n_instr = len(b.instruction_ids("Retrieve: "))
    for row in range(2):
        real = att[row].nonzero().flatten()
        assert (real.diff() == 1).all()  # contiguous
        assert (real[0] == 0) if side == "right" else (real[-1] == ids.shape[1] - 1)
        seq = ids[row, real].tolist()
        assert seq[0] == tokenizer.bos_token_id and seq[-1] == tokenizer.eos_token_id
        # The pool skips <s> and the instruction, keeps the text and </s>.
        pooled = pool[row].nonzero().flatten()
        assert pooled[0] == real[0] + 1 + n_instr and pooled[-1] == real[-1]
    assert (ids[att == 0] == tokenizer.pad_token_id).all()


def test_instruction_kept_in_pool_unless_excluded(tokenizer):
    keep = InputBuilder(tokenizer, 64, "right")(["text"], instruction="Retrieve: ")
    torch.testing.assert_close(keep["pool_mask"], keep["attention_mask"])


def test_truncation_keeps_special_tokens_and_the_instruction(tokenizer):
    b = InputBuilder(tokenizer, max_length=16, padding_side="left")
    seq, skip = b.sequence(b.tokenize(["word " * 100])[0], "Retrieve: ")
    assert len(seq) == 16 and seq[0] == tokenizer.bos_token_id and seq[-1] == tokenizer.eos_token_id
    assert seq[1 : 1 + len(b.instruction_ids("Retrieve: "))] == list(b.instruction_ids("Retrieve: "))


def test_bad_padding_side_names_the_options(tokenizer):
    with pytest.raises(ValueError, match="'middle'.*left or right"):
        InputBuilder(tokenizer, 64, "middle")
