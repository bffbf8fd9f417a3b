"""The course's one training loop (AdamW, warmup + cosine schedule, EMA, progress bar,
gradient accumulation, DistributedDataParallel).

    history = train(model, loss_fn, batches, steps=1000, lr=3e-4, device=device,
                    warmup_steps=100, schedule="cosine", grad_clip=1.0, seed=0,
                    eval_fn=None, eval_every=100, callback=None, callback_every=100,
                    ema_decay=None, grad_accum_steps=1, start_step=0, cpu_threads="auto")

* ``loss_fn(model, batch) -> scalar loss tensor``: the only task-specific code.
* ``batches``: where batches come from. Either a callable ``batches(step) ->
  batch`` (a sampler; ``step`` counts from 0) or an iterable (a list, a
  DataLoader, a generator). A re-iterable that runs out starts again; a one-shot
  iterator that runs out is an error. Tensors inside the batch (also in tuples,
  lists and dicts) are moved to ``device``.
* ``eval_fn(model) -> float or dict of floats`` runs every ``eval_every`` steps
  and after the last step, in eval mode and without gradients.
* ``callback(step, model, loss)`` runs every ``callback_every`` steps and after
  the last step (e.g. to print samples).
* ``seed``: the loop runs inside ``course_lib.device.seeded(seed)`` — repeatable
  (dropout, anything the loss draws from the global generator) and the global
  random state is restored afterwards. Batches should come from their own
  ``torch.Generator``.
* ``ema_decay``: keep an exponential moving average of the trainable weights
  and copy it into the model at the end (diffusion models are sampled from it).
* ``cpu_threads`` (on the CPU): PyTorch's thread count while training, then
  restored. ``"auto"`` uses one thread per core that is idle right now
  (``course_lib.device.cpu_threads``): next to another busy process, threads that
  wait for each other at every operation made training many times slower than one
  thread (``benchmarks/contention.py``).
* ``grad_accum_steps = k``: every optimiser step draws ``k`` micro-batches (a
  callable ``batches`` gets the micro-batch index ``step·k + j``) and
  back-propagates ``loss / k`` for each, so the step sees the gradient of one
  batch k times larger (gradient accumulation, as in nanoGPT).
* ``model`` may be wrapped in ``torch.nn.parallel.DistributedDataParallel``:
  each process passes its own share of the data, the gradients are averaged
  across processes once per step (``no_sync`` for the first k − 1 micro-batches),
  and the recorded loss is the mean over all processes. So k micro-batches of
  size b on each of P processes give the same step as one process with k·P
  micro-batches of size b.
* ``start_step``: resume an interrupted run at this step (pass the optimizer
  with its saved state; the schedule carries on where it was, and a callable
  ``batches`` gets the same indices as in the uninterrupted run).

It returns the history, a dict of lists:
``{"train_loss": [float per step], "lr": [float per step],
"val_loss": [(step, float), ...]}`` (eval dicts give ``"val_<key>"`` entries),
which ``course_lib.viz.loss_curve`` plots.

Optimiser: AdamW (Loshchilov & Hutter 2019), weight decay only on matrices
(weights of Linear/Embedding layers, ``p.dim() >= 2``), not on biases or
LayerNorm gains — GPT-1's rule (Radford et al. 2018, §4.1: decay "on all non
bias or gain weights"), which nanoGPT follows. Betas (0.9, 0.95), clipping at
global norm 1.0, weight decay 0.1 and cosine decay to 10% are GPT-3's settings
(Brown et al. 2020, appendix B). Schedule (``lr_at``): linear warmup from
0 over ``warmup_steps``, then cosine decay (Loshchilov & Hutter 2017) to
``min_lr_ratio × lr`` at the last step, or constant.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from contextlib import nullcontext

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .checks import check_int
from .device import cpu_threads as cpu_threads_for
from .device import seeded
from .progress import progress_bar

SCHEDULES = ("cosine", "constant")


def lr_at(step: int, lr: float, total_steps: int, warmup_steps: int = 0,
          schedule: str = "cosine", min_lr_ratio: float = 0.1) -> float:
    """Learning rate for optimiser step ``step`` (0-based).

    warmup (step < warmup_steps): ``lr · (step + 1) / warmup_steps``;
    then cosine: ``min_lr + ½ (lr − min_lr) (1 + cos(π · p))`` with ``p`` the
    fraction of the post-warmup steps done (0 -> lr, last step -> min_lr),
    or constant: ``lr``.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"need total_steps ≥ 1 and 0 ≤ warmup_steps ≤ total_steps, "
                         f"got total_steps={total_steps}, warmup_steps={warmup_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    decay_steps = max(1, total_steps - warmup_steps - 1)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    min_lr = lr * min_lr_ratio
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def lr_lambda(total_steps: int, warmup_steps: int = 0, schedule: str = "cosine",
              min_lr_ratio: float = 0.1) -> Callable[[int], float]:
    """The schedule as a multiplier of the base lr, for ``torch.optim.lr_scheduler.LambdaLR``."""
    lr_at(0, 1.0, total_steps, warmup_steps, schedule, min_lr_ratio)  # validate the arguments now
    return lambda step: lr_at(step, 1.0, total_steps, warmup_steps, schedule, min_lr_ratio)


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.1,
                   betas=(0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (``p.dim() >= 2``), not on biases and gains.

    On the CPU and CUDA it is the fused implementation (one kernel for all tensors
    instead of a loop over them: several times faster for models of many small tensors).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused)


@torch.no_grad()
def ema_update(ema_params, params, decay: float) -> None:
    """Exponential moving average of weights, in place: ``ema ← decay · ema + (1 − decay) · θ``.

    Diffusion models are sampled from the EMA weights (Ho et al. 2020, appendix B;
    Song & Ermon 2020, sec. 3.6): they average out the last steps' noise.
    ``ema_params`` and ``params``: iterables of tensors in the same order.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
    ema_params, params = list(ema_params), list(params)
    if len(ema_params) != len(params):
        raise ValueError(f"got {len(ema_params)} EMA tensors for {len(params)} parameters")
    for e, p in zip(ema_params, params):
        e.lerp_(p.detach(), 1.0 - decay)  # e + (1 - decay)(p - e)


def to_device(batch, device):
    """Move every tensor inside ``batch`` (tensor, tuple, list or dict) to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _batch_source(batches):
    """Turn ``batches`` into a function ``step -> batch``."""
    if callable(batches) and not isinstance(batches, Iterable):
        return batches
    if not isinstance(batches, Iterable):
        raise TypeError(f"batches must be a callable batches(step) or an iterable, got {type(batches).__name__}")
    one_shot = iter(batches) is batches  # a generator/iterator cannot be restarted
    state = {"it": iter(batches)}

    def get(step):
        try:
            return next(state["it"])
        except StopIteration:
            if one_shot:
                raise ValueError(f"the batch iterator ran out after {step} steps; pass a re-iterable "
                                 f"(list, DataLoader), a callable batches(step), or fewer steps") from None
            state["it"] = iter(batches)
            try:
                return next(state["it"])
            except StopIteration:
                raise ValueError("batches is empty") from None

    return get


def _evaluate(model, eval_fn):
    was_training = model.training
    model.eval()
    with torch.no_grad():
        result = eval_fn(model)
    model.train(was_training)
    if isinstance(result, torch.Tensor):
        result = result.item()
    if isinstance(result, dict):
        return {f"val_{k}": float(v) for k, v in result.items()}
    return {"val_loss": float(result)}


def train(model: nn.Module, loss_fn, batches, steps: int, *, lr: float = 3e-4, device=None,
          weight_decay: float = 0.1, betas=(0.9, 0.95), warmup_steps: int = 0, schedule: str = "cosine",
          min_lr_ratio: float = 0.1, grad_clip: float | None = 1.0, seed: int | None = None,
          eval_fn=None, eval_every: int | None = None, callback=None, callback_every: int = 100,
          optimizer: torch.optim.Optimizer | None = None, ema_decay: float | None = None,
          grad_accum_steps: int = 1, start_step: int = 0, progress: bool = True,
          desc: str = "training", cpu_threads: int | str | None = "auto") -> dict:
    """Train ``model`` for ``steps`` optimiser steps; return the history (see the module docstring).

    ``device``: where to train (default: the model's current device); the model
    is moved there. ``seed``: run inside ``seeded(seed)`` (repeatable; the global
    random state is left as it was). ``grad_clip``: max global gradient norm
    (None = off). ``optimizer``: bring your own (its lr is still driven by the
    schedule). ``ema_decay``: end with the EMA of the weights in the model.
    ``cpu_threads`` (training on the CPU only): PyTorch's thread count while training,
    restored afterwards: ``"auto"`` picks it from the cores that are free now
    (``course_lib.device.cpu_threads``), an int fixes it, None leaves it alone.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if lr <= 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if grad_clip is not None and grad_clip <= 0:
        raise ValueError(f"grad_clip must be > 0 or None, got {grad_clip}")
    if ema_decay is not None and not 0.0 < ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in (0, 1) or None, got {ema_decay}")
    for name, every in (("eval_every", eval_every), ("callback_every", callback_every)):
        if every is not None and (not isinstance(every, int) or every < 1):
            raise ValueError(f"{name} must be a positive int or None, got {every!r}")
    check_int("grad_accum_steps", grad_accum_steps, 1)
    check_int("start_step", start_step, 0, steps - 1)
    if start_step and ema_decay is not None:
        raise ValueError("start_step > 0 cannot be combined with ema_decay: the EMA is not part of "
                         "the state a run resumes from")
    schedule_fn = lr_lambda(steps, warmup_steps, schedule, min_lr_ratio)  # validates the schedule
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    seeding = seeded(seed) if seed is not None else nullcontext()
    threads = cpu_threads_for(cpu_threads) if device.type == "cpu" and cpu_threads is not None else nullcontext()
    with seeding, threads:
        return _train_loop(model, loss_fn, batches, steps, lr, device, weight_decay, betas, schedule_fn,
                           grad_clip, eval_fn, eval_every, callback, callback_every, optimizer, ema_decay,
                           grad_accum_steps, start_step, progress, desc)


def _no_sync(model: nn.Module, sync: bool):
    """DDP averages gradients across processes in ``backward``; skip that unless ``sync``."""
    if isinstance(model, DistributedDataParallel) and not sync:
        return model.no_sync()
    return contextlib.nullcontext()


def _mean_over_processes(value: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """The mean of a scalar over all DDP processes (itself without DDP)."""
    if isinstance(model, DistributedDataParallel):
        value = value.clone()
        dist.all_reduce(value)  # a sum: gloo has no average
        value /= dist.get_world_size()
    return value


def _train_loop(model, loss_fn, batches, steps, lr, device, weight_decay, betas, schedule_fn, grad_clip,
                eval_fn, eval_every, callback, callback_every, optimizer, ema_decay, grad_accum_steps,
                start_step, progress, desc) -> dict:
    model.to(device)
    get_batch = _batch_source(batches)
    opt = optimizer if optimizer is not None else make_optimizer(model, lr, weight_decay, betas)
    for g in opt.param_groups:  # the schedule multiplies each group's base lr
        g.setdefault("initial_lr", g["lr"] if optimizer is not None else lr)
    base_lrs = [g["initial_lr"] for g in opt.param_groups]
    trainable = [p for p in model.parameters() if p.requires_grad]
    ema = [p.detach().clone() for p in trainable] if ema_decay is not None else None

    history: dict[str, list] = {"train_loss": [], "lr": []}
    model.train()
    n_micro = grad_accum_steps
    with progress_bar(steps, desc, disable=not progress) as bar:
        bar.update(start_step)
        for step in range(start_step, steps):
            for g, base in zip(opt.param_groups, base_lrs):
                g["lr"] = base * schedule_fn(step)
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for j in range(n_micro):  # gradient accumulation: n_micro batches, one optimiser step
                batch = to_device(get_batch(step * n_micro + j), device)
                with _no_sync(model, sync=j == n_micro - 1):
                    loss = loss_fn(model, batch)
                    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                        raise TypeError(f"loss_fn must return a scalar tensor, got {type(loss).__name__} "
                                        f"{tuple(loss.shape) if isinstance(loss, torch.Tensor) else ''}")
                    (loss / n_micro).backward()
                total = total + loss.detach()
            value = _mean_over_processes(total / n_micro, model).item()  # one device sync per step
            if not math.isfinite(value):
                raise FloatingPointError(f"loss became {value} at step {step}; try a lower lr or grad_clip")
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            if ema is not None:  # a short memory while the weights still move fast
                ema_update(ema, trainable, min(ema_decay, (1 + step) / (10 + step)))

            done = step + 1  # optimiser steps completed
            history["train_loss"].append(value)
            history["lr"].append(opt.param_groups[0]["lr"])
            postfix = {"loss": f"{value:.4f}"}
            if eval_fn is not None and (done == steps or (eval_every and done % eval_every == 0)):
                for k, v in _evaluate(model, eval_fn).items():
                    history.setdefault(k, []).append((done, v))
                    postfix[k] = f"{v:.4f}"
            bar.update(1, **postfix)
            if callback is not None and (done == steps or done % callback_every == 0):
                callback(done, model, value)
    if ema is not None:
        with torch.no_grad():
            for p, e in zip(trainable, ema):
                p.copy_(e)
    return history
