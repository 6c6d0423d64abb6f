from __future__ import annotations

import pytest
import torch
from torch import nn

from tradeoff.spaces import ApplyContext
from tradeoff.spaces.low_rank import factor_conv, factor_linear, factorize_, target_rank


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def ctx(shape=(1, 3, 8, 8)):
    return ApplyContext(example_input=torch.randn(*shape), num_classes=10)


def test_linear_512_256_at_rank_32_has_the_hand_counted_parameters():
    model = nn.Sequential(nn.Linear(512, 256))
    assert target_rank(0.125, 256) == 32
    factorize_(model, 0.125, ctx(), [])
    assert n_params(model) == 512 * 32 + 32 * 256 + 256


def test_rank_is_rounded_up_to_a_multiple_of_8_and_capped():
    assert target_rank(0.1, 256) == 32  # ceil(25.6) = 26 -> 32
    assert target_rank(0.01, 256) == 8
    assert target_rank(0.99, 20) == 20


def test_full_rank_factors_reproduce_the_layer():
    torch.manual_seed(0)
    lin = nn.Linear(40, 24)
    x = torch.randn(5, 40)
    torch.testing.assert_close(factor_linear(lin, 24)(x), lin(x), atol=1e-5, rtol=1e-4)
    for conv in (
        nn.Conv2d(6, 10, 3, stride=2, padding=1),
        nn.Conv2d(6, 10, (3, 5), padding=(1, 2), bias=False),
        nn.Conv2d(6, 10, 1),
    ):
        o, c, kh, kw = conv.weight.shape
        x = torch.randn(2, 6, 9, 9)
        full = min(c * kh, o * kw)
        torch.testing.assert_close(factor_conv(conv, full)(x), conv(x), atol=1e-5, rtol=1e-4)


def test_conv_parameters_follow_the_spatial_svd_count():
    conv = nn.Conv2d(64, 64, 3, padding=1, bias=False)
    model = nn.Sequential(conv)
    factorize_(model, 0.25, ctx((1, 64, 8, 8)), [])
    k = target_rank(0.25, 64 * 3)  # 48
    assert n_params(model) == k * 64 * 3 + 64 * k * 3
    assert model(torch.randn(1, 64, 8, 8)).shape == (1, 64, 8, 8)


def test_layers_without_a_saving_and_grouped_convs_are_skipped_and_listed():
    model = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.Linear(16, 16))
    skipped: list[str] = []
    factorize_(model, 0.9, ctx((1, 8, 8, 8)), skipped)
    assert isinstance(model[0], nn.Conv2d) and isinstance(model[1], nn.Linear)
    assert any("0: grouped or depthwise" in s for s in skipped)
    assert any("1: rank 16 of 16 saves no parameters" in s for s in skipped)


def test_a_per_layer_rank_factors_each_group_at_its_own_rank():
    model = nn.Sequential(nn.Linear(64, 64), nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64)))
    x = torch.randn(3, 64)
    want = model(x).shape
    skipped: list[str] = []
    # the most specific group wins: "1.0" over "1"; "*" is every other layer; 1.0 keeps a layer whole
    factorize_(model, {"*": 0.125, "1": 1.0, "1.0": 0.25}, ctx((1, 64)), skipped)
    assert isinstance(model[0], nn.Sequential) and model[0][0].out_features == 8
    assert isinstance(model[1][0], nn.Sequential) and model[1][0][0].out_features == 16
    assert isinstance(model[1][1], nn.Linear)
    assert model(x).shape == want and not skipped


@pytest.mark.parametrize("ratio", [0.0, -0.5])
def test_a_rank_of_nothing_is_rejected(ratio):
    from tradeoff.spaces import PlanError

    with pytest.raises(PlanError):
        factorize_(nn.Sequential(nn.Linear(4, 4)), ratio, ctx(), [])
