"""SearchConfig: what a study searches. Validated once, stored in the study, shared by workers."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tradeoff.search.errors import UsageError
from tradeoff.search.plugins import import_plugin_modules, is_plugin
from tradeoff.search.study.goals import check_goal, given_text
from tradeoff.search.study.sampler import SAMPLERS, TPE_DENSITIES, default_tpe_density, fitted_population
from tradeoff.search.task.data import NORMALIZATIONS, TASKS_WITH_ROOT, data_kind
from tradeoff.search.task.models import MODELS, torchvision_models
from tradeoff.search.trial.figures import FIGURES
from tradeoff.search.trial.kept import KEEP_MODELS
from tradeoff.search.views.cost import check_constraints, check_weights, constraint_values
from tradeoff.spaces import KNOBS, SpaceError, validate_options, validate_space
from tradeoff.spaces.allocation import GRANULARITIES, check_granularity
from tradeoff.spaces.runtimes import PYTORCH_RUNTIME, RUNTIMES, default_runtime
from tradeoff.storage.artifacts import sha256_file

# 1: prune_mode as a field of its own. 2: knob options (knob_options) and plug-ins (plugins).
# 3: the sampler policy (sampler); older studies ran NSGA-II. 4: the runtime (runtime); older
# studies measured TorchScript. 5: cheaper trials (reuse, early_stop, keep_models): an older
# tradeoff would run them without. 6: the granularity (global | allocated | layer); older studies
# searched one value per knob. 7: the knobs set layer by layer beyond the default ones (allocate),
# constraints relative to the baseline (goals). 8: TPE's density (tpe_density); older studies ran
# the joint one whatever their granularity.
CONFIG_VERSION = 8
# Energy is an objective by default only where a hardware counter measures it: the estimate is a
# function of MACs and bytes moved, which size and latency already trade (BENCHMARKS.md, "The
# default search on the bundled task"); it is recorded on every trial either way, and
# --objectives can name it.
DEFAULT_OBJECTIVES = ("accuracy", "size_bytes", "latency_ms")
LEGACY_OBJECTIVES = ("accuracy", "size_bytes", "latency_ms", "energy_mj")  # studies that stored none


def default_objectives(target: str) -> tuple[str, ...]:
    """Accuracy, size and latency; and energy where ``target`` has an energy counter."""
    from tradeoff.search.trial.measure.energy import has_energy_counter

    return DEFAULT_OBJECTIVES + (("energy_mj",) if has_energy_counter(target) else ())


@dataclass(frozen=True)
class SearchConfig:
    task: str = "digits"  # --data: a bundled task, an image folder or a plug-in
    data_root: str | None = None  # --data-root: where a bundled task's files lie (fashion-mnist)
    model: str = "resnet18"
    checkpoint: str | None = None  # trained weights of `model`: the teacher
    checkpoint_sha256: str | None = None  # filled in at creation; workers need not have the file
    image_size: int | None = None  # image folders: side in pixels (default 64)
    normalize: str = "data"  # image folders: "data" (training split's statistics) or "imagenet"
    seed: int = 0
    objectives: tuple[str, ...] = ()  # () = default_objectives(target), filled in by validated()
    constraints: dict[str, float] = field(default_factory=dict)
    # constraints relative to the baseline as given ({"max_size_mb": "/10"}: search.study.goals);
    # a stored study's resolved bounds are merged into `constraints` when it is read
    goals: dict[str, str] = field(default_factory=dict)
    space: dict[str, dict[str, Any]] = field(default_factory=dict)
    target: str = "cpu"  # where latency and energy are measured
    runtime: str = ""  # what runs the model there: spaces.runtimes.RUNTIMES; "" = the target's default
    sampler: str = "auto"  # the sampler policy: search.study.sampler
    population_size: int = 0  # NSGA-II; 0: fitted to the first run's trial budget
    teacher_epochs: int | None = None
    knob_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. prune_ratio: mode
    plugins: tuple[str, ...] = ()  # modules imported first: knobs and figures of the user's own
    finetune_steps: int = 150
    finetune_lr: float = 0.01
    student_steps: int = 400  # distillation of a from-scratch student
    student_lr: float = 0.05
    kd_temperature: float = 4.0
    kd_alpha: float = 0.7
    latency_warmup: int = 10
    latency_repeats: int = 50
    scalarize: dict[str, float] = field(default_factory=dict)  # weights: one objective, the cost
    reuse: bool = True  # a fine-tuned float model per structure; other bit-widths of a new one queued
    early_stop: bool = True  # stop a fine-tune that cannot reach the front (search.trial.stopping)
    keep_models: str = "front"  # search.trial.kept.KEEP_MODELS
    granularity: str = "allocated"  # spaces.allocation.GRANULARITIES
    allocate: tuple[str, ...] = ()  # --allocate: per-layer knobs not set layer by layer by default
    # TPE's density (auto, tpe): "joint" or "independent"; "" = by granularity (search.study.sampler)
    tpe_density: str = ""
    version: int = CONFIG_VERSION

    # -- validation ---------------------------------------------------------------------------

    def validated(self, *, n_trials: int | None = None) -> SearchConfig:
        """A checked copy with every default filled in; UsageError names the first bad field."""
        plugins = tuple(self.plugins)
        import_plugin_modules(plugins)
        task = self.task
        if data_kind(task) == "folder":
            task = os.path.abspath(task)  # workers find the data where the creator did
        data_root = self.data_root
        if data_root is not None:
            if task not in TASKS_WITH_ROOT:
                raise UsageError(
                    f"--data-root is for --data {' or '.join(TASKS_WITH_ROOT)}; "
                    f"--data {task} does not read it"
                )
            if not os.path.isdir(data_root):
                raise UsageError(f"--data-root {data_root}: no such folder")
            data_root = os.path.abspath(data_root)
        if not (self.model in MODELS or self.model in torchvision_models() or is_plugin(self.model)):
            raise UsageError(
                f"unknown model {self.model!r}: give a torchvision classification model (e.g. resnet18, "
                f"mobilenet_v2), one of {', '.join(sorted(MODELS))}, or a plug-in package.module:function"
            )
        checkpoint, checkpoint_sha = self.checkpoint, self.checkpoint_sha256
        if checkpoint and checkpoint_sha is None:
            if not os.path.isfile(checkpoint):
                raise UsageError(f"--checkpoint {checkpoint}: no such file")
            checkpoint = os.path.abspath(checkpoint)
            checkpoint_sha = sha256_file(checkpoint)
        if self.image_size is not None and not 8 <= int(self.image_size) <= 1024:
            raise UsageError(f"--image-size {self.image_size}: give 8 to 1024 pixels")
        if self.normalize not in NORMALIZATIONS:
            raise UsageError(f"--normalize {self.normalize!r}: choose {' or '.join(NORMALIZATIONS)}")
        objectives = tuple(self.objectives) or default_objectives(self.target)
        for name in objectives:
            if name not in FIGURES:
                raise UsageError(f"unknown objective {name!r}; choose from {', '.join(FIGURES)}")
        if len(set(objectives)) != len(objectives):
            raise UsageError("`objectives` lists a figure twice.")
        constraints = check_constraints(self.constraints)
        goals = {name: check_goal(name, form) for name, form in dict(self.goals).items()}
        for name in goals:
            if name in constraints:
                flag = "--" + name.replace("_", "-")
                raise UsageError(
                    f"{given_text(name, goals[name])} and {flag} {constraints[name]:g}: "
                    "give one bound per figure"
                )
        try:
            space = validate_space(self.space)
        except SpaceError as e:
            raise UsageError(f"search space: {e}") from None
        if not (self.target == "cpu" or self.target.startswith("cuda")):
            raise UsageError(f"unknown measurement target {self.target!r}; use cpu or cuda[:N]")
        try:
            runtime = self.runtime or default_runtime(self.target)
        except ValueError as e:
            raise UsageError(f"--target {self.target}: {e}") from None
        if runtime not in RUNTIMES:
            raise UsageError(f"--runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
        if not RUNTIMES[runtime].runs_on(self.target):
            where = ", ".join(n for n, r in RUNTIMES.items() if r.runs_on(self.target))
            raise UsageError(
                f"--runtime {runtime} runs on {' and '.join(RUNTIMES[runtime].devices)}; "
                f"a {self.target.split(':')[0]} target is measured in {where}"
            )
        missing = RUNTIMES[runtime].missing()
        if missing:
            raise UsageError(f"--runtime {runtime}: {missing}")
        if self.target.startswith("cuda"):
            # PyTorch's int8 kernels are CPU-only: a CUDA target measures float models.
            if "weight_bits" in self.space and space["weight_bits"]["choices"] != [32]:
                raise UsageError(
                    "search space: `weight_bits` below 32 runs on CPU int8 kernels only; "
                    "use --space weight_bits=32 with a cuda target"
                )
            space["weight_bits"] = {"choices": [32]}
        try:
            knob_options = validate_options(self.knob_options)
        except SpaceError as e:
            raise UsageError(f"knob options: {e}") from None
        # upper bounds: what the consumers take (numpy's and torch's seeds are 32-bit; a count
        # beyond these is a typo that would run for years, not a plan)
        for name, high in (
            ("finetune_steps", 10**7),
            ("student_steps", 10**7),
            ("latency_warmup", 10**6),
            ("seed", 2**32 - 1),
        ):
            if int(getattr(self, name)) < 0:
                raise UsageError(f"`{name}` must be >= 0.")
            if int(getattr(self, name)) > high:
                raise UsageError(f"`{name}` must be <= {high}.")
        if not 3 <= self.latency_repeats <= 10**6:
            raise UsageError("`latency_repeats` must be >= 3 and <= 1000000.")
        if self.teacher_epochs is not None and not 1 <= self.teacher_epochs <= 10**4:
            raise UsageError("`teacher_epochs` must be >= 1 and <= 10000.")
        if not 0 <= self.kd_alpha <= 1 or self.kd_temperature <= 0:
            raise UsageError("`kd_alpha` must be in [0, 1] and `kd_temperature` > 0.")
        scalarize = {}
        if self.scalarize:
            scalarize = check_weights(self.scalarize)
        if self.keep_models not in KEEP_MODELS:
            raise UsageError(f"--keep-models {self.keep_models!r}: choose one of {', '.join(KEEP_MODELS)}")
        if self.granularity not in GRANULARITIES:
            raise UsageError(f"--granularity {self.granularity!r}: choose one of {', '.join(GRANULARITIES)}")
        try:
            check_granularity(self.granularity, space)
        except SpaceError as e:
            raise UsageError(f"search space: {e}") from None
        allocate = tuple(self.allocate)
        for name in allocate:
            knob = KNOBS.get(name)
            if knob is None or not knob.allocatable():
                known = ", ".join(k.name for k in KNOBS.values() if k.allocatable())
                raise UsageError(
                    f"--allocate {name}: no per-layer knob of that name (per-layer knobs: {known})"
                )
            if self.granularity == "global":
                raise UsageError(
                    f"--allocate {name}: a --granularity global study sets no knob layer by layer"
                )
            if name not in space or not knob.can_switch_on(space[name]):
                raise UsageError(f"--allocate {name}: the search space leaves {name} off")
        if len(set(allocate)) != len(allocate):
            raise UsageError("--allocate names a knob twice")
        if self.sampler not in SAMPLERS:
            raise UsageError(f"--sampler {self.sampler!r}: choose one of {', '.join(SAMPLERS)}")
        tpe_density = self.density
        if tpe_density not in TPE_DENSITIES:
            raise UsageError(f"`tpe_density` {tpe_density!r}: choose one of {', '.join(TPE_DENSITIES)}")
        population = self.population_size
        if population == 0 and n_trials is not None:
            population = fitted_population(n_trials)
        if population and population < 2:
            raise UsageError("`population_size` must be >= 2.")
        return dataclasses.replace(
            self,
            objectives=objectives,
            constraints=constraints,
            space=space,
            population_size=population,
            scalarize=scalarize,
            task=task,
            data_root=data_root,
            runtime=runtime,
            checkpoint=checkpoint,
            checkpoint_sha256=checkpoint_sha,
            knob_options=knob_options,
            plugins=plugins,
            allocate=allocate,
            goals=goals,
            tpe_density=tpe_density,
        )

    @property
    def density(self) -> str:
        """TPE's density: the stored one, else the granularity's default (search.study.sampler)."""
        return self.tpe_density or default_tpe_density(self.granularity)

    @property
    def directions(self) -> list[str]:
        if self.scalarize:
            return ["minimize"]
        return [FIGURES[name].direction for name in self.objectives]

    @property
    def metric_names(self) -> list[str]:
        return ["cost"] if self.scalarize else list(self.objectives)

    def constraint_values(self, figures: Mapping[str, float]) -> dict[str, float]:
        """One value per constraint, <= 0 where the figures meet it (Optuna's convention)."""
        return constraint_values(figures, self.constraints)

    def constraint_values_known(self, figures: Mapping[str, float]) -> dict[str, float]:
        """The constraints whose figure is in ``figures`` (a plan measured before training)."""
        from tradeoff.search.trial.figures import by_constraint

        known = by_constraint()
        return constraint_values(
            figures, {k: v for k, v in self.constraints.items() if known[k].name in figures}
        )

    # -- storage ------------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SearchConfig:
        data = json.loads(text)
        if int(data.get("version", 1)) > CONFIG_VERSION:
            raise UsageError("this study was made by a newer tradeoff; upgrade tradeoff to join it")
        if int(data.get("version", 1)) < 2 and data.get("prune_mode", "structured") != "structured":
            # version 1 kept pruning's mode in a field of its own
            data.setdefault("knob_options", {}).setdefault("prune_ratio", {})["mode"] = data["prune_mode"]
        if int(data.get("version", 1)) < 3:
            data["sampler"] = "nsga2"  # what every study made before the sampler policy ran
        if int(data.get("version", 1)) < 4:
            data["runtime"] = PYTORCH_RUNTIME  # what every study made before runtimes measured
        if int(data.get("version", 1)) < 6:
            data["granularity"] = "global"  # one value per knob: what every older study searched
        if int(data.get("version", 1)) < 8:
            data["tpe_density"] = "joint"  # what every older study's TPE ran
        if "keep_weights" in data:  # the field's name until 2026-12
            data.setdefault("keep_models", data.pop("keep_weights"))
        names = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in names}
        data["objectives"] = tuple(data.get("objectives") or LEGACY_OBJECTIVES)
        data["plugins"] = tuple(data.get("plugins", ()))
        data["allocate"] = tuple(data.get("allocate", ()))
        data["version"] = CONFIG_VERSION
        return cls(**data)

    def differences(self, given: Mapping[str, Any]) -> list[str]:
        """The given settings that differ from this (stored) configuration."""
        out = []
        for name, value in given.items():
            stored = getattr(self, name)
            if name in ("objectives", "plugins", "allocate"):
                value = tuple(value)
            if name == "knob_options":  # every option of the knobs given, defaults filled in
                validate_options(value)
                value = {k: KNOBS[k].make(KNOBS[k].off, value[k]).options() for k in value}
                stored = {k: KNOBS[k].make(KNOBS[k].off, stored.get(k)).options() for k in value}
            if name == "space":
                value = validate_space(value)
            if (
                name in ("task", "checkpoint", "data_root")
                and isinstance(value, str)
                and os.path.exists(value)
            ):
                value = os.path.abspath(value)
            if name == "constraints":
                value = {k: float(v) for k, v in value.items() if v is not None}
                stored = {k: v for k, v in stored.items() if k in value}  # only those given
                if set(value) & set(self.goals):  # an absolute bound where the study has a relative one
                    stored = {
                        k: (given_text(k, self.goals[k]) if k in self.goals else v) for k, v in stored.items()
                    }
            if name == "goals":
                value = {k: check_goal(k, v) for k, v in value.items()}
                stored = {k: v for k, v in stored.items() if k in value}  # only those given
            if value != stored:
                out.append(f"{name} (stored {stored!r}, given {value!r})")
        return out
