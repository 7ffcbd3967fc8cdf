"""The tiny tokenizer reloads from a model folder exactly as trained (not as the model type's class)."""

from study.backbones.tokenizer import load_tokenizer


def test_saved_generic_tokenizer_reloads_identically_next_to_a_qwen2_config(tokenizer, tmp_path):
    from transformers import Qwen2Config

    Qwen2Config(vocab_size=len(tokenizer)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    again = load_tokenizer(str(tmp_path))
    text = "Ada's passkey is 12345. Remember it!"
    assert again(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert (again.pad_token_id, again.eos_token_id) == (tokenizer.pad_token_id, tokenizer.eos_token_id)


def test_digits_are_not_split_by_the_tiny_tokenizer(tokenizer):
    # Qwen2's pre-tokenizer splits numbers into single digits; ours keeps merges: a regression guard
    # for loading the wrong class.
    ids = tokenizer("12345", add_special_tokens=False)["input_ids"]
    assert len(ids) < 5
