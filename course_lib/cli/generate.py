"""``course-generate``: text from GPT-2 (Radford et al. 2019) with the course's samplers.

    course-generate --prompt "The" --max-new-tokens 60                  # zoo:tiny-gpt, offline
    course-generate --model gpt2 --prompt "Once upon a time" --sampler top-k --top-k 40 --num-samples 3
    course-generate --prompt "def f(x):" --adapter lora-adapter         # with a LoRA adapter (peft layout)

Samplers (``course_lib.sampling``): greedy; temperature (``--temperature``);
top-k, top-p (nucleus) and min-p, which keep ``--top-k`` / ``--top-p`` / ``--min-p``
of the distribution and then draw at ``--temperature``. The same ``--seed`` gives
the same text.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..checkpoint import save_json
from ..checks import check_int, check_number, check_probability
from .common import (ToolParser, add_prompt_flags, add_run_flags, add_zoo_flag, check_free, read_prompts,
                     resolve_device, resolve_dtype, run, zoo_options)
from .models import load_language_model

PROG = "course-generate"
SAMPLERS = ("greedy", "temperature", "top-k", "top-p", "min-p")
# the flag each sampler takes (besides --temperature, which every random sampler takes)
SAMPLER_FLAGS = {"top-k": "top_k", "top-p": "top_p", "min-p": "min_p"}
DEFAULTS = {"temperature": 1.0, "top_k": 50, "top_p": 0.9, "min_p": 0.05}


def parser() -> ToolParser:
    p = ToolParser(PROG, __doc__)
    p.add_argument("--model", default="zoo:tiny-gpt",
                   help="zoo:tiny-gpt (offline), gpt2 (or another GPT-2 hub id) or a transformers folder")
    p.add_argument("--adapter", type=Path, default=None, help="a LoRA adapter folder (course-finetune-lora, peft)")
    add_prompt_flags(p, "the text to continue")
    p.add_argument("--max-new-tokens", type=int, default=50, help="tokens to add to each prompt")
    p.add_argument("--sampler", default="top-p", choices=SAMPLERS, help="how the next token is chosen")
    p.add_argument("--temperature", type=float, default=None,
                   help=f"softmax temperature of the random samplers (default {DEFAULTS['temperature']})")
    p.add_argument("--top-k", type=int, default=None, help=f"top-k: tokens kept (default {DEFAULTS['top_k']})")
    p.add_argument("--top-p", type=float, default=None,
                   help=f"top-p: probability mass kept, in (0, 1] (default {DEFAULTS['top_p']})")
    p.add_argument("--min-p", type=float, default=None,
                   help=f"min-p: keep tokens at least this fraction as likely as the top one (default "
                        f"{DEFAULTS['min_p']})")
    p.add_argument("--num-samples", type=int, default=1, help="continuations per prompt")
    p.add_argument("--out", type=Path, default=None, help="also write the texts and settings to this JSON file")
    add_run_flags(p)
    add_zoo_flag(p)
    return p


def make_sampler(args: argparse.Namespace, generator: torch.Generator):
    """The ``course_lib.sampling`` sampler the flags ask for; a flag the sampler does not use is an error."""
    from ..sampling import GreedySampler, MinPSampler, NucleusSampler, TemperatureSampler, TopKSampler

    used = {"temperature"} if args.sampler != "greedy" else set()
    used |= {SAMPLER_FLAGS[args.sampler]} if args.sampler in SAMPLER_FLAGS else set()
    unused = [k for k in DEFAULTS if getattr(args, k) is not None and k not in used]
    if unused:
        flags = ", ".join("--" + k.replace("_", "-") for k in unused)
        raise ValueError(f"{flags} does not apply to --sampler {args.sampler}")
    value = {k: getattr(args, k) if getattr(args, k) is not None else DEFAULTS[k] for k in DEFAULTS}
    check_number("--temperature", value["temperature"], 0.0, low_open=True)
    check_int("--top-k", value["top_k"], 1)
    check_probability("--top-p", value["top_p"])
    check_probability("--min-p", value["min_p"])
    if args.sampler == "greedy":
        return GreedySampler()
    draw = TemperatureSampler(value["temperature"], generator=generator)
    if args.sampler == "top-k":
        return TopKSampler(value["top_k"], draw)
    if args.sampler == "top-p":
        return NucleusSampler(value["top_p"], draw)
    if args.sampler == "min-p":
        return MinPSampler(value["min_p"], draw)
    return draw


def _continue(model, tokenizer, prompt: str, n: int, max_new_tokens: int, sampler, device) -> list[str]:
    """``n`` continuations of ``prompt`` (an empty prompt starts from ``<|endoftext|>``)."""
    from ..gpt2 import generate

    ids = tokenizer.encode(prompt) or [tokenizer.eot_id]
    ids = torch.tensor([ids] * n, device=device)  # [n, T]
    out = generate(model, ids, max_new_tokens, sampler=sampler, eos_id=tokenizer.eot_id)  # [n, T + new]
    texts = []
    for row in out[:, ids.shape[1]:].tolist():
        new = row[: row.index(tokenizer.eot_id)] if tokenizer.eot_id in row else row
        texts.append(prompt + tokenizer.decode(new))
    return texts


def main(argv=None) -> int:
    def body(args):
        prompts = read_prompts(args)
        check_int("--max-new-tokens", args.max_new_tokens, 0)
        check_int("--num-samples", args.num_samples, 1)
        check_int("--seed", args.seed, 0)
        generator = torch.Generator().manual_seed(args.seed)
        sampler = make_sampler(args, generator)  # checks the sampler flags before the model loads
        if args.out is not None:
            check_free([args.out], args.overwrite)
        if args.adapter is not None and not args.adapter.is_dir():
            raise FileNotFoundError(f"--adapter {args.adapter}: no such folder")
        device = resolve_device(args.device)
        model, tokenizer = load_language_model(args.model, device, resolve_dtype(args.dtype), zoo_options(args),
                                               not args.no_progress)
        if args.adapter is not None:
            from ..lora import merge_lora
            from ..peft_io import load_peft_adapter

            model = merge_lora(load_peft_adapter(model, args.adapter)).eval()
        samples = [(p, _continue(model, tokenizer, p, args.num_samples, args.max_new_tokens, sampler, device))
                   for p in prompts]  # everything is generated before anything is printed
        many = len(prompts) * args.num_samples > 1
        for i, (prompt, texts) in enumerate(samples):
            for j, text in enumerate(texts):
                if many:
                    print(f"=== prompt {i + 1}, sample {j + 1} ===")
                print(text)
        if args.out is not None:
            settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                        if k not in ("prompt", "prompt_file", "out", "overwrite", "no_progress", "debug")}
            save_json(args.out, {"tool": PROG, "settings": settings,
                                 "samples": [{"prompt": p, "texts": t} for p, t in samples]})

    return run(parser(), body, argv)


if __name__ == "__main__":
    sys.exit(main())
