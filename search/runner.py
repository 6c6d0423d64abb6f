"""The trial runner: one plan in, one measured compressed model out.

plan  = suggest_plan(trial, config.space)
model = apply_plan(teacher, plan, ctx)      # on a copy; fine-tuned against the teacher
m     = measure(model, ...)                  # in the study's runtime, timed against the teacher
every figure -> trial user attributes; constraints -> trial user attribute
return m.values(config.objectives)
"""

from __future__ import annotations

import time

import optuna
import torch
from torch import nn

from tradeoff.search.config import SearchConfig
from tradeoff.search.measure import Measurement, RuntimeModel, deploy, measure
from tradeoff.search.records import (
    BASELINE_ATTR,
    DUPLICATE_ATTR,
    FAIL_ATTR,
    INT8_FORM_ATTR,
    PLAN_ATTR,
    PLAN_TEXT_ATTR,
    ROLE_ATTR,
    SKIPPED_ATTR,
    TIME_PREFIX,
)
from tradeoff.search.tasks import Task
from tradeoff.search.training import finetune_kd, logits_of
from tradeoff.spaces import ApplyContext, Compressed, Plan, PlanError, apply_plan, format_plan, suggest_plan

CALIBRATION_SAMPLES = 512  # training inputs that calibrate int8 activation ranges
REFERENCE_WARMUP = 50  # calls of the teacher's new session before any latency is timed against it


def baseline_latency(study: optuna.Study) -> float | None:
    """The baseline trial's latency, which every later latency is scaled by (None until the
    baseline is measured, or for a study made before the runtimes)."""
    baseline = study.user_attrs.get(BASELINE_ATTR)
    if not isinstance(baseline, dict) or baseline.get("latency_ratio") is None:
        return None
    return float(baseline["latency_ms"])


class Runner:
    """Callable objective for ``study.optimize``. Owns the teacher and its cached logits."""

    def __init__(self, config: SearchConfig, task: Task, teacher: nn.Module, *, device: str = "cpu"):
        self.config, self.task, self.device = config, task, device
        self.teacher = teacher.eval()
        self.teacher_logits = logits_of(teacher, task.train.x, device=device)
        teacher.cpu()
        self._reference = None

    @property
    def reference(self) -> nn.Module:
        """The teacher deployed in the study's runtime: every latency is timed against it."""
        if self._reference is None:
            target = self.config.target
            x = self.task.example_input.to(target)
            self._reference = deploy(self.teacher.to(target), self.config.runtime, x)
            self.teacher.cpu()
            with torch.no_grad():  # a new session's first calls are slow: the baseline's figure scales all
                for _ in range(REFERENCE_WARMUP):
                    self._reference(x)
        return self._reference

    def _finetune(self, model: nn.Module, from_scratch: bool) -> nn.Module:
        """Distil a from-scratch student at length, or fine-tune a changed teacher briefly."""
        c = self.config
        return finetune_kd(
            model,
            self.task.train,
            self.teacher_logits,
            steps=c.student_steps if from_scratch else c.finetune_steps,
            seed=c.seed,
            lr=c.student_lr if from_scratch else c.finetune_lr,
            temperature=c.kd_temperature,
            alpha=c.kd_alpha,
            device=self.device,
        )

    def build(self, plan: Plan, *, int8_form: str = "auto") -> tuple[Compressed, dict[str, float]]:
        """The compressed model for ``plan`` and where the time went: ``apply_s`` (knobs and
        teacher copy), ``finetune_s``, and each step of ``apply_plan`` as ``step_*``.
        ``int8_form``: see :class:`~tradeoff.spaces.ApplyContext` (a rebuild passes the trial's)."""
        ctx = ApplyContext(
            example_input=self.task.example_input,
            num_classes=self.task.num_classes,
            finetune=self._finetune,
            calibration=tuple(self.task.train.x[:CALIBRATION_SAMPLES].split(64)),
            runtime=self.config.runtime,
            int8_form=int8_form,
        )
        t0 = time.perf_counter()
        torch.manual_seed(self.config.seed)
        compressed = apply_plan(self.teacher, plan, ctx)
        finetune = compressed.timings.get("finetune_s", 0.0)
        times = {"finetune_s": finetune, "apply_s": time.perf_counter() - t0 - finetune}
        times.update({f"step_{k}": v for k, v in compressed.timings.items() if k != "finetune_s"})
        return compressed, times

    def plan_of(self, params) -> Plan:
        """The plan of a trial's params (or a stored plan), with the study's knob options."""
        return Plan.from_params(params, options=self.config.knob_options)

    def measure(
        self,
        compressed: Compressed,
        timings: dict[str, float] | None = None,
        *,
        baseline_ms: float | None = None,
    ) -> Measurement:
        """Every figure of ``compressed`` in the study's runtime; latency timed against the
        teacher and scaled by ``baseline_ms`` (the baseline trial's latency, when measured)."""
        c = self.config
        return measure(
            compressed.model,
            self.task.val.x,
            self.task.val.y,
            example_input=self.task.example_input,
            device=c.target,
            warmup=c.latency_warmup,
            repeats=c.latency_repeats,
            weight_bits=compressed.weight_bits,
            sparse=compressed.sparse,
            float_model=compressed.float_model,
            timings=timings,
            runtime=c.runtime,
            reference=self.reference,
            reference_ms=baseline_ms,
        )

    @staticmethod
    def _measured_twin(trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
        complete = trial.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        return next((t for t in complete if t.params == trial.params), None)

    def __call__(self, trial: optuna.Trial) -> list[float]:
        try:
            return self._run(trial)
        except Exception as e:
            # The trial fails with its reason on record; the study goes on.
            reason = str(e) if isinstance(e, PlanError) else f"{type(e).__name__}: {e}"
            trial.set_user_attr(FAIL_ATTR, reason.splitlines()[0] if reason else type(e).__name__)
            raise

    def _run(self, trial: optuna.Trial) -> list[float]:
        t0 = time.perf_counter()
        plan = suggest_plan(trial, self.config.space, self.config.knob_options)
        trial.set_user_attr(PLAN_ATTR, plan.to_dict())
        trial.set_user_attr(PLAN_TEXT_ATTR, format_plan(plan))
        twin = self._measured_twin(trial)
        if twin is not None:
            # NSGA-II proposes a plan it has already measured; reuse the figures, say so.
            for name, value in twin.user_attrs.items():
                if name not in (ROLE_ATTR, FAIL_ATTR):
                    trial.set_user_attr(name, value)
            for name, value in twin.constraints.items():
                trial.set_constraint(name, value)
            trial.set_user_attr(DUPLICATE_ATTR, twin.number)
            return list(twin.values)
        compressed, times = self.build(plan)
        trial.set_user_attr(SKIPPED_ATTR, list(compressed.skipped))
        if isinstance(compressed.model, RuntimeModel):  # which int8 form was faster: a rebuild takes it
            trial.set_user_attr(INT8_FORM_ATTR, "kernels" if compressed.model.int8_kernels else "weights")
        t1 = time.perf_counter()
        measure_times: dict[str, float] = {}
        m = self.measure(compressed, measure_times, baseline_ms=baseline_latency(trial.study))
        times["measure_s"] = time.perf_counter() - t1
        times.update({f"measure_{k}": v for k, v in measure_times.items()})
        times["total_s"] = time.perf_counter() - t0
        for name, value in m.to_dict().items():
            trial.set_user_attr(name, value)
        for name, value in times.items():
            trial.set_user_attr(f"{TIME_PREFIX}{name}", round(value, 3))
        for name, value in self.config.constraint_values(m.to_dict()).items():
            trial.set_constraint(name, value)
        if trial.user_attrs.get(ROLE_ATTR) == "baseline" or plan.is_baseline:
            if BASELINE_ATTR not in trial.study.user_attrs:
                trial.study.set_user_attr(BASELINE_ATTR, {"trial": trial.number, **m.to_dict()})
        if self.config.scalarize:
            from tradeoff.search.cost import cost

            baseline = trial.study.user_attrs.get(BASELINE_ATTR)
            if baseline is None:
                raise PlanError("a scalarized study needs the baseline measured first (trial 0)")
            return [cost(m.to_dict(), baseline, self.config.scalarize)]
        return m.values(self.config.objectives)
