"""``course-finetune-lora``: LoRA fine-tuning of GPT-2 on text (``course_lib.finetune``).

The defaults are the seed configuration: r = 32 on every linear layer, lr 1e-4,
32 sequences of 512 tokens per step. The context is min(--context, the model's
own): 512 for GPT-2, 128 for zoo:tiny-gpt. The adapter is written in peft's
layout (PeftModel.from_pretrained loads it) and course-generate --adapter uses it.

    course-finetune-lora --out lora-python                  # zoo:tiny-gpt on the Python corpus
    course-finetune-lora --model gpt2 --data my_texts/ --out lora-mine --device cuda
    course-finetune-lora --out lora-python --resume         # carry on after an interruption

Several processes (DistributedDataParallel: NCCL on GPUs, gloo on CPUs) keep the
global batch by accumulating gradients; only process 0 writes:

    torchrun --nproc_per_node 4 -m course_lib.cli.finetune_lora --model gpt2 --out lora-mine
    accelerate launch --multi_gpu --num_processes 4 -m course_lib.cli.finetune_lora --model gpt2 --out lora-mine
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from .common import (ToolParser, add_run_flags, add_zoo_flag, check_free, resolve_device, resolve_dtype, run,
                     zoo_options)
from .models import load_language_model

PROG = "course-finetune-lora"


def parser() -> ToolParser:
    from ..finetune import FinetuneSettings

    d = FinetuneSettings()
    p = ToolParser(PROG, __doc__)
    p.add_argument("--model", default="zoo:tiny-gpt",
                   help="zoo:tiny-gpt (offline), gpt2 (or another GPT-2 hub id) or a transformers folder")
    p.add_argument("--data", default="corpus:python",
                   help="corpus:python or corpus:prose (offline), a text file, or a folder of .txt/.md/.rst/.py")
    p.add_argument("--out", type=Path, default=Path("lora-adapter"), help="folder for the adapter and checkpoint")
    p.add_argument("--resume", action="store_true", help="carry on from the checkpoint in --out")
    p.add_argument("--lora-rank", type=int, default=d.r, help="LoRA rank r")
    p.add_argument("--lora-alpha", type=float, default=d.alpha, help="LoRA alpha (default: r, a scaling of 1)")
    p.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate (after warmup, cosine decay)")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="sequences per optimiser step, over all processes")
    p.add_argument("--micro-batch-size", type=int, default=None,
                   help="sequences per forward pass and process (default: the process's whole share); "
                        "smaller means gradient accumulation, the same result in less memory")
    p.add_argument("--context", type=int, default=d.context, help="tokens per sequence (capped at the model's)")
    p.add_argument("--steps", type=int, default=d.steps, help="optimiser steps")
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help="linear warmup steps")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay on A and B")
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help="max gradient norm (0: no clipping)")
    p.add_argument("--eval-every", type=int, default=50, help="validation loss every so many steps")
    p.add_argument("--save-every", type=int, default=50, help="checkpoint every so many steps")
    add_run_flags(p, seed_help="seed of the adapters' initialisation and of the batches")
    add_zoo_flag(p)
    return p


def _train(args) -> None:
    from .. import finetune as ft
    from ..device import amp_dtype
    from ..params import count_parameters
    from ..zoo.tiny_gpt import encode_documents

    settings = ft.FinetuneSettings(r=args.lora_rank, alpha=args.lora_alpha, lr=args.lr, batch_size=args.batch_size,
                                   context=args.context, steps=args.steps, warmup_steps=args.warmup_steps,
                                   weight_decay=args.weight_decay, grad_clip=args.grad_clip or None,
                                   seed=args.seed).check()
    if not args.resume:
        check_free([args.out / name for name in ft.OUTPUT_FILES], args.overwrite)
    texts = ft.load_texts(args.data)
    place = ft.init_distributed(resolve_device(args.device))
    ft.accumulation_steps(settings.batch_size, args.micro_batch_size or settings.batch_size // place.world,
                          place.world)  # checked before the model loads
    dtype = resolve_dtype(args.dtype)
    amp = amp_dtype(place.device) if dtype is None else dtype  # auto: bf16/fp16 on GPUs, float32 on the CPU
    amp = None if amp == torch.float32 else amp
    say = print if place.main else (lambda *a, **k: None)

    if place.world > 1 and not place.main:
        dist.barrier()  # process 0 loads first: it alone trains and caches a zoo model or downloads weights
    model, tokenizer = load_language_model(args.model, place.device, None, zoo_options(args),
                                           not args.no_progress and place.main)
    if place.world > 1 and place.main:
        dist.barrier()
    context = min(settings.context, model.n_positions)
    train_tokens, val_tokens = ft.split_tokens(encode_documents(tokenizer, texts), context)
    adapted = ft.add_lora(model, settings)
    say(f"{PROG}: {args.model}, LoRA r={settings.r} on {len(adapted)} linear layers, {count_parameters(model)}")
    say(f"{PROG}: {args.data}: {train_tokens.numel():,} training and {val_tokens.numel():,} validation tokens; "
        f"context {context}" + (f" (the model's; {settings.context} asked)" if context < settings.context else ""))
    micro = f", micro-batches of {args.micro_batch_size}" if args.micro_batch_size else ""
    say(f"{PROG}: {place.world} process(es) on {place.device.type}, batch {settings.batch_size}{micro}; "
        f"autocast {str(amp).replace('torch.', '') if amp else 'off'}")
    history = ft.finetune_lora(model, train_tokens, val_tokens, settings, args.out, place=place,
                               micro_batch_size=args.micro_batch_size, resume=args.resume,
                               eval_every=args.eval_every, save_every=args.save_every, amp_dtype=amp,
                               recipe={"model": args.model, "data": args.data, "zoo_options": zoo_options(args)},
                               base_model_name_or_path=None if args.model.startswith("zoo:") else args.model,
                               progress=not args.no_progress)
    if place.main:  # process 0 evaluates and writes
        step, val = history["val_loss"][-1]
        say(f"{PROG}: step {step}: validation loss {val:.4f}; adapter written to {args.out}/")


def main(argv=None) -> int:
    def body(args):
        try:
            _train(args)
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()

    return run(parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
