import pytest
import torch

from study.pooling import Pooler

# Two texts: row 0 has 3 real tokens, row 1 has 2. Hidden states are chosen by hand.
REAL = [
    torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0]]),
    torch.tensor([[2.0, 2.0], [4.0, 0.0]]),
]
EXPECTED = {
    "mean": [[3.0, 2.0], [3.0, 1.0]],
    "first_token": [[1.0, 0.0], [2.0, 2.0]],
    "last_token": [[5.0, 4.0], [4.0, 0.0]],
    # weights 1,2,3 (sum 6) and 1,2 (sum 3)
    "weighted_mean": [[(1 + 6 + 15) / 6, (0 + 4 + 12) / 6], [(2 + 8) / 3, (2 + 0) / 3]],
}


def padded(side, pad_value=99.0):
    hidden = torch.full((2, 4, 2), pad_value)
    mask = torch.zeros(2, 4, dtype=torch.long)
    for i, r in enumerate(REAL):
        sl = slice(4 - len(r), 4) if side == "left" else slice(0, len(r))
        hidden[i, sl] = r
        mask[i, sl] = 1
    return hidden, mask


@pytest.mark.parametrize("mode", sorted(EXPECTED))
@pytest.mark.parametrize("side", ["left", "right"])
def test_pooling_matches_hand_computed_values(mode, side):
    hidden, mask = padded(side)
    torch.testing.assert_close(Pooler(mode)(hidden, mask), torch.tensor(EXPECTED[mode]))


def test_excluded_instruction_tokens_do_not_count():
    hidden, mask = padded("right")
    pool = mask.clone()
    pool[0, 0] = 0  # first token of row 0 is an instruction token
    torch.testing.assert_close(Pooler("mean")(hidden, pool)[0], torch.tensor([4.0, 3.0]))
    torch.testing.assert_close(Pooler("first_token")(hidden, pool)[0], torch.tensor([3.0, 2.0]))


def test_latent_attention_ignores_padding_and_learns():
    torch.manual_seed(0)
    pooler = Pooler("latent_attention", hidden_size=8, num_latents=16, num_heads=2)
    x = torch.randn(1, 3, 8)
    left = torch.cat([torch.randn(1, 2, 8), x], 1)
    right = torch.cat([x, torch.randn(1, 2, 8)], 1)
    m_left = torch.tensor([[0, 0, 1, 1, 1]])
    m_right = torch.tensor([[1, 1, 1, 0, 0]])
    out_l, out_r = pooler(left, m_left), pooler(right, m_right)
    torch.testing.assert_close(out_l, out_r)
    assert out_l.shape == (1, 8)
    out_l.sum().backward()
    assert pooler.latent.latents.grad.abs().sum() > 0


def test_unknown_mode_names_options():
    with pytest.raises(ValueError, match="'max'.*mean, last_token"):
        Pooler("max")
