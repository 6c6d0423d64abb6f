"""FLOPs at batch 1, fvcore's count on the float model with batch-norm folded into the
convolutions before it (as every deployed graph does), and the conv/linear multiply-accumulates
apart (the convention of torchvision's model table, whose "GFLOPS" are these MACs)."""

from __future__ import annotations

import warnings

from torch import nn

from tradeoff.search.trial.figures import Figure, register_figure
from tradeoff.search.trial.measure.probe import Probe

FLOPS_METHOD = (
    "fvcore FlopCountAnalysis, batch 1, batch-norm folded into the convolution before it; "
    "one fused multiply-add counts as one flop"
)
UNFOLDED = "; batch-norm not folded (the model does not trace with torch.fx)"
_MAC_OPS = ("conv", "linear", "addmm", "matmul", "bmm", "baddbmm", "einsum", "mm")


def fold_batchnorm(model: nn.Module) -> nn.Module | None:
    """A copy of ``model`` with every conv -> batch-norm pair folded into one convolution
    (torch.fx's ``fuse``), or None when the model does not trace with torch.fx."""
    import copy

    from torch.fx.experimental.optimization import fuse

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fuse(copy.deepcopy(model).eval())
    except Exception:  # noqa: BLE001 - control flow fx cannot trace, plug-in modules
        return None


def count_flops(model: nn.Module, example_input, *, fold: bool = True) -> tuple[int, int]:
    """(total flops, of which multiply-accumulates in conv/linear/matmul), fvcore's convention,
    on ``model`` with batch-norm folded (``fold``, where torch.fx traces it)."""
    from fvcore.nn import FlopCountAnalysis

    if fold:
        model = fold_batchnorm(model) or model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fa = FlopCountAnalysis(model.eval(), example_input)
        fa.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = int(fa.total())
        by_op = fa.by_operator()
    macs = int(sum(v for op, v in by_op.items() if any(k in op for k in _MAC_OPS)))
    return total, macs


def _measure(probe: Probe) -> tuple[int, dict]:
    total, macs = probe.flop_counts
    method = FLOPS_METHOD + ("" if probe.folded else UNFOLDED)
    return total, {"macs": macs, "flops_method": method}


register_figure(
    Figure(
        needs_training=False,
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
        details=("macs", "flops_method"),
        integer=True,
    )
)
