"""GroupNorm + scale-shift + SiLU in one autograd function, against the composition of
PyTorch's own operations it replaces."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from diffuse.nn.group_norm import fused_group_norm_applies, group_norm_act
from diffuse.nn.layers import GroupNorm32

CL = torch.channels_last


def composed(x, weight, bias, groups, eps, scale=None, shift=None, silu=False):
    """What the fused function stands for, by PyTorch's operations one at a time."""
    y = F.group_norm(x, groups, weight, bias, eps)
    if scale is not None:
        y = torch.addcmul(shift, y, 1 + scale)
    return F.silu(y) if silu else y


def case(n, c, size, seed, dtype=torch.float32, mean=1.0, spread=3.0):
    """Channels_last x with a non-zero mean, affine parameters and a scale-shift."""
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape, s=1.0, m=0.0):
        return (m + s * torch.randn(*shape, generator=generator, dtype=torch.float64)).to(dtype)

    x = draw(n, c, size, size, s=spread, m=mean).contiguous(memory_format=CL)
    return x, draw(c), draw(c), draw(n, c, 1, 1, s=0.3), draw(n, c, 1, 1)


@pytest.mark.parametrize(
    ("c", "groups", "size"),
    [(32, 16, 28), (64, 32, 8), (12, 3, 5)],  # 2 channels a group (fashion), 2 at 8x8, 4
)
@pytest.mark.parametrize(("adaptive", "silu"), [(True, True), (False, True), (False, False)])
def test_values_and_gradients_match_the_composed_operations(c, groups, size, adaptive, silu):
    x, weight, bias, scale, shift = case(3, c, size, seed=c + size)
    if not adaptive:
        scale = shift = None
    leaves = [t.requires_grad_() for t in (x, weight, bias, scale, shift) if t is not None]
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(9))
    results = []
    for function in (group_norm_act, composed):
        y = function(x, weight, bias, groups, 1e-5, scale, shift, silu)
        results.append((y, *torch.autograd.grad(y, leaves, grad_out)))
    for name, fused, reference in zip(["y", "x", "w", "b", "s", "t"], *results, strict=False):
        # float32 rounding in another order: 1e-5 of the largest value, as for the U-Nets
        # against the reference networks
        scale_of = reference.abs().max().item()
        torch.testing.assert_close(fused, reference, rtol=0, atol=1e-5 * scale_of, msg=name)
    assert results[0][0].is_contiguous(memory_format=CL)
    assert results[0][1].is_contiguous(memory_format=CL)  # dx in the input's layout


@pytest.mark.parametrize("adaptive", [True, False])
def test_gradients_are_those_of_the_function_in_float64(adaptive):
    x, weight, bias, scale, shift = case(2, 6, 3, seed=4, dtype=torch.float64)
    if not adaptive:
        scale = shift = None
    inputs = [t.requires_grad_() if t is not None else None for t in (x, weight, bias)]
    extra = [t.requires_grad_() for t in (scale, shift)] if adaptive else [None, None]

    def function(x, weight, bias, scale, shift):
        return group_norm_act(x, weight, bias, 3, 1e-5, scale, shift, silu=True)

    assert torch.autograd.gradcheck(function, (*inputs, *extra))


@pytest.mark.parametrize("seed", range(3))
def test_a_large_mean_keeps_the_normalisation_accurate(seed):
    # a mean of 50 standard deviations: the two-pass variance stays within float32 rounding
    # of the inputs (about 1e-5 here; E[x^2] - E[x]^2 in float32 is off by about 1e-3)
    x, weight, bias, _, _ = case(2, 8, 6, seed=seed, mean=100.0, spread=2.0)
    exact = composed(x.double(), weight.double(), bias.double(), 4, 1e-5)
    fused = group_norm_act(x, weight, bias, 4, 1e-5)
    torch.testing.assert_close(fused.double(), exact, rtol=0, atol=5e-5)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("mean", [1.0, 100.0])
def test_bf16_values_and_gradients_are_within_bf16_rounding_of_float64(seed, mean):
    # bf16 x, float32 affine parameters (GroupNorm32 under autocast), bf16 scale-shift (a
    # linear layer's output under autocast); a mean of 50 spreads must not cost precision:
    # the work is on x measured from the group's mean
    x, weight, bias, scale, shift = case(3, 32, 8, seed=seed, mean=mean, spread=2.0)
    x, scale, shift = (t.to(torch.bfloat16) for t in (x, scale, shift))
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed)).to(x.dtype)
    results = []
    for tensors in (
        (x, weight, bias, scale, shift),
        [t.double() for t in (x, weight, bias, scale, shift)],
    ):
        leaves = [t.detach().contiguous(memory_format=CL) if t.dim() == 4 and t.shape[-1] > 1
                  else t.detach() for t in tensors]  # fmt: skip
        leaves = [t.requires_grad_() for t in leaves]
        function = group_norm_act if leaves[0].dtype == torch.bfloat16 else composed
        y = function(*leaves[:3], 16, 1e-5, *leaves[3:], True)
        results.append((y, *torch.autograd.grad(y, leaves, grad_out.to(y.dtype))))
    for name, low, exact in zip(["y", "x", "w", "b", "s", "t"], *results, strict=True):
        assert low.dtype == (torch.float32 if name in "wb" else torch.bfloat16), name
        error = ((low.double() - exact).norm() / exact.norm()).item()
        assert error < 1e-2, (name, error)  # bf16 keeps 8 bits: 1.7e-3 to 4.8e-3 here
    assert results[0][0].is_contiguous(memory_format=CL)
    assert results[0][1].is_contiguous(memory_format=CL)


def test_groupnorm32_takes_the_fused_path_only_for_channels_last_cpu_tensors():
    x, *_ = case(2, 8, 4, seed=2)
    assert fused_group_norm_applies(x)
    assert fused_group_norm_applies(x.to(torch.bfloat16))
    assert not fused_group_norm_applies(x.contiguous())
    assert not fused_group_norm_applies(x.to(torch.float16))
    norm = GroupNorm32(4, 8)
    with torch.no_grad():
        norm.weight.normal_(generator=torch.Generator().manual_seed(3))
        scale, shift = torch.full((2, 8, 1, 1), 0.5), torch.full((2, 8, 1, 1), -1.0)
        either = [norm(t, scale, shift, silu=True) for t in (x, x.contiguous())]
    expected = composed(x.contiguous(), norm.weight, norm.bias, 4, norm.eps, scale, shift, True)
    for result in either:  # same values from both paths (float32 rounding apart)
        torch.testing.assert_close(result, expected, rtol=0, atol=1e-5)


def test_scale_without_shift_is_refused():
    x, weight, bias, scale, _ = case(1, 4, 2, seed=0)
    with pytest.raises(ValueError, match="scale and shift together"):
        group_norm_act(x, weight, bias, 2, 1e-5, scale=scale)


@pytest.mark.parametrize("groups", [0, 3])
def test_channels_that_do_not_split_into_the_groups_are_refused(groups):
    x, weight, bias, _, _ = case(1, 4, 2, seed=0)
    with pytest.raises(ValueError, match="4 channels do not split into"):
        group_norm_act(x, weight, bias, groups, 1e-5)


def nchw_case(dtype=torch.float64):
    """An NCHW x, a GroupNorm32 with non-trivial affine parameters, a scale and a shift."""
    x, weight, bias, scale, shift = case(3, 8, 5, seed=6, dtype=torch.float64)
    norm = GroupNorm32(4, 8).to(torch.float64 if dtype == torch.float64 else torch.float32)
    with torch.no_grad():
        norm.weight.copy_(weight)
        norm.bias.copy_(bias)
    return x.contiguous().to(dtype), norm, scale.to(dtype), shift.to(dtype)


def test_the_scale_shift_folded_into_one_groupnorm_is_exact_forward_and_backward():
    # NCHW: the batch seen as one image of N x C channels, the scale-shift in the affine
    x, norm, scale, shift = nchw_case()
    leaves = [x, norm.weight, norm.bias, scale, shift]
    for leaf in leaves:
        leaf.requires_grad_()
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=x.dtype)
    folded = norm(x, scale, shift, silu=True)
    composed_ = composed(x, norm.weight, norm.bias, 4, norm.eps, scale, shift, silu=True)
    for got, expected in zip(
        (folded, *torch.autograd.grad(folded, leaves, grad_out)),
        (composed_, *torch.autograd.grad(composed_, leaves, grad_out)),
        strict=True,
    ):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda *t: norm(t[0], t[1], t[2]), (x, scale, shift))


def test_bf16_nchw_and_channels_last_scale_shift_agree_within_bf16_rounding():
    x, norm, scale, shift = nchw_case(torch.bfloat16)
    exact = composed(
        x.double(), norm.weight.double(), norm.bias.double(), 4, norm.eps,
        scale.double(), shift.double(),
    )  # fmt: skip
    with torch.no_grad():
        for layout in (x, x.contiguous(memory_format=CL)):  # folded; GroupNorm then addcmul
            result = norm(layout, scale, shift)
            assert result.dtype == torch.bfloat16
            assert (result.double() - exact).norm() / exact.norm() < 1e-2


@pytest.mark.parametrize("silu", [False, True])
def test_gradients_under_torch_compile_are_the_eager_ones(silu):
    # torch 2.11 compiled a Function whose output was changed in place (the in-place SiLU)
    # into one whose every input gradient was zero.
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 8, 5, 5, generator=generator).to(memory_format=torch.channels_last)
    weight, bias = torch.randn(8, generator=generator), torch.randn(8, generator=generator)
    scale, shift = torch.randn(2, 2, 8, 1, 1, generator=generator)
    inputs = [t.requires_grad_() for t in (x, weight, bias, scale, shift)]

    def loss(x, weight, bias, scale, shift):
        return group_norm_act(x, weight, bias, 4, 1e-5, scale, shift, silu).square().sum()

    eager = torch.autograd.grad(loss(*inputs), inputs)
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    for a, b in zip(torch.autograd.grad(compiled(*inputs), inputs), eager, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        assert b.abs().max() > 0
