"""Dropout with its mask drawn from whole random words: the statistics of torch's dropout
(keep probability 1 - p, unbiased output, independent elements), its gradient, and the
memory format of its input kept."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from diffuse.nn.dropout import RATE_TOLERANCE, Dropout, dropout, keep_mask, word_bits

CL = torch.channels_last


def within(observed: float, expected: float, sd: float, sds: float = 5.0) -> bool:
    return abs(observed - expected) <= sds * sd


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9, 0.001])
def test_each_element_is_kept_with_probability_one_minus_p(p):
    torch.manual_seed(0)
    keep, kept = keep_mask(torch.empty(1_000_001), p)
    bits = word_bits(p)
    assert kept == 1 - round(p * 2**bits) / 2**bits  # exactly what the words draw
    assert 1 - kept == pytest.approx(p, rel=RATE_TOLERANCE)
    n = keep.numel()
    assert within(keep.float().mean().item(), 1 - p, math.sqrt(p * (1 - p) / n))


def test_rates_16_bits_cannot_express_are_drawn_from_32_bit_words():
    assert [word_bits(p) for p in (0.1, 0.2, 0.5, 0.01)] == [16] * 4
    assert [word_bits(p) for p in (0.001, 1e-6)] == [32, 32]
    torch.manual_seed(7)
    _, kept = keep_mask(torch.empty(10), 1e-6)
    assert kept == pytest.approx(1 - 1e-6, abs=2**-32)  # not rounded away to "keep all"


def test_neighbouring_elements_drawn_from_one_word_are_independent():
    """Elements 4i .. 4i+3 share a 64-bit draw: any two are both dropped with probability
    p^2."""
    torch.manual_seed(1)
    p = 0.3
    keep, _ = keep_mask(torch.empty(4_000_000), p)
    words = keep.view(-1, 4)
    n = words.shape[0]
    for a, b in ((0, 1), (1, 2), (0, 3)):
        both_dropped = (~words[:, a] & ~words[:, b]).float().mean().item()
        assert within(both_dropped, p * p, math.sqrt(p * p * (1 - p * p) / n)), (a, b)


def test_kept_values_are_scaled_by_the_inverse_keep_probability_and_the_mean_is_kept():
    torch.manual_seed(2)
    p = 0.2
    x = torch.randn(64, 32, 14, 14)
    out = dropout(x, p)
    kept = out != 0
    _, keep_probability = keep_mask(x, p)
    torch.testing.assert_close(out[kept], x[kept] / keep_probability, rtol=1e-6, atol=0)
    ones = dropout(torch.ones(1_000_000), p)
    sd = math.sqrt(p / (1 - p) / ones.numel())  # of the mean of (keep / (1 - p))
    assert within(ones.mean().item(), 1.0, sd)


def test_the_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(3)
    x = torch.randn(8, 16, 7, 7, dtype=torch.float64, requires_grad=True)
    out = dropout(x, 0.25)
    grad = torch.randn_like(out)
    out.backward(grad)
    scale = out.detach() / x.detach()  # 0 where dropped, 1 / (1 - p) where kept
    torch.testing.assert_close(x.grad, grad * scale)
    torch.manual_seed(4)
    y = torch.randn(4, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(5)
    assert torch.autograd.gradcheck(lambda t: (torch.manual_seed(5), dropout(t, 0.4))[1], (y,))


def test_channels_last_stays_channels_last_and_odd_sizes_work():
    torch.manual_seed(6)
    x = torch.randn(3, 5, 7, 9).contiguous(memory_format=CL)
    out = dropout(x, 0.5)
    assert out.is_contiguous(memory_format=CL) and out.shape == x.shape
    kept = out != 0
    torch.testing.assert_close(out[kept], 2 * x[kept], rtol=0, atol=0)
    strided = torch.randn(6, 10)[:, ::2]  # not dense: drawn as a contiguous copy's
    assert dropout(strided, 0.5).shape == (6, 5)
    assert dropout(torch.empty(0, 4), 0.5).shape == (0, 4)


def test_the_same_seed_draws_the_same_mask():
    x = torch.randn(2, 8, 6, 6)
    torch.manual_seed(7)
    first = dropout(x, 0.1)
    torch.manual_seed(7)
    assert torch.equal(dropout(x, 0.1), first)
    assert not torch.equal(dropout(x, 0.1), first)


def test_evaluation_p_zero_and_p_one_are_torchs():
    x = torch.randn(4, 4)
    module = Dropout(0.5).eval()
    assert module(x) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    assert torch.equal(Dropout(0.3, inplace=True).eval()(x), x)


def test_the_module_is_torchs_dropout_with_the_same_arguments_and_no_state():
    module = Dropout(0.1)
    assert isinstance(module, torch.nn.Dropout) and module.p == 0.1
    assert dict(module.state_dict()) == {}
    with pytest.raises(ValueError):
        Dropout(1.5)
    torch.manual_seed(8)
    x = torch.ones(200_000)
    ours, theirs = module.train()(x), F.dropout(x, 0.1)
    assert within((ours == 0).float().mean().item(), (theirs == 0).float().mean().item(), 1e-3)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_the_gradient_under_torch_compile_is_the_same_mask_and_scale(backend):
    # torch 2.11 compiled a Function whose output was changed in place (the scaling by
    # 1 / (1 - p)) into one whose input gradient was zero, and its inductor could not
    # lower the mask's view as bytes.
    torch.manual_seed(6)
    x = torch.randn(4, 8, 5, 5, requires_grad=True)
    compiled = torch.compile(lambda t: dropout(t, 0.3), backend=backend, fullgraph=True)
    out = compiled(x)
    out.backward(torch.ones_like(out))
    kept = out.detach() != 0
    assert 0.5 < kept.float().mean() < 0.9
    torch.testing.assert_close(x.grad, kept / 0.7, rtol=1e-3, atol=0)
