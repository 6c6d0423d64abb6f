"""FLOPs at batch 1, fvcore's count on the float model."""

from __future__ import annotations

import warnings

from torch import nn

from tradeoff.search.figures import Figure, register_figure
from tradeoff.search.measure.probe import Probe

FLOPS_METHOD = "fvcore FlopCountAnalysis, batch 1; one fused multiply-add counts as one flop"
_MAC_OPS = ("conv", "linear", "addmm", "matmul", "bmm", "baddbmm", "einsum", "mm")


def count_flops(model: nn.Module, example_input) -> tuple[int, int]:
    """(total flops, of which multiply-accumulates in conv/linear/matmul), fvcore's convention."""
    from fvcore.nn import FlopCountAnalysis

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fa = FlopCountAnalysis(model.eval(), example_input)
        fa.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = int(fa.total())
        by_op = fa.by_operator()
    macs = int(sum(v for op, v in by_op.items() if any(k in op for k in _MAC_OPS)))
    return total, macs


def _measure(probe: Probe) -> tuple[int, dict]:
    return probe.flop_counts[0], {"flops_method": FLOPS_METHOD}


register_figure(
    Figure(
        name="flops",
        unit="count",
        direction="minimize",
        label="FLOPs (M)",
        short="flops",
        measure=_measure,
        method=FLOPS_METHOD,
        weight="flops",
        constraint="max_flops",
        scale=1e-6,
        details=("flops_method",),
        integer=True,
    )
)
