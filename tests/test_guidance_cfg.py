"""Classifier-free guidance as a model wrapper."""

import torch

from diffuse.diffusion.guidance import ClassifierFreeGuidance, guidance_scale_to_weight


class Recorder(torch.nn.Module):
    """eps(x, y) = x + y, plus a constant variance channel; records every call."""

    def __init__(self, learned_variance=False):
        super().__init__()
        self.calls = []
        self.learned_variance = learned_variance

    def forward(self, x, t, y, low_res=None):
        self.calls.append((x.shape[0], y.tolist(), None if low_res is None else low_res.shape[0]))
        out = x + y.reshape(-1, 1, 1, 1).float()
        return torch.cat([out, out * 0 + 7], 1) if self.learned_variance else out


def test_weight_zero_is_the_conditional_model():
    model = Recorder()
    x, t, y = torch.zeros(3, 1, 2, 2), torch.zeros(3, dtype=torch.long), torch.tensor([0, 1, 2])
    out = ClassifierFreeGuidance(model, 0.0, null_class=10, channels=1)(x, t, y=y)
    torch.testing.assert_close(out, model(x, t, y=y))
    assert model.calls[0] == (3, [0, 1, 2], None)


def test_guided_output_is_the_paper_combination_in_one_batched_pass():
    model = Recorder(learned_variance=True)
    x = torch.randn(2, 1, 2, 2)
    t = torch.tensor([5, 5])
    y = torch.tensor([3, 4])
    low_res = torch.zeros(2, 1, 1, 1)
    out = ClassifierFreeGuidance(model, 2.0, null_class=10, channels=1)(x, t, y=y, low_res=low_res)
    assert model.calls == [(4, [3, 4, 10, 10], 4)]  # one pass, twice the batch
    cond, uncond = x + y.reshape(-1, 1, 1, 1), x + 10
    torch.testing.assert_close(out[:, :1], 3.0 * cond - 2.0 * uncond)
    torch.testing.assert_close(out[:, 1:], torch.full_like(x, 7.0))


def test_scale_conversion():
    assert guidance_scale_to_weight(7.5) == 6.5
