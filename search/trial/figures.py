"""The figure registry: every measured quantity, declared once.

A :class:`Figure` says what a measured quantity is (name with its unit, direction, label and
axis, how it is written), how a user refers to it (cost-weight alias, constraint and its
command-line flag), what counts as noise when it is measured again (export), and how it is
measured (``measure``: a function of a :class:`~tradeoff.search.trial.measure.probe.Probe`).
Measurement, objectives, constraints, the cost function, the report, export and the CLI all
read :data:`FIGURES`; adding a figure is one :func:`register_figure` call beside its
measurement code (see ``search/trial/measure/memory.py``).

The standard figures register themselves in ``tradeoff.search.trial.measure``, imported at the
bottom of this module, so that :data:`FIGURES` is complete once this module is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

DIRECTIONS = ("maximize", "minimize")


def _bytes_text(v: float) -> str:
    return f"{v / 1e6:.3f} MB" if v >= 1e5 else f"{v / 1e3:.1f} kB"


# how a value of each unit is written for people
_TEXT: dict[str, Callable[[float], str]] = {
    "fraction": lambda v: f"{100 * v:.2f}%",
    "bytes": _bytes_text,
    "ms": lambda v: f"{v:.3f} ms",
    "mJ": lambda v: f"{v:.4f} mJ",
    "count": lambda v: f"{v / 1e6:.2f} M",
}


@dataclass(frozen=True)
class Tolerance:
    """What counts as noise when a figure is measured again (``tradeoff export``): a relative
    bound, an absolute one in validation images (accuracy), and whether the stored p10-p90
    spread may widen it (latency). ``rel_estimated`` applies when the stored ``*_method`` says
    ``estimated``."""

    text: str
    rel: float = 0.0
    rel_estimated: float | None = None
    images: float | None = None
    spread: bool = False


EXACT = Tolerance("exact")


@dataclass(frozen=True)
class Figure:
    """One measured quantity. ``name`` is the trial attribute and objective name (unit in the
    name); ``scale`` turns a value into the unit of ``label`` (axes, tables); ``constraint`` is
    the constraint's name (``max_...``/``min_...``), whose bound is given in
    ``constraint_unit``, ``constraint_scale`` of the figure's own unit (MB = 10^6 bytes).
    ``details`` are the other attributes ``measure`` records (its method, spread, ...);
    ``needs_training=False`` marks a figure that the untrained network already shows (it is
    measured before fine-tuning, so that a broken constraint stops the plan first)."""

    name: str
    unit: str
    direction: str
    label: str
    short: str
    measure: Callable[[Any], tuple[float, dict[str, Any]]]
    method: str
    weight: str
    constraint: str
    constraint_unit: str = ""
    constraint_scale: float = 1.0
    scale: float = 1.0
    log_axis: bool = True
    tolerance: Tolerance = EXACT
    details: tuple[str, ...] = ()
    integer: bool = False
    needs: tuple[str, ...] = field(default=())  # figures measured before this one that it reads
    # depends on the trained weights (accuracy): not measured before fine-tuning. A plug-in figure
    # is assumed to, unless it says otherwise; size, MACs, latency and energy depend on shapes only.
    needs_training: bool = True

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"figure {self.name!r}: `direction` must be one of {DIRECTIONS}.")
        if self.unit not in _TEXT:
            raise ValueError(f"figure {self.name!r}: `unit` must be one of {sorted(_TEXT)}.")
        expected = "max_" if self.direction == "minimize" else "min_"
        if not self.constraint.startswith(expected):
            raise ValueError(
                f"figure {self.name!r}: a {self.direction}d figure's constraint starts {expected}"
            )

    @property
    def method_key(self) -> str:
        """The attribute that records how a value was obtained."""
        return f"{self.short}_method"

    @property
    def flag(self) -> str:
        return "--" + self.constraint.replace("_", "-")

    def text(self, value: float) -> str:
        return _TEXT[self.unit](float(value))

    def versus(self, value: float, base: float | None) -> str:
        """The change against the baseline: points for a fraction, a ratio otherwise."""
        if base is None:
            return ""
        if self.unit == "fraction":
            return f" ({100 * (value - base):+.2f})"
        return f" (x{value / base:.2g})" if base else ""

    def bound_text(self, bound: float) -> str:
        """A constraint bound as the user typed it."""
        return f"{bound:.2%}" if self.unit == "fraction" else f"{bound:g}{self.constraint_unit}"

    def constraint_value(self, value: float, bound: float) -> float:
        """<= 0 where ``value`` meets the bound (Optuna's convention), in the figure's unit."""
        limit = bound * self.constraint_scale
        return float(value) - limit if self.direction == "minimize" else limit - float(value)

    def describe_miss(self, value: float, bound: float) -> str:
        shown = value / self.constraint_scale
        if self.unit == "fraction":
            return f"{self.short} {shown:.2%} < {bound:.2%}"
        sign = ">" if self.direction == "minimize" else "<"
        return f"{self.short} {shown:.4g}{self.constraint_unit} {sign} {bound:g}{self.constraint_unit}"

    def differs(self, stored: Mapping[str, Any], now: Mapping[str, Any], *, n_val: int) -> str | None:
        """A line saying how the re-measured value differs from the stored one beyond noise, or
        None (see :class:`Tolerance`)."""
        if self.name not in stored:
            return None
        old, new = float(stored[self.name]), float(now[self.name])
        tol = self.tolerance
        if tol.images is not None:
            if abs(new - old) * n_val > tol.images + 1e-9:
                return f"{self.name} {old:.4f} stored, {new:.4f} now"
            return None
        if tol.rel == 0 and tol.rel_estimated is None:  # exact
            return None if old == new else f"{self.name} {stored[self.name]} stored, {now[self.name]} now"
        rel = tol.rel
        if tol.rel_estimated is not None and str(stored.get(self.method_key, "")).startswith("estimated"):
            rel = tol.rel_estimated
        if tol.spread and old:
            p10 = float(stored.get(f"{self.short}_p10_{self.unit}", old))
            p90 = float(stored.get(f"{self.short}_p90_{self.unit}", old))
            rel = max(rel, (p90 - p10) / old)
        if old and abs(new - old) / old > rel:
            return f"{self.name} {old:.4g} stored, {new:.4g} now"
        return None


FIGURES: dict[str, Figure] = {}


def register_figure(figure: Figure) -> Figure:
    """Make ``figure`` measured on every trial, and usable as an objective, a constraint and a
    cost weight. Figures are measured in registration order (``needs`` must come first)."""
    for name, taken in (
        ("name", {f.name for f in FIGURES.values()}),
        ("weight", {f.weight for f in FIGURES.values()}),
        ("constraint", {f.constraint for f in FIGURES.values()}),
    ):
        if getattr(figure, name) in taken:
            raise ValueError(
                f"figure {figure.name!r}: {name} {getattr(figure, name)!r} is already registered."
            )
    missing = [n for n in figure.needs if n not in FIGURES]
    if missing:
        raise ValueError(f"figure {figure.name!r} needs {missing}, which must be registered before it.")
    FIGURES[figure.name] = figure
    return figure


def by_weight() -> dict[str, Figure]:
    """{cost-weight alias: figure}, e.g. ``size`` -> size_bytes."""
    return {f.weight: f for f in FIGURES.values()}


def by_constraint() -> dict[str, Figure]:
    """{constraint name: figure}, e.g. ``max_size_mb`` -> size_bytes."""
    return {f.constraint: f for f in FIGURES.values()}


import tradeoff.search.trial.measure  # noqa: E402, F401 - registers the standard figures
