"""The trial runner: one plan in, one measured compressed model out.

plan  = the trial's numbers (suggest_values) -> a plan (plan_of: per layer from the sensitivity
        table when the study allocates)
model = apply_plan(teacher, plan, ctx)      # on a copy:
          structural knobs                   #   student -> prune -> low-rank
          cheap figures first                #   size, MACs, latency of the untrained deployed form:
                                             #   a broken constraint prunes the trial, untrained
          fine-tune against the teacher      #   or the structure's stored float model (reuse);
                                             #   checkpoints may stop a plan that cannot reach the front
          post-training knobs                #   quantization in the runtime's tool
m     = measure(model, ...)                  # in the study's runtime, timed against the teacher
every figure -> trial user attributes; constraints -> trial; deployed model -> artifact store
a new structure -> its post-training variants (other bit-widths) queued: no fine-tune each
return m.values(config.objectives)
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from torch import nn

from tradeoff.search.study.config import SearchConfig
from tradeoff.search.study.records import (
    BASELINE_ATTR,
    CURVE_ATTR,
    DUPLICATE_ATTR,
    FACTS_ATTR,
    FAIL_ATTR,
    INT8_FORM_ATTR,
    KEPT_ATTR,
    LEGACY_KEPT_ATTR,
    PLAN_ATTR,
    PLAN_TEXT_ATTR,
    REUSED_ATTR,
    ROLE_ATTR,
    SIBLING_OF_ATTR,
    SIBLING_ROLE,
    SKIPPED_ATTR,
    STOPPED_ATTR,
    TIME_PREFIX,
    WORKER_ATTR,
    baseline_latency,
    baseline_of,
)
from tradeoff.search.task.tasks import Task
from tradeoff.search.task.training import distill, finetune_kd, logits_of
from tradeoff.search.trial.figures import FIGURES
from tradeoff.search.trial.kept import KeptModels
from tradeoff.search.trial.measure import Measurement, RuntimeModel, deploy, measure
from tradeoff.search.trial.stopping import CHECKPOINTS, CURVE_IMAGES, StopTraining, judge
from tradeoff.spaces import (
    ApplyContext,
    Compressed,
    Facts,
    Plan,
    PlanError,
    apply_plan,
    format_plan,
    ordered_knobs,
    post_training_siblings,
    structure_key,
)
from tradeoff.spaces.allocation import SHARPNESS, budget_space, plan_from_params, suggest_values
from tradeoff.spaces.runtimes import get_runtime
from tradeoff.spaces.sensitivity import SensitivityTable

CALIBRATION_SAMPLES = 512  # training inputs that calibrate int8 activation ranges
REFERENCE_WARMUP = 50  # calls of the teacher's new session before any latency is timed against it


class BrokenBeforeTraining(Exception):
    """The untrained deployed form already breaks a hard constraint: the plan is not trained."""

    def __init__(self, figures: dict, constraints: dict[str, float]):
        broken = sorted(name for name, v in constraints.items() if v > 0)
        super().__init__(
            f"breaks {', '.join(broken)} before fine-tuning (size, MACs and latency do not change "
            "with training)"
        )
        self.figures, self.constraints = figures, constraints


@dataclass(eq=False)
class BuildState:
    """What the runner knows about the plan it is building, from :meth:`Runner.build` to the
    trial's record: the structure's key, its plan and parameters; the final fine-tune asked for
    (``final_steps``, told how it goes through ``progress``) and what it took; the untrained
    variants' measurements (``cheap``) and the function that makes them (``preview``); where
    the float weights came from (``reused``: the trial whose kept model was loaded) or how they
    were trained (``from_scratch``, ``steps``, the validation ``curve`` at the checkpoints);
    the fine-tuned float weights to keep (``trained``); seconds per step (``times``)."""

    key: str
    plan: Plan
    params: dict[str, Any]
    final_steps: int = 0
    progress: Callable[[str], None] | None = None
    times: dict[str, float] = field(default_factory=dict)
    cheap: dict[str, dict[str, Any]] = field(default_factory=dict)
    preview: Callable[[str], nn.Module] | None = None
    reused: int | None = None
    from_scratch: bool = False
    steps: int | None = None
    curve: list[list[float]] = field(default_factory=list)
    trained: dict[str, torch.Tensor] | None = None
    final_seconds: float = 0.0


class Runner:
    """Callable objective for ``study.optimize``. Owns the teacher and its cached logits, the
    study's kept models (``kept``: fine-tuned float models per structure, deployed models) and
    its sensitivity table (``table``: how an allocated trial's numbers become per-layer values)."""

    def __init__(
        self,
        config: SearchConfig,
        task: Task,
        teacher: nn.Module,
        *,
        device: str = "cpu",
        kept: KeptModels | None = None,
        table: SensitivityTable | None = None,
    ):
        self.config, self.task, self.device = config, task, device
        self.table = table  # the study's sensitivity table (granularity allocated or layer)
        self.teacher = teacher.eval().cpu()
        self.kept = kept if kept is not None else KeptModels(keep=config.keep_models)
        self._teacher_logits = None
        self._reference = None
        self._trial: optuna.Trial | None = None  # the trial being built (its study: history, store)
        self._read_study: optuna.Study | None = None  # a study whose kept models a rebuild reads
        self._state: BuildState | None = None  # the plan being built
        # final fine-tunes made by this runner, per (structure, steps): an export of the front
        # trains each structure once and quantizes it for each of its bit-widths
        self._finals: dict[tuple[str, int], tuple[dict, float]] = {}

    @property
    def teacher_logits(self) -> torch.Tensor:
        """The teacher's logits on the fine-tuning split (the task's sample of its training
        split): computed once per worker, when something trains."""
        if self._teacher_logits is None:
            self._teacher_logits = logits_of(self.teacher, self.task.finetune.x, device=self.device)
            self.teacher.cpu()
        return self._teacher_logits

    @property
    def final_seconds(self) -> float:
        """Seconds the last build's final fine-tune took (for a structure trained before by this
        runner, what that one took)."""
        return self._state.final_seconds if self._state is not None else 0.0

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

    @property
    def _study(self) -> optuna.Study | None:
        return self._trial.study if self._trial is not None else self._read_study

    def _history(self) -> list[optuna.trial.FrozenTrial]:
        study = self._study
        if study is None:
            return []
        return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))

    # -- the steps apply_plan calls back ------------------------------------------------------

    def _before_finetune(self, preview: Callable[..., Compressed]) -> None:
        """Cheap figures first: measure the untrained deployed form when a constraint can be
        checked on it; a broken constraint raises :class:`BrokenBeforeTraining` (nothing is
        trained). ``preview`` is kept for the stopping rule."""
        c, state = self.config, self._state
        if self.config.reuse and self.kept.get_float(self._study, state.key) is not None:
            return  # nothing to train: the stored float model is quantized
        cheap = {f.constraint for f in FIGURES.values() if not f.needs_training}
        checks = {k: v for k, v in c.constraints.items() if k in cheap}
        state.preview = preview  # the stopping rule measures the same way, when it needs to
        if not checks:
            return
        figures = self._cheap(None)
        values = c.constraint_values_known(figures)
        if any(v > 0 for k, v in values.items() if k in checks):
            raise BrokenBeforeTraining(figures, values)

    def _cheap(self, variant: Plan | None) -> dict:
        """The figures that need no training, of the plan (``variant`` None) or of another plan
        of its structure, measured on the network as it stands; seconds added to ``cheap_s``."""
        state = self._state
        key = "plan" if variant is None else json.dumps(variant.to_dict(), sort_keys=True)
        if key not in state.cheap:
            t = time.perf_counter()
            m = self.measure(state.preview(variant), baseline_ms=self._baseline_ms, trained=False)
            state.cheap[key] = m.to_dict()
            state.times["cheap_s"] = state.times.get("cheap_s", 0.0) + time.perf_counter() - t
        return state.cheap[key]

    def _candidates(self) -> list[dict]:
        """Untrained figures of every model the running fine-tune would make: the plan's, and with
        reuse its queued bit-widths'."""
        state = self._state
        variants = self.siblings(state.params, state.plan) if self.config.reuse else []
        return [self._cheap(None), *(self._cheap(self.plan_of(v)) for v in variants)]

    def _finetune(self, model: nn.Module, from_scratch: bool) -> nn.Module:
        """The structure's stored float model when there is one (``reuse``); else distil a
        from-scratch student at length, or fine-tune a changed teacher briefly, with the
        checkpoints the stopping rule reads."""
        c, state = self.config, self._state
        # a search reuses only with --reuse; a rebuild (export) takes whatever float model was kept
        reuse = c.reuse or self._trial is None
        stored = self.kept.get_float(self._study, state.key) if reuse else None
        if stored is not None:
            try:
                model.load_state_dict(stored[0])
                state.reused = stored[1].get("trial")
            except RuntimeError:  # a different network for the same key (a changed knob): train
                pass
            else:
                if state.final_steps:
                    return self._final_finetune(model)
                return model.eval()
        state.from_scratch = from_scratch
        state.curve = []
        steps = c.student_steps if from_scratch else c.finetune_steps
        state.steps = steps
        model = finetune_kd(
            model,
            self.task.finetune,
            self.teacher_logits,
            steps=steps,
            seed=c.seed,
            lr=c.student_lr if from_scratch else c.finetune_lr,
            temperature=c.kd_temperature,
            alpha=c.kd_alpha,
            device=self.device,
            checkpoints=CHECKPOINTS,
            on_checkpoint=self._checkpoint,
        )
        state.trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if state.final_steps:  # no kept model: the search-time fine-tune again, then the final
            return self._final_finetune(model)
        return model

    def _final_finetune(self, model: nn.Module) -> nn.Module:
        """Train the search-time float model ``final_steps`` more batches on the whole training
        split, distilling from the teacher run on each batch, at the search's fine-tuning rate
        with a cosine schedule."""
        c, state = self.config, self._state
        steps = state.final_steps
        done = self._finals.get((state.key, steps))
        if done is not None:  # another bit-width of this structure: the same float model, quantized
            model.load_state_dict(done[0])
            state.final_seconds = done[1]
            return model.eval()
        recipe = self.task.recipe
        progress = state.progress or (lambda _msg: None)
        t0 = time.perf_counter()

        def report(step: int, loss: float) -> None:
            elapsed = time.perf_counter() - t0
            progress(
                f"final fine-tune: step {step}/{steps}, loss {loss:.3f}, {elapsed:.0f} s elapsed, "
                f"about {elapsed / step * (steps - step):.0f} s left"
            )

        model = distill(
            model,
            self.teacher,
            self.task.train,
            steps=steps,
            seed=c.seed,
            # the fine-tune's rate for every plan: a from-scratch student has converged at the end of
            # its cosine schedule, and a restart at its own 5x higher rate undid more than 300
            # steps won back (on fashion-mnist: 86.1 % -> 83.5 % test accuracy at width 0.25)
            lr=c.finetune_lr,
            temperature=c.kd_temperature,
            alpha=c.kd_alpha,
            # no augmentation: the teacher's shifts and flips cost a small student more than the
            # fresh views give back (fashion-mnist, width 0.25, 400 steps, validation 86.3 %:
            # augmented 84.7 %, plain 88.3 %); bf16 where the task's recipe trains in it (same
            # accuracy, 1.7x faster)
            shift=0,
            flip=False,
            bf16=bool(recipe.get("bf16", False)),
            device=self.device,
            on_progress=report,
        )
        state.final_seconds = time.perf_counter() - t0
        state_dict = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._finals[(state.key, steps)] = (state_dict, state.final_seconds)
        return model

    @torch.no_grad()
    def _checkpoint(self, fraction: float, step: int, model: nn.Module) -> None:
        state = self._state
        x, y = self.task.val.x[:CURVE_IMAGES], self.task.val.y[:CURVE_IMAGES]
        acc = float((logits_of(model, x, device=self.device).argmax(1) == y).float().mean())
        model.to(self.device)
        state.curve.append([fraction, round(acc, 6)])
        if self.config.early_stop and not self.config.scalarize and state.preview is not None:
            reason = judge(
                self._history(),
                self.config.objectives,
                self._candidates,
                fraction=fraction,
                accuracy=acc,
                from_scratch=state.from_scratch,
            )
            if reason:
                raise StopTraining(reason, fraction, step, acc)

    # -- building and measuring ---------------------------------------------------------------

    def build(
        self,
        plan: Plan,
        *,
        int8_form: str = "auto",
        trial: optuna.Trial | None = None,
        study: optuna.Study | None = None,
        post_training: bool = True,
        final_steps: int = 0,
        progress: Callable[[str], None] | None = None,
    ) -> tuple[Compressed, dict[str, float]]:
        """The compressed model for ``plan`` and where the time went: ``apply_s`` (knobs and
        teacher copy), ``finetune_s``, and each step of ``apply_plan`` as ``step_*``.
        ``int8_form``: see :class:`~tradeoff.spaces.ApplyContext` (a rebuild passes the trial's).
        ``trial`` (a running one): its study's stored float models and stopping history are
        used, and its constraints are checked before fine-tuning; ``study``: only its stored float
        models are used (a rebuild). ``post_training=False``: the float model only.
        ``final_steps``: a chosen plan's final fine-tune, that many batches more from the
        structure's kept float model (``study``'s; PlanError when it kept none), ``progress``
        told how it goes; ``finetune_s`` is then its time."""
        self._trial, self._read_study = trial, study
        params = dict(trial.params) if trial is not None else plan.params()
        self._state = BuildState(
            key=structure_key(plan), plan=plan, params=params, final_steps=final_steps, progress=progress
        )
        self._baseline_ms = baseline_latency(trial.study) if trial is not None else None
        ctx = ApplyContext(
            example_input=self.task.example_input,
            num_classes=self.task.num_classes,
            finetune=self._finetune,
            calibration=tuple(self.task.train.x[:CALIBRATION_SAMPLES].split(64)),
            runtime=self.config.runtime,
            int8_form=int8_form,
            before_finetune=self._before_finetune if trial is not None else None,
            post_training=post_training,
        )
        t0 = time.perf_counter()
        torch.manual_seed(self.config.seed)
        compressed = apply_plan(self.teacher, plan, ctx)
        finetune = compressed.timings.get("finetune_s", 0.0)
        cheap = self._state.times.get("cheap_s", 0.0)
        times = {"finetune_s": finetune, "apply_s": time.perf_counter() - t0 - finetune - cheap}
        if cheap:
            times["cheap_s"] = cheap
        times.update({f"step_{k}": v for k, v in compressed.timings.items() if k != "finetune_s"})
        return compressed, times

    def restore(self, study: optuna.Study, trial: optuna.trial.FrozenTrial):
        """``trial``'s compressed model without training where the study kept its weights:
        (compressed, seconds per step, where it came from). The structure's float model and the
        trial's deployed file when both are kept; the float model, quantized again, when only it
        is; else a rebuild (with a fine-tune)."""
        plan = self.plan_of(trial.params)
        form = trial.user_attrs.get(INT8_FORM_ATTR, "auto")
        trains = any(k.structural and not k.is_off(cfg.value) for k, cfg in plan.configs())
        kept = not trains or self.kept.get_float(study, structure_key(plan)) is not None
        deployed = self.kept.get_trial(study, trial) if kept else None
        facts = trial.user_attrs.get(FACTS_ATTR)
        model = None
        if deployed is not None and isinstance(facts, dict):
            data, meta = deployed
            facts = Facts(**{k: v for k, v in facts.items() if k in Facts.__dataclass_fields__})
            if meta.get("quantized"):  # None where the runtime cannot run its kept file: rebuilt
                model = get_runtime(self.config.runtime).from_kept(
                    data,
                    weight_bits=facts.weight_bits,
                    int8_kernels=form == "kernels",
                    form_note=meta.get("form_note", ""),
                )
        if model is not None:
            compressed, times = self.build(plan, int8_form=form, study=study, post_training=False)
            restored = Compressed(
                model=model,
                float_model=compressed.float_model,
                facts=facts,
                skipped=tuple(trial.user_attrs.get(SKIPPED_ATTR, ())),
                timings=compressed.timings,
            )
            return (
                restored,
                times,
                f"the trial's kept model (artifact {meta['artifact_id']}, SHA-256 checked)",
            )
        compressed, times = self.build(plan, int8_form=form, study=study)
        how = (
            "the structure's kept float model"
            + (", quantized again" if compressed.model is not compressed.float_model else "")
            if trains and kept
            else "rebuilt (the teacher needs no training)"
            if not trains
            else "rebuilt and fine-tuned (no model kept)"
        )
        return compressed, times, how

    def plan_of(self, params) -> Plan:
        """The plan of a trial's params (or a stored plan), with the study's knob options; an
        allocated trial's budgets and sharpness made per-layer values by the sensitivity table."""
        c = self.config
        granularity = c.granularity
        if granularity == "allocated" and SHARPNESS in params and self.table is None:
            raise PlanError(
                "this study allocates per layer: its sensitivity table is needed (give --artifacts)"
            )
        return plan_from_params(
            params, granularity=granularity, table=self.table, space=c.space, options=c.knob_options
        )

    def siblings(self, params, plan: Plan, limit: int = 8) -> list[dict]:
        """The params of the plans that share ``plan``'s structure and differ only in the
        post-training knobs (bit-width; an allocated study: the bit budget): each quantizes the
        same fine-tuned float model. A per-layer (``layer``) study searches each layer's bits
        itself: none are queued."""
        c = self.config
        granularity = c.granularity
        if granularity == "global" or SHARPNESS not in params:
            if granularity == "layer":
                return []
            return [s.params() for s in post_training_siblings(plan, c.space, limit)]
        # the budgets of the post-training knobs an allocated study searches (average bits)
        budgets = budget_space(c.space)
        knobs = [k.name for k in ordered_knobs() if not k.structural and "choices" in budgets.get(k.name, {})]
        out, seen = [], {json.dumps(plan.to_dict(), sort_keys=True)}
        for values in itertools.product(*(budgets[k]["choices"] for k in knobs)):
            variant = dict(params, **dict(zip(knobs, values)))
            key = json.dumps(self.plan_of(variant).to_dict(), sort_keys=True)
            if key not in seen:
                seen.add(key)
                out.append(variant)
            if len(out) >= limit:
                break
        return out

    def measure(
        self,
        compressed: Compressed,
        timings: dict[str, float] | None = None,
        *,
        baseline_ms: float | None = None,
        trained: bool = True,
    ) -> Measurement:
        """Every figure of ``compressed`` in the study's runtime; latency timed against the
        teacher and scaled by ``baseline_ms`` (the baseline trial's latency, when measured).
        ``trained=False``: only the figures that do not depend on training."""
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
            layer_bits=compressed.facts.layer_bits,
            sparse=compressed.sparse,
            float_model=compressed.float_model,
            timings=timings,
            runtime=c.runtime,
            reference=self.reference,
            reference_ms=baseline_ms,
            trained=trained,
        )

    @staticmethod
    def _measured_twin(trial: optuna.Trial, plan: Plan) -> optuna.trial.FrozenTrial | None:
        """The trial that already ran this plan (the same params, or other params that make the
        same plan: an allocation at another sharpness, say): measured, or pruned (a plan pruned
        before or during fine-tuning is pruned again, at no cost)."""
        done = trial.study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        )
        stored = plan.to_dict()
        for t in done:
            same = t.params == trial.params or t.user_attrs.get(PLAN_ATTR) == stored
            if same and (t.state == optuna.trial.TrialState.COMPLETE or STOPPED_ATTR in t.user_attrs):
                return t
        return None

    def __call__(self, trial: optuna.Trial) -> list[float]:
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise
        except Exception as e:
            # The trial fails with its reason on record; the study goes on.
            reason = str(e) if isinstance(e, PlanError) else f"{type(e).__name__}: {e}"
            trial.set_user_attr(FAIL_ATTR, reason.splitlines()[0] if reason else type(e).__name__)
            raise
        finally:
            self._trial = self._read_study = None

    def _prune(self, trial: optuna.Trial, figures: dict, record: dict) -> None:
        """Record a plan stopped before it was measured (its figures so far, why), then prune."""
        for name, value in figures.items():
            trial.set_user_attr(name, value)
        for name, value in self.config.constraint_values_known(figures).items():
            trial.set_constraint(name, value)
        trial.set_user_attr(STOPPED_ATTR, record)
        raise optuna.TrialPruned(record["reason"])

    def _run(self, trial: optuna.Trial) -> list[float]:
        """A trial's life, step by step: make the plan; repeat a twin's figures, or build the
        plan (fine-tune it, or stop it and prune the trial); measure it; keep what later trials
        reuse and queue its siblings; record the baseline; return the objectives."""
        t0 = time.perf_counter()
        plan = self._make_plan(trial)
        twin = self._measured_twin(trial, plan)
        if twin is not None:
            return self._repeat(trial, twin)
        compressed, times = self._build_or_stop(trial, plan, t0)
        measured = self._measure(trial, compressed, times)
        t = time.perf_counter()
        self._keep(trial, plan, compressed, self._state)
        times["keep_s"] = time.perf_counter() - t
        times["total_s"] = time.perf_counter() - t0
        for name, value in times.items():
            trial.set_user_attr(f"{TIME_PREFIX}{name}", round(value, 3))
        self._note_baseline(trial, plan, measured)
        return self._objectives(trial, measured)

    def propose(self, trial: optuna.Trial) -> None:
        """The sampler's numbers for ``trial``, drawn now: the worker calls this under the study
        lock, so the next proposal sees them (the constant liar, a running twin); the trial then
        reads the same numbers back."""
        c = self.config
        suggest_values(trial, c.space, c.granularity, self.table)

    def _make_plan(self, trial: optuna.Trial) -> Plan:
        """The sampler's numbers for this trial, made a plan (allocated per layer where the
        study is), stored on the trial as data and in words."""
        self.propose(trial)  # drawn already where the worker proposed it under the lock
        plan = self.plan_of(trial.params)
        trial.set_user_attr(PLAN_ATTR, plan.to_dict())
        trial.set_user_attr(PLAN_TEXT_ATTR, format_plan(plan))
        return plan

    def _repeat(self, trial: optuna.Trial, twin: optuna.trial.FrozenTrial) -> list[float]:
        """A plan already run (NSGA-II proposes a plan it has measured): its figures again, said
        so; pruned again where it was stopped."""
        for name, value in twin.user_attrs.items():
            # not its worker: this trial is this worker's (a dead worker's name would get it failed)
            if name not in (ROLE_ATTR, FAIL_ATTR, KEPT_ATTR, LEGACY_KEPT_ATTR, SIBLING_OF_ATTR, WORKER_ATTR):
                trial.set_user_attr(name, value)
        for name, value in twin.constraints.items():
            trial.set_constraint(name, value)
        trial.set_user_attr(DUPLICATE_ATTR, twin.number)
        if twin.state == optuna.trial.TrialState.PRUNED:
            raise optuna.TrialPruned(f"repeats #{twin.number}, which was stopped")
        return list(twin.values)

    def _build_or_stop(self, trial: optuna.Trial, plan: Plan, t0: float) -> tuple[Compressed, dict]:
        """The plan applied to the teacher and fine-tuned, with what the build did on record; or
        the trial pruned where the plan was stopped (a bound broken before training, or a
        learning curve that cannot reach the front)."""
        try:
            compressed, times = self.build(plan, trial=trial)
        except BrokenBeforeTraining as e:
            self._prune(trial, e.figures, {"when": "before fine-tuning", "reason": str(e)})
        except StopTraining as e:
            state = self._state
            trial.set_user_attr(CURVE_ATTR, self._curve_record())
            record = {
                "when": "during fine-tuning",
                "checkpoint": e.checkpoint,
                "step": e.step,
                "of_steps": state.steps,
                "accuracy": round(e.accuracy, 6),
                "reason": e.reason,
            }
            trial.set_user_attr(f"{TIME_PREFIX}total_s", round(time.perf_counter() - t0, 3))
            self._prune(trial, state.cheap.get("plan", {}), record)
        state = self._state
        trial.set_user_attr(SKIPPED_ATTR, list(compressed.skipped))
        if isinstance(compressed.model, RuntimeModel):  # which int8 form was faster: a rebuild takes it
            trial.set_user_attr(INT8_FORM_ATTR, "kernels" if compressed.model.int8_kernels else "weights")
        trial.set_user_attr(FACTS_ATTR, dict(vars(compressed.facts)))
        if compressed.facts.dropped_blocks:  # the plan in words names the blocks it dropped
            trial.set_user_attr(PLAN_TEXT_ATTR, format_plan(plan, compressed.facts))
        if state.curve:
            trial.set_user_attr(CURVE_ATTR, self._curve_record())
        if state.reused is not None:
            trial.set_user_attr(REUSED_ATTR, state.reused)
        return compressed, times

    def _measure(self, trial: optuna.Trial, compressed: Compressed, times: dict) -> Measurement:
        """Every figure of the built plan in the study's runtime, and its constraints, on record."""
        t = time.perf_counter()
        measure_times: dict[str, float] = {}
        m = self.measure(compressed, measure_times, baseline_ms=baseline_latency(trial.study))
        times["measure_s"] = time.perf_counter() - t
        times.update({f"measure_{k}": v for k, v in measure_times.items()})
        for name, value in m.to_dict().items():
            trial.set_user_attr(name, value)
        if set(self.config.goals) - set(self.config.constraints):
            self._resolve_goals(trial, m.to_dict())
        for name, value in self.config.constraint_values(m.to_dict()).items():
            trial.set_constraint(name, value)
        return m

    def _resolve_goals(self, trial: optuna.Trial, figures: dict) -> None:
        """The study's relative goals as absolute bounds: from the baseline's figures when this
        trial is the baseline (stored with the study, beside the forms given), else as another
        worker stored them; until then a relative goal is not checked."""
        from tradeoff.search.study.goals import GOALS_ATTR, resolve_all

        resolved = trial.study.user_attrs.get(GOALS_ATTR)
        if not resolved and trial.user_attrs.get(ROLE_ATTR) == "baseline":
            resolved = resolve_all(self.config.goals, figures)
            trial.study.set_user_attr(GOALS_ATTR, resolved)
        if resolved:
            bounds = {n: float(g["bound"]) for n, g in resolved.items() if n in self.config.goals}
            self.config = dataclasses.replace(self.config, constraints={**self.config.constraints, **bounds})

    @staticmethod
    def _note_baseline(trial: optuna.Trial, plan: Plan, m: Measurement) -> None:
        """The first measured baseline is the study's: the reference of relative figures."""
        if trial.user_attrs.get(ROLE_ATTR) == "baseline" or plan.is_baseline:
            if baseline_of(trial.study) is None:
                trial.study.set_user_attr(BASELINE_ATTR, {"trial": trial.number, **m.to_dict()})

    def _objectives(self, trial: optuna.Trial, m: Measurement) -> list[float]:
        """The trial's values: the objectives' figures, or one cost against the baseline."""
        if self.config.scalarize:
            from tradeoff.search.views.cost import cost

            baseline = baseline_of(trial.study)
            if baseline is None:
                raise PlanError("a scalarized study needs the baseline measured first (trial 0)")
            return [cost(m.to_dict(), baseline, self.config.scalarize)]
        return m.values(self.config.objectives)

    def _curve_record(self) -> dict:
        state = self._state
        return {
            "from_scratch": bool(state.from_scratch),
            "steps": state.steps,
            "images": min(CURVE_IMAGES, len(self.task.val)),
            "points": state.curve,
        }

    def _keep(self, trial: optuna.Trial, plan: Plan, compressed: Compressed, state: BuildState) -> None:
        """The work this trial leaves for later ones: its fine-tuned float model (per structure),
        its deployed model, and its structure's other post-training variants, queued."""
        c, study = self.config, trial.study
        if (c.reuse or c.keep_models != "none") and state.trained is not None:
            self.kept.put_float(study, state.key, state.trained, trial.number)
        kept = get_runtime(c.runtime).kept(compressed.model)
        if kept is not None:
            data, file, extra = kept
            self.kept.put_trial(trial, data, file=file, extra=extra)
        if c.reuse and state.reused is None and trial.user_attrs.get(ROLE_ATTR) != SIBLING_ROLE:
            # this trial made its structure's float model: the other bit-widths only quantize it
            for sibling in self.siblings(trial.params, plan):
                study.enqueue_trial(
                    sibling,
                    user_attrs={ROLE_ATTR: SIBLING_ROLE, SIBLING_OF_ATTR: trial.number},
                    skip_if_exists=True,
                )
