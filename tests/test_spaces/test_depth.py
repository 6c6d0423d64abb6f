"""Depth: residual blocks found in any model and replaced by the identity (block_drop)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from tradeoff.spaces import KNOBS, ApplyContext, Plan, PlanError, apply_config, apply_plan, format_plan
from tradeoff.spaces.allocation import allocate, grid
from tradeoff.spaces.depth import block_influence, droppable_blocks
from tradeoff.spaces.sensitivity import measure_sensitivity

DEPTH = KNOBS["block_drop"]


class Block(nn.Module):
    """relu(x + bn2(conv2(relu(bn1(conv1(x)))))): a residual block that keeps its input's shape."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class Down(Block):
    """A residual block that halves the resolution and doubles the channels (a 1x1 skip)."""

    def __init__(self, c: int) -> None:
        super().__init__(c)
        self.conv1 = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(2 * c), nn.BatchNorm2d(2 * c)
        self.conv2 = nn.Conv2d(2 * c, 2 * c, 3, padding=1, bias=False)
        self.skip = nn.Conv2d(c, 2 * c, 1, stride=2, bias=False)

    def forward(self, x):
        return torch.relu(self.skip(x) + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class FourBlocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.b1, self.b2, self.b3, self.b4 = Block(8), Block(8), Down(8), Block(16)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))

    def forward(self, x):
        return self.head(self.b4(self.b3(self.b2(self.b1(self.stem(x))))))


def four_blocks() -> nn.Module:
    torch.manual_seed(0)
    net = FourBlocks()
    with torch.no_grad():  # trained-looking statistics, so that no block is near the identity by chance
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return net.eval()


def ctx(x=None) -> ApplyContext:
    x = torch.randn(1, 3, 16, 16) if x is None else x
    return ApplyContext(example_input=x, num_classes=10, calibration=(torch.randn(16, 3, 16, 16),))


def test_the_groups_are_the_residual_blocks_that_keep_their_shape():
    net = four_blocks()
    blocks = droppable_blocks(net, torch.randn(1, 3, 16, 16))
    assert [name for name, _ in blocks] == ["b1", "b2", "b4"]  # b3 downsamples: never a group
    assert dict(blocks)["b4"] == sum(p.numel() for p in net.b4.parameters())
    # nor is a plain convolution that keeps the shape, nor a model without a residual block
    plain = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 3, 1))
    assert droppable_blocks(plain.eval(), torch.randn(1, 3, 8, 8)) == []


def test_dropping_blocks_leaves_the_network_computed_by_hand():
    net = four_blocks()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        by_hand = net.head(net.b3(net.b1(net.stem(x))))  # b2 and b4 are the identity
    applied = apply_config(four_blocks(), DEPTH.make({"b2": 1.0, "b4": 1.0, "b1": 0.0}), ctx(x[:1]))
    assert dict(applied.facts) == {"dropped_blocks": ("b2", "b4")}
    model = applied.model.eval()
    assert isinstance(model.b2, nn.Identity) and isinstance(model.b4, nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(model(x), by_hand)


def test_a_block_that_adds_nothing_is_measured_harmless_and_dropped_first():
    net = four_blocks()
    with torch.no_grad():
        net.b2.bn2.weight.zero_()  # its branch adds zero: the block is the identity
        net.b2.bn2.bias.zero_()
    x = torch.randn(1, 3, 16, 16)
    assert block_influence(net, ["b1", "b2", "b4"], torch.randn(8, 3, 16, 16))["b2"] == pytest.approx(
        0, abs=1e-6
    )

    # global: a third of the blocks goes, the least influential one
    applied = apply_config(four_blocks_with(net), DEPTH.make(1 / 3), ctx(x))
    assert applied.facts["dropped_blocks"] == ("b2",)

    # allocated: the sensitivity pass measures each block alone replaced by the identity
    torch.manual_seed(1)
    images = torch.randn(64, 3, 16, 16)
    labels = net(images).argmax(1)
    table = measure_sensitivity(
        net, images, labels, example_input=x, num_classes=10, settings={"block_drop": [1.0]}
    )
    assert [r["group"] for r in table.rows["block_drop"]] == ["b1", "b2", "b4"]
    assert table.effect("block_drop", "b2", 1.0) == pytest.approx(0, abs=1e-6)
    assert table.effect("block_drop", "b1", 1.0) > 0 and table.effect("block_drop", "b4", 1.0) > 0
    spec = DEPTH.validate(DEPTH.default_space)
    values = grid("block_drop", spec)
    assert values == [0.0, 1.0]
    # a budget of one small block's parameters: b2 goes, at any sharpness
    for sharpness in (0.0, 1.0):
        plan = allocate(table, "block_drop", 0.15, sharpness, values)
        assert plan == {"b1": 0.0, "b2": 1.0, "b4": 0.0, "*": 0.0}, sharpness


def four_blocks_with(net: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(net)


def test_a_model_without_blocks_lists_the_knob_as_skipped_and_a_bad_block_is_refused():
    plain = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)
    )
    applied = apply_config(plain.eval(), DEPTH.make(0.4), ctx())
    assert applied.model is plain and applied.skipped and applied.skipped[0].startswith("block_drop: *: ")
    with pytest.raises(PlanError, match="b3 is not a block that can be dropped.*droppable: b1, b2, b4"):
        apply_config(four_blocks(), DEPTH.make({"b3": 1.0}), ctx())


def test_the_plan_names_the_dropped_blocks():
    assert format_plan(Plan(block_drop=0.4), {"dropped_blocks": ["layer3.1", "layer4.1"]}) == (
        "block_drop=0.4 (layer3.1, layer4.1)"
    )
    assert format_plan(Plan(block_drop={"layer3.1": 1, "layer4.1": 1, "layer1.0": 0, "layer1.1": 0})) == (
        "block_drop=layer3.1, layer4.1"
    )
    assert format_plan(Plan(block_drop=0.4)) == "block_drop=0.4"  # no model built: no names


def test_not_searched_unless_named():
    from tradeoff.spaces import default_space, validate_space

    assert "block_drop" not in default_space() and "block_drop" not in validate_space(None)
    assert validate_space({"block_drop": {"low": 0, "high": 0.6, "step": 0.2}})["block_drop"]["high"] == 0.6


DROPPABLE = {  # residual blocks that keep their input's shape, as torchvision builds them
    "resnet18": 5,  # layer1.0, layer1.1, and the second block of layers 2-4
    "mobilenet_v2": 10,  # the inverted residuals with a skip
    "efficientnet_b0": 9,
    "regnet_x_400mf": 18,  # depths 1, 2, 7, 12: all but each stage's first
    "convnext_tiny": 18,  # 3 + 3 + 9 + 3 CNBlocks
}


@pytest.mark.parametrize("name", sorted(DROPPABLE))
def test_torchvision_architectures_list_their_blocks_and_run_with_blocks_dropped(name):
    torch.manual_seed(0)
    teacher = torchvision.models.get_model(name, weights=None, num_classes=7).eval()
    x = torch.randn(1, 3, 64, 64)
    blocks = droppable_blocks(teacher, x)
    assert len(blocks) == DROPPABLE[name], [b for b, _ in blocks]
    steps = []

    def finetune(model, from_scratch):  # two real steps of SGD, as a trial's fine-tune would do
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        model.train()
        for _ in range(2):
            loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 64, 64)), torch.randint(0, 7, (4,)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps.append(loss.item())
        return model.eval()

    ctx = ApplyContext(
        example_input=x, num_classes=7, calibration=(torch.randn(8, 3, 64, 64),), finetune=finetune
    )
    out = apply_plan(teacher, Plan(block_drop=0.4), ctx)  # with the other knobs: test_architectures
    dropped = out.facts.dropped_blocks
    assert len(dropped) == round(0.4 * DROPPABLE[name]) and len(steps) == 2
    assert all(isinstance(out.float_model.get_submodule(b), nn.Identity) for b in dropped)
    with torch.no_grad():
        assert out.model(torch.randn(2, 3, 64, 64)).shape == (2, 7)


def test_later_knobs_pass_over_the_layers_of_a_dropped_block():
    """An allocated plan sets every measured layer of every knob, those inside a block that depth
    drops included: the block's layers went with it; a real typo is still refused."""
    plan = Plan(
        block_drop={"b2": 1.0, "b1": 0.0},
        prune_ratio={"b4.conv1": 0.5, "b2.conv1": 0.5, "*": 0.0},
        rank_ratio={"b2.conv2": 0.5, "*": 1.0},
    )
    out = apply_plan(four_blocks(), plan, ctx())
    assert isinstance(out.model.b2, nn.Identity) and out.model.b4.conv1.out_channels == 16 - 8
    with pytest.raises(PlanError, match="no layer 'b9.conv1'"):
        apply_plan(four_blocks(), Plan(block_drop={"b2": 1.0}, prune_ratio={"b9.conv1": 0.5}), ctx())
