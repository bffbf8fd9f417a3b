"""GPT-2 and the CLIP text encoder in float16 and bfloat16, against transformers in the same dtype.

Half precision always loses accuracy; the question is whether the course's models lose
*more* than the reference library. So each test builds both models from the same random
weights, runs the float32 reference (transformers' model in float32), and then both
models in the reduced dtype, and compares their errors against that reference:

    mean |ours − ref| ≤ 1.1 · mean |theirs − ref| + 1e-6
    max  |ours − ref| ≤ 1.5 · max  |theirs − ref| + 1e-6

Why these factors (measured on this CPU, seeds 0–2, the configurations below):

* the mean over thousands of outputs is a stable statistic: ours/theirs was 0.98–1.03;
* two real mistakes move it well past 1.1: a LayerNorm computed in half precision
  (mean and variance rounded to fp16/bf16; PyTorch's own LayerNorm accumulates in
  float32) gave 1.25–1.45 on the GPT-2 logits, and the written-out attention path
  (``use_sdpa=False``, used for attention maps) computing QKᵀ, softmax and the weighted
  sum in half precision gave 1.25 on the attention output — it failed this test until it
  was made to compute in float32, as SDPA's kernels accumulate;
* the maximum is a single element among thousands, so it is noisy (ours/theirs
  0.84–1.19): 1.5 only catches outliers such as an overflow;
* + 1e-6 keeps the comparison meaningful should both errors be ~0.

The GPT-2 attention is also compared on its own, where a change of the softmax's
precision is not diluted by the rest of the model.
"""

import copy

import pytest
import torch

transformers = pytest.importorskip("transformers")

from course_lib import clip, gpt2  # noqa: E402
from course_lib.attention import MultiHeadAttention  # noqa: E402

DTYPES = [torch.float16, torch.bfloat16]
MEAN_FACTOR, MAX_FACTOR, FLOOR = 1.1, 1.5, 1e-6


def _errors(out: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    err = (out.float() - ref).abs()
    return err.mean().item(), err.max().item()


def assert_at_least_as_close(ours, theirs, ref, what: str) -> None:
    """``ours`` (course, half) is at least as close to ``ref`` (float32) as ``theirs`` (reference, half)."""
    assert ours.dtype == theirs.dtype != torch.float32
    (mean_o, max_o), (mean_t, max_t) = _errors(ours, ref), _errors(theirs, ref)
    detail = f"{what}: course mean {mean_o:.3g} max {max_o:.3g}; transformers mean {mean_t:.3g} max {max_t:.3g}"
    assert mean_o <= MEAN_FACTOR * mean_t + FLOOR, detail
    assert max_o <= MAX_FACTOR * max_t + FLOOR, detail


def _use_sdpa(model: torch.nn.Module, flag: bool) -> None:
    for m in model.modules():
        if isinstance(m, MultiHeadAttention):
            m.use_sdpa = flag


def _randomise(model: torch.nn.Module, seed: int, std: float) -> torch.nn.Module:
    """Every tensor random: weights and biases N(0, std²), LayerNorm gains uniform in [0.5, 1.5]."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ("ln_" in name or "norm" in name) and name.endswith("weight"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))
    return model.eval()


def _random_gpt2(seed: int, n_layer: int = 4) -> transformers.GPT2LMHeadModel:
    return _randomise(transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=101, n_embd=64, n_head=4, n_layer=n_layer, n_positions=128)), seed, std=0.2)


@pytest.mark.parametrize("use_sdpa", [True, False], ids=["sdpa", "written-out"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("seed", [0, 1])
def test_gpt2_logits_in_half_precision(dtype, use_sdpa, seed):
    hf = _random_gpt2(seed)
    ours = gpt2.from_hf(hf).eval()
    ids = torch.randint(0, 101, (2, 128), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = hf(ids).logits
        theirs = copy.deepcopy(hf).to(dtype)(ids).logits
        half = ours.to(dtype)
        _use_sdpa(half, use_sdpa)
        out = half(ids)
    assert_at_least_as_close(out, theirs, ref, f"GPT-2 logits in {dtype}")


@pytest.mark.parametrize("use_sdpa", [True, False], ids=["sdpa", "written-out"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_gpt2_attention_in_half_precision(dtype, use_sdpa):
    hf = _random_gpt2(2, n_layer=1)
    ours = gpt2.from_hf(hf).h[0].attn
    theirs = hf.transformer.h[0].attn
    x = torch.randn(2, 128, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = theirs(x)[0]
        theirs_half = copy.deepcopy(theirs).to(dtype)(x.to(dtype))[0]
        half = ours.to(dtype)
        half.use_sdpa = use_sdpa
        out = half(x.to(dtype), causal=True)
    assert_at_least_as_close(out, theirs_half, ref, f"GPT-2 attention in {dtype}")


def test_gpt2_generates_in_half_precision():
    """The KV cache takes the model's dtype; the cached and uncached paths agree in bf16."""
    model = gpt2.from_hf(_random_gpt2(0)).to(torch.bfloat16).eval()
    assert model.new_cache(1).k.dtype == torch.bfloat16
    prompt = torch.randint(0, 101, (2, 6), generator=torch.Generator().manual_seed(0))
    ids = torch.randint(0, 101, (2, 20), generator=torch.Generator().manual_seed(1))
    cache = model.new_cache(2)
    with torch.no_grad():
        full = model(ids).float()
        parts = torch.cat([model(ids[:, :12], cache), model(ids[:, 12:13], cache), model(ids[:, 13:], cache)], 1)
    # the same bf16 computation in other chunks: differences of a few bf16 roundings only
    assert (parts.float() - full).abs().mean() < 0.02 * full.abs().mean()
    assert gpt2.generate(model, prompt, 10).shape == (2, 16)


def _random_clip(seed: int, act: str) -> transformers.CLIPTextModel:
    return _randomise(transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=99, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
        max_position_embeddings=77, hidden_act=act, bos_token_id=0, eos_token_id=98, pad_token_id=1)),
        seed, std=0.3)


@pytest.mark.parametrize("use_sdpa", [True, False], ids=["sdpa", "written-out"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_clip_text_encoder_in_half_precision(dtype, use_sdpa, act):
    hf = _random_clip(0, act)
    ours = clip.from_hf(hf).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 99, (6, 77), generator=g)
    mask = torch.ones(6, 77, dtype=torch.long)
    mask[1, 40:] = 0  # padding: the masked attention path as well
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        theirs = copy.deepcopy(hf).to(dtype)(input_ids=ids, attention_mask=mask).last_hidden_state
        half = ours.to(dtype)
        _use_sdpa(half, use_sdpa)
        out = half(ids, attention_mask=mask)
    real = mask.bool()  # transformers' states at padded positions are not defined the same way
    assert_at_least_as_close(out[real], theirs[real], ref[real], f"CLIP text encoder ({act}) in {dtype}")
