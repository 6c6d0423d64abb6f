from __future__ import annotations

import math

import pytest
import torch

from search.training import kd_loss


def test_kd_loss_matches_a_hand_computation():
    s = torch.tensor([[1.0, 2.0, 0.0]])
    t = torch.tensor([[0.5, 2.5, -1.0]])
    y = torch.tensor([1])
    T, alpha = 2.0, 0.7

    def softmax(v):
        e = [math.exp(x) for x in v]
        return [x / sum(e) for x in e]

    ps, pt = softmax([x / T for x in s[0].tolist()]), softmax([x / T for x in t[0].tolist()])
    kl = sum(q * math.log(q / p) for p, q in zip(ps, pt))
    ce = -math.log(softmax(s[0].tolist())[1])
    expected = alpha * T * T * kl + (1 - alpha) * ce
    assert kd_loss(s, t, y, temperature=T, alpha=alpha).item() == pytest.approx(expected, rel=1e-5)


def test_kd_loss_with_alpha_zero_is_cross_entropy():
    s, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    ce = torch.nn.functional.cross_entropy(s, y)
    assert kd_loss(s, t, y, temperature=3.0, alpha=0.0).item() == pytest.approx(ce.item())
