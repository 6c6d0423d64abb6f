"""Training the teacher and fine-tuning compressed students against it."""

from __future__ import annotations

import platform
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tradeoff.search.task.data import Split
from tradeoff.spaces import PlanError

GRAD_CLIP = 5.0  # max gradient norm during fine-tuning and distillation


def _shift(x: torch.Tensor, gen: torch.Generator, pad: int = 1) -> torch.Tensor:
    """Each image translated by its own random offset of up to ``pad`` pixels, zero-filled (pad
    and random crop): the augmentation that lifts the bundled teacher from 97.5 % to 99.2 %
    validation accuracy (one shared roll per batch, the previous recipe, did not)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    ox = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (oy[:, None] + torch.arange(h))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w))[:, None, None, :]
    return padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]


def _augment(
    x: torch.Tensor, gen: torch.Generator, *, shift: int, flip: bool, erase: float = 0.0
) -> torch.Tensor:
    """A batch shifted by up to ``shift`` pixels per image and, with ``flip``, flipped left-right
    at random per image (the random draws in that order); ``erase``: the probability that an
    image has a random rectangle set to zero, the data's mean (random erasing, Zhong et al. 2020:
    torchvision's RandomErasing, applied to each image on its own)."""
    if shift:
        x = _shift(x, gen, pad=shift)
    if flip:
        flipped = torch.rand(len(x), generator=gen) < 0.5
        x = torch.where(flipped[:, None, None, None], x.flip(-1), x)
    if erase:
        from torchvision.transforms import RandomErasing

        # torchvision draws from torch's global generator, which train_classifier seeds
        eraser = RandomErasing(p=erase, value=0)
        x = torch.stack([eraser(image) for image in x])
    return x


def bf16_supported() -> bool:
    """Whether this CPU runs bfloat16 convolutions natively (AVX-512 BF16 or AMX, through oneDNN):
    where it does, mixed precision trains about 1.4x faster; elsewhere it would be emulated.
    oneDNN's own check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) also says yes on x86 CPUs
    with plain AVX-512, where it emulates bf16: a ResNet18 training step then takes 1.67x as long
    as in float32 (a Cascade Lake Xeon, BENCHMARKS.md), so on x86 the instructions decide."""
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return False
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return True  # another architecture: oneDNN's check is the one there is
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def train_classifier(
    model: nn.Module,
    data: Split,
    *,
    epochs: int,
    seed: int = 0,
    batch_size: int = 64,
    max_lr: float = 0.1,
    shift: int = 1,
    flip: bool = False,
    erase: float = 0.0,
    ema: float = 0.0,
    bf16: bool = False,
    device: str = "cpu",
    on_epoch: Callable[[int, float, nn.Module], None] | None = None,
) -> nn.Module:
    """Train ``model`` from scratch with SGD + one-cycle schedule; returns it in eval mode.
    Augmentation: a random shift of up to ``shift`` pixels, (``flip``) a random horizontal flip
    and (``erase``, a probability) random erasing per image. ``bf16``: mixed precision (bfloat16
    autocast, float32 weights) where the device runs it natively. ``on_epoch(epoch, mean loss,
    model)`` after each epoch (model in eval mode; it must not draw random numbers). ``ema``: the
    decay of an exponential moving average of the weights and batch-norm statistics, updated
    every step (torch's ``AveragedModel``), which is returned instead of the last weights."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model.to(device).train()
    autocast = bf16 and (device != "cpu" or bf16_supported())
    if autocast and device == "cpu":
        model = model.to(memory_format=torch.channels_last)  # oneDNN's fast layout for bf16
    steps_per_epoch = (len(data) + batch_size - 1) // batch_size
    opt = torch.optim.SGD(model.parameters(), lr=max_lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=epochs * steps_per_epoch)
    averaged = None
    if ema:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema), use_buffers=True)
    for epoch in range(epochs):
        order = torch.randperm(len(data), generator=gen)
        total, batches = 0.0, 0
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            x = _augment(data.x[idx], gen, shift=shift, flip=flip, erase=erase).to(device)
            if autocast and device == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=autocast):
                loss = F.cross_entropy(model(x), data.y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if averaged is not None:
                averaged.update_parameters(model)
            total, batches = total + loss.item(), batches + 1
        if on_epoch is not None:
            shown = model if averaged is None else averaged.module
            shown.eval()
            on_epoch(epoch + 1, total / max(1, batches), shown)
            model.train()
    if averaged is not None:
        model = averaged.module
    return model.to(memory_format=torch.contiguous_format).cpu().eval()


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Hinton et al. (2015): alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE."""
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * t * t * soft + (1.0 - alpha) * F.cross_entropy(student_logits, labels)


@torch.no_grad()
def logits_of(
    model: nn.Module, x: torch.Tensor, *, batch_size: int = 512, device: str = "cpu"
) -> torch.Tensor:
    model.to(device).eval()
    return torch.cat([model(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


def finetune_kd(
    model: nn.Module,
    data: Split,
    teacher_logits: torch.Tensor,
    *,
    steps: int,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 0.01,
    temperature: float = 4.0,
    alpha: float = 0.7,
    device: str = "cpu",
    checkpoints: Sequence[float] = (),
    on_checkpoint: Callable[[float, int, nn.Module], None] | None = None,
) -> nn.Module:
    """Fine-tune a compressed ``model`` for ``steps`` batches with the distillation loss against
    the teacher's precomputed logits on ``data`` (no augmentation, so the logits stay valid and
    the teacher is never run during fine-tuning). Returns the model in eval mode.

    ``on_checkpoint(fraction, step, model)`` is called after the step that completes each
    fraction of ``checkpoints`` (model in eval mode; it may raise to stop the fine-tune). It must
    not draw random numbers: the fine-tune is the same with or without it."""
    if steps <= 0:
        return model.eval()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    order = torch.randperm(len(data), generator=gen)
    pos = 0
    at = {max(1, round(f * steps)): f for f in checkpoints if 0 < f < 1}
    for step in range(steps):
        if pos + batch_size > len(order):
            order, pos = torch.randperm(len(data), generator=gen), 0
        idx = order[pos : pos + batch_size]
        pos += batch_size
        x, y = data.x[idx].to(device), data.y[idx].to(device)
        loss = kd_loss(model(x), teacher_logits[idx].to(device), y, temperature=temperature, alpha=alpha)
        if not torch.isfinite(loss):
            raise PlanError(f"fine-tuning diverged (loss {loss.item()}) at step {step + 1} of {steps}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # A thin or factorised network trained from scratch at a high rate can blow up in a step;
        # clipping keeps such plans trainable instead of leaving NaN weights.
        nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        sched.step()
        if on_checkpoint is not None and step + 1 in at:
            model.eval()
            on_checkpoint(at[step + 1], step + 1, model)
            model.train()
    return model.cpu().eval()


def distill(
    model: nn.Module,
    teacher: nn.Module,
    data: Split,
    *,
    steps: int,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 0.01,
    temperature: float = 4.0,
    alpha: float = 0.7,
    shift: int = 1,
    flip: bool = False,
    bf16: bool = False,
    device: str = "cpu",
    on_progress: Callable[[int, float], None] | None = None,
    every: int = 100,
) -> nn.Module:
    """Train ``model`` ``steps`` more batches against ``teacher`` run on the same augmented
    batch (a random shift of up to ``shift`` pixels, ``flip``: a random horizontal flip): the
    final fine-tune of a chosen plan, long enough that fresh views of the data matter, where a
    trial's short fine-tune distils on precomputed logits. SGD with a cosine schedule from
    ``lr``; ``bf16`` as :func:`train_classifier`. ``on_progress(step, mean loss)`` every
    ``every`` steps. Returns the model in eval mode."""
    if steps <= 0:
        return model.eval()
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    teacher = teacher.to(device).eval()
    model.to(device).train()
    autocast = bf16 and (device != "cpu" or bf16_supported())
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    order, pos, total = torch.randperm(len(data), generator=gen), 0, 0.0
    for step in range(steps):
        if pos + batch_size > len(order):
            order, pos = torch.randperm(len(data), generator=gen), 0
        idx = order[pos : pos + batch_size]
        pos += batch_size
        x, y = _augment(data.x[idx], gen, shift=shift, flip=flip).to(device), data.y[idx].to(device)
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=autocast):
            with torch.no_grad():
                target = teacher(x).float()
            logits = model(x).float()
        loss = kd_loss(logits, target, y, temperature=temperature, alpha=alpha)
        if not torch.isfinite(loss):
            raise PlanError(
                f"the final fine-tune diverged (loss {loss.item()}) at step {step + 1} of {steps}"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        opt.step()
        sched.step()
        total += loss.item()
        if on_progress is not None and ((step + 1) % every == 0 or step + 1 == steps):
            on_progress(step + 1, total / ((step % every) + 1))
            if (step + 1) % every == 0:
                total = 0.0
    teacher.cpu()
    return model.cpu().eval()
