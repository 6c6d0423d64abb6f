"""Two models timed interleaved in one window: what the latency figure and the choice of an int8
form both use (here, under ``spaces``, because the quantization knob needs it and ``spaces``
does not import ``search``).

Each round runs a block of calls of one model, then of the other, the order alternating between
rounds; a round's ratio is the ratio of the two blocks' medians, and the result is the median of
the rounds' ratios with a distribution-free interval: a load that comes and goes moves both.
"""

from __future__ import annotations

import statistics
import time

import torch

CONFIDENCE = 0.95
BLOCK = 5  # calls of one model in a row before the other's


def median_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(lower, upper, coverage): a distribution-free interval for the median of ``values``
    from their order statistics (the sign test's binomial, as in Conover's *Practical
    Nonparametric Statistics*, 3.2); coverage is the exact confidence of the interval given
    (below ``confidence`` when there are too few values for it)."""
    from scipy.special import bdtr  # the binomial CDF (scipy.stats costs 0.6 s to import)

    v = sorted(values)
    n = len(v)
    # [v_(k), v_(n-k+1)] (1-based) covers the median with 1 - 2 P(X <= k-1), X ~ Binomial(n, 1/2):
    # the narrowest such interval with at least ``confidence``, else the widest (k = 1)
    k = 1
    while k + 1 <= (n + 1) // 2 and 1 - 2 * bdtr(k, n, 0.5) >= confidence:
        k += 1
    return v[k - 1], v[n - k], float(1 - 2 * bdtr(k - 1, n, 0.5))


def time_calls(fn, x: torch.Tensor, n: int, cuda: bool) -> list[float]:
    times = []
    for _ in range(n):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn(x)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn(x)
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def spread(times: list[float]) -> tuple[float, float, float]:
    times = sorted(times)
    q = statistics.quantiles(times, n=10, method="inclusive") if len(times) > 1 else times * 9
    return statistics.median(times), q[0], q[-1]


def paired_latency(
    fn, reference, example_input: torch.Tensor, *, warmup: int, repeats: int, device: str = "cpu"
) -> dict[str, float]:
    """``fn`` and ``reference`` timed interleaved in the same window: rounds of ``BLOCK`` calls
    of each, the order alternating between rounds, ``repeats`` calls of each in all. The ratio
    is the median over rounds of (median of ``fn``'s block / median of ``reference``'s), with
    a distribution-free 95 % interval: load that changes between rounds moves both models."""
    cuda = device.startswith("cuda")
    rounds = max(6, -(-repeats // BLOCK))
    ours: list[float] = []
    theirs: list[float] = []
    ratios: list[float] = []
    with torch.no_grad():
        x = example_input.to(device)
        for _ in range(warmup):
            fn(x)
            reference(x)
        for r in range(rounds):
            if r % 2:
                b = time_calls(reference, x, BLOCK, cuda)
                a = time_calls(fn, x, BLOCK, cuda)
            else:
                a = time_calls(fn, x, BLOCK, cuda)
                b = time_calls(reference, x, BLOCK, cuda)
            ours += a
            theirs += b
            ratios.append(statistics.median(a) / statistics.median(b))
    lo, hi, coverage = median_interval(ratios)
    med, p10, p90 = spread(ours)
    return {
        "median": med,
        "p10": p10,
        "p90": p90,
        "reference": statistics.median(theirs),
        "ratio": statistics.median(ratios),
        "ratio_lo": lo,
        "ratio_hi": hi,
        "coverage": coverage,
        "rounds": rounds,
    }
