"""LoRA fine-tuning of GPT-2, in one process or many (DistributedDataParallel).

The seed configuration (notebook 05): LoRA (Hu et al. 2021) with r = 32 on every
linear layer of GPT-2 124M (attention and MLP), AdamW at lr 1e-4, a global batch of
32 sequences of 512 tokens per optimiser step. ``FinetuneSettings()`` holds it.

Data parallelism. Under ``torchrun`` or ``accelerate launch`` every process runs
this same code on its own device (NCCL between GPUs, gloo between CPUs). One
optimiser step sees ``batch_size`` windows in all:

    batch_size = processes × accumulation steps × micro_batch_size

The windows of step ``s`` are drawn with a generator seeded with ``(seed, s)`` and
cut into the processes' and micro-batches' shares, so they are the same windows
whatever the number of processes: P processes give the adapter one process gives
(up to float rounding), and a resumed run the one an uninterrupted run gives.
Nothing else in a step is random, so resuming needs the step, the adapter and the
optimiser state only. ``course_lib.train.train`` is the loop; it averages the
gradients across processes once per step.

Only process 0 writes: ``out/adapter_config.json`` + ``out/adapter_model.safetensors``
(peft's layout, ``course_lib.peft_io``), ``out/training_state.pt`` (to resume) and
``out/finetune.json`` (settings, loss history, training time).
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .checkpoint import atomic_write, save_json
from .checks import check_int, check_number
from .data.text import TokenWindows
from .device import seeded
from .lora import lora_state_dict
from .lora_tools import inject_lora
from .peft_io import CONFIG_FILE, WEIGHTS_FILE, linear_layer_names, save_peft_adapter
from .train import make_optimizer, train

__all__ = ["FinetuneSettings", "Distributed", "init_distributed", "add_lora", "accumulation_steps", "StepBatches",
           "load_texts", "split_tokens", "finetune_lora", "OUTPUT_FILES"]

STATE_FILE = "training_state.pt"
HISTORY_FILE = "finetune.json"
OUTPUT_FILES = (CONFIG_FILE, WEIGHTS_FILE, STATE_FILE, HISTORY_FILE)
STATE_FORMAT = "course_lib.finetune/1"
CORPUS = "corpus:"
TEXT_SUFFIXES = (".txt", ".md", ".rst", ".py")


@dataclass
class FinetuneSettings:
    """Everything that decides the trained adapter (the seed configuration by default)."""

    r: int = 32
    alpha: float | None = None  # None: α = r (scaling 1)
    lr: float = 1e-4
    batch_size: int = 32  # sequences per optimiser step, over all processes
    context: int = 512  # tokens per sequence (at most the model's n_positions)
    steps: int = 300
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float | None = 1.0
    seed: int = 0

    def check(self) -> "FinetuneSettings":
        check_int("r", self.r, 1)
        if self.alpha is not None:
            check_number("alpha", self.alpha, 0.0, low_open=True)
        check_number("lr", self.lr, 0.0, low_open=True)
        check_int("batch_size", self.batch_size, 1)
        check_int("context", self.context, 1)
        check_int("steps", self.steps, 1)
        check_int("warmup_steps", self.warmup_steps, 0, self.steps)
        check_number("weight_decay", self.weight_decay, 0.0)
        if self.grad_clip is not None:
            check_number("grad_clip", self.grad_clip, 0.0, low_open=True)
        check_int("seed", self.seed, 0, 2**31 - 1)
        return self


@dataclass(frozen=True)
class Distributed:
    """This process's place: ``rank`` of ``world`` processes, training on ``device``."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Distributed:
    """Join the process group that ``torchrun`` / ``accelerate launch`` set up (``WORLD_SIZE`` > 1 in the
    environment): NCCL with one GPU per process (``cuda:LOCAL_RANK``) on CUDA, gloo on the CPU.
    A single process (no launcher) gets ``Distributed(0, 1, device)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed(0, 1, device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), device)


def add_lora(model: nn.Module, settings: FinetuneSettings) -> list[str]:
    """LoRA on every linear layer of the GPTModel (``peft_io.linear_layer_names``), everything else
    frozen; the adapters' random A is drawn from ``settings.seed``, so every process starts equal."""
    with seeded(settings.seed):
        return inject_lora(model, targets=[f"^{re.escape(n)}$" for n in linear_layer_names(model)],
                           r=settings.r, alpha=settings.alpha)


def accumulation_steps(batch_size: int, micro_batch_size: int, world: int = 1) -> int:
    """``k`` with ``batch_size = world × k × micro_batch_size``; an error if there is none."""
    check_int("micro_batch_size", micro_batch_size, 1)
    per_process, rest = divmod(batch_size, world)
    if rest or per_process % micro_batch_size:
        raise ValueError(f"batch size {batch_size} must be processes ({world}) × accumulation steps × "
                         f"micro-batch size ({micro_batch_size}); choose a micro-batch size that divides "
                         f"{per_process if not rest else batch_size / world}")
    return per_process // micro_batch_size


class StepBatches:
    """``batches(i) -> (x, y)`` for ``train(..., grad_accum_steps=k)``: micro-batch ``j = i mod k``
    of step ``s = i // k``, this process's share of the step's ``batch_size`` windows.

    Process ``rank`` takes rows ``[rank·k·b, (rank+1)·k·b)`` of the step's windows, and
    micro-batch ``j`` the ``b`` rows at ``j·b`` inside them (``b = micro_batch_size``).
    """

    def __init__(self, tokens: torch.Tensor, context: int, batch_size: int, micro_batch_size: int,
                 seed: int, rank: int = 0, world: int = 1):
        self.accum_steps = accumulation_steps(batch_size, micro_batch_size, world)
        self.windows = TokenWindows(tokens, context)
        self.batch_size, self.micro, self.seed, self.rank = batch_size, micro_batch_size, seed, rank
        self._step, self._batch = None, None

    def step_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """All ``batch_size`` windows of optimiser step ``step``: ``x, y`` [batch_size, context]."""
        if step != self._step:
            self.windows.generator.manual_seed(self.seed << 32 | step)  # (seed, step) -> its own draws
            self._step, self._batch = step, self.windows.sample(self.batch_size)
        return self._batch

    def __call__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        step, j = divmod(i, self.accum_steps)
        x, y = self.step_batch(step)
        start = (self.rank * self.accum_steps + j) * self.micro
        return x[start:start + self.micro], y[start:start + self.micro]  # [b, context] each


def _save_state(out: Path, model: nn.Module, optimizer, step: int, history: dict, recipe: dict) -> None:
    state = {"format": STATE_FORMAT, "step": step, "recipe": recipe, "history": history,
             "adapter": {k: v.detach().cpu() for k, v in lora_state_dict(model).items()},
             "optimizer": optimizer.state_dict()}
    atomic_write(out / STATE_FILE, lambda tmp: torch.save(state, tmp))


def _load_state(out: Path, model: nn.Module, optimizer, recipe: dict) -> tuple[int, dict]:
    """Restore adapter and optimiser from ``out/training_state.pt``; return ``(step, history)``."""
    path = out / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"--resume: {path} not found (no run to resume in {out})")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != STATE_FORMAT:
        raise ValueError(f"{path} is not a course_lib fine-tuning state (format {state.get('format')!r})")
    differ = sorted(k for k in set(recipe) | set(state["recipe"]) if recipe.get(k) != state["recipe"].get(k))
    if differ:
        raise ValueError("cannot resume with other settings: " + "; ".join(
            f"{k}: saved {state['recipe'].get(k)!r}, now {recipe.get(k)!r}" for k in differ))
    own = dict(model.named_parameters())
    if set(state["adapter"]) != set(lora_state_dict(model)):
        raise ValueError(f"{path}: its adapter tensors do not match the model's LoRA layers")
    with torch.no_grad():
        for k, v in state["adapter"].items():
            own[k].copy_(v)
    optimizer.load_state_dict(state["optimizer"])
    return state["step"], state["history"]


def load_texts(source: str) -> list[str]:
    """The documents to fine-tune on: ``corpus:prose`` / ``corpus:python`` (the offline corpus,
    ``course_lib.data.text``), a text file, or a folder (its ``*.txt``, ``*.md``, ``*.rst`` and
    ``*.py`` files, sorted, searched recursively)."""
    if source.startswith(CORPUS):
        from .data.text import load_documents

        return load_documents(source[len(CORPUS):])
    path = Path(source)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"--data {source}: no {'/'.join(TEXT_SUFFIXES)} files in this folder")
    else:
        raise FileNotFoundError(f"--data {source}: no such file or folder (or use corpus:prose, corpus:python)")
    texts = []
    for f in files:
        try:
            texts.append(f.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ValueError(f"--data: {f} is not UTF-8 text") from None
    return texts


def split_tokens(tokens: torch.Tensor, context: int, val_windows: int = 16):
    """``(train, val)``: the stream's tail is held out for validation — ``val_windows``
    windows of ``context`` tokens, but at most a tenth of the stream."""
    n_val = min(val_windows * context + 1, tokens.numel() // 10)
    if n_val <= context or tokens.numel() - n_val <= context:
        raise ValueError(f"the text has {tokens.numel()} tokens: too few for training and validation windows of "
                         f"{context} tokens (need more than {10 * (context + 1)})")
    return tokens[:-n_val], tokens[-n_val:]


def finetune_lora(model: nn.Module, train_tokens: torch.Tensor, val_tokens: torch.Tensor,
                  settings: FinetuneSettings, out, *, place: Distributed | None = None,
                  micro_batch_size: int | None = None, resume: bool = False, eval_every: int = 50,
                  save_every: int = 50, amp_dtype: torch.dtype | None = None, recipe: dict | None = None,
                  base_model_name_or_path: str | None = None, progress: bool = True) -> dict:
    """Fine-tune LoRA adapters of ``model`` (a GPTModel with ``add_lora`` applied) on a token stream.

    ``place``: this process (``init_distributed``; default: one process on the model's device).
    ``micro_batch_size``: windows per forward pass (default: all of this process's share, no
    accumulation). ``resume``: carry on from ``out/training_state.pt``, refused if ``recipe``
    (the settings, plus what the caller adds: model, data) differs. ``eval_every``: validation
    loss on ``val_tokens`` every so many steps; ``save_every``: checkpoint every so many steps
    (and at the end). ``amp_dtype``: autocast precision (None: float32).
    Returns the history ``{"train_loss": [...], "lr": [...], "val_loss": [(step, loss), ...]}``.
    """
    from .zoo.tiny_gpt import validation_loss

    settings = settings.check()
    check_int("eval_every", eval_every, 1)
    check_int("save_every", save_every, 1)
    place = place or Distributed(0, 1, next(model.parameters()).device)
    out = Path(out)
    context = min(settings.context, model.n_positions)
    micro = micro_batch_size or settings.batch_size // place.world
    batches = StepBatches(train_tokens, context, settings.batch_size, micro, settings.seed, place.rank, place.world)
    recipe = {**dataclasses.asdict(settings), "effective_context": context, **(recipe or {})}
    model.to(place.device)
    optimizer = make_optimizer(model, settings.lr, settings.weight_decay)
    start, history = _load_state(out, model, optimizer, recipe) if resume else (0, {})
    if start >= settings.steps:
        raise ValueError(f"the run in {out} already finished its {settings.steps} steps")
    for key in ("train_loss", "lr", "val_loss"):
        history.setdefault(key, [])
    wrapped = model
    if place.world > 1:
        wrapped = DistributedDataParallel(model, device_ids=[place.device.index] if place.device.type == "cuda"
                                          else None)

    def loss_fn(m, batch):
        x, y = batch  # [b, context] each
        with torch.autocast(place.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = m(x)  # [b, context, V]
        return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())

    def after_step(step, m, loss):  # every step: history, validation, checkpoint (process 0 only)
        history["train_loss"].append(loss)
        history["lr"].append(optimizer.param_groups[0]["lr"])
        last = step == settings.steps
        if place.main and (last or step % eval_every == 0):
            model.eval()
            history["val_loss"].append((step, validation_loss(model, val_tokens, context)))
            model.train()
        if place.main and (last or step % save_every == 0):
            _save_state(out, model, optimizer, step, history, recipe)

    start_time = time.perf_counter()
    train(wrapped, loss_fn, batches, settings.steps, lr=settings.lr, device=place.device,
          weight_decay=settings.weight_decay, warmup_steps=settings.warmup_steps, grad_clip=settings.grad_clip,
          optimizer=optimizer, grad_accum_steps=batches.accum_steps, start_step=start, callback=after_step,
          callback_every=1, progress=progress and place.main, desc="LoRA fine-tuning")
    if place.main:
        save_peft_adapter(model, out, base_model_name_or_path)
        save_json(out / HISTORY_FILE, {"recipe": recipe, "processes": place.world, "micro_batch_size": micro,
                                       "accumulation_steps": batches.accum_steps, "history": history,
                                       "seconds": round(time.perf_counter() - start_time, 3),
                                       "steps_run": settings.steps - start})
    return history
