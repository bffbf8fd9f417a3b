"""course_lib.gpt2 against transformers' GPT2LMHeadModel (random weights, offline)."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from course_lib.gpt2 import (GPT2_124M, GPTConfig, GPTModel, from_hf, generate, gpt2_124m,
                             hf_key_map, quantize, to_hf_state_dict)
from course_lib.params import count_parameters

SMALL = dict(vocab_size=97, n_embd=48, n_head=4, n_layer=3, n_positions=64)


def random_hf(seed=0, **overrides):
    """A small GPT2LMHeadModel with *every* parameter random (LayerNorms included)."""
    torch.manual_seed(seed)
    cfg = GPT2Config(**{**SMALL, **overrides}, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    hf = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                p.uniform_(0.5, 1.5)  # scales away from 1
            else:
                p.normal_(0.0, 0.2)
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()  # still tied
    return hf


@pytest.mark.parametrize("seed,overrides", [(0, {}), (1, dict(n_embd=32, n_head=2, n_layer=2,
                                                                layer_norm_epsilon=1e-3))])
def test_logits_equal_transformers(seed, overrides):
    hf = random_hf(seed, **overrides)
    model = from_hf(hf).eval()
    ids = torch.randint(0, hf.config.vocab_size, (3, 29), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-4, rtol=1e-4)


def test_conv1d_weights_are_transposed():
    hf = random_hf()
    model = from_hf(hf)
    w_hf = hf.transformer.h[0].attn.c_attn.weight  # Conv1D: [in, out]
    assert w_hf.shape == (48, 144)
    assert model.h[0].attn.qkv_proj.weight.shape == (144, 48)
    torch.testing.assert_close(model.h[0].attn.qkv_proj.weight, w_hf.t())


def test_hf_key_map_covers_both_models_and_transposes_exactly_the_conv1d_weights():
    from transformers.pytorch_utils import Conv1D

    hf = random_hf()
    model = from_hf(hf)
    keys = hf_key_map(3)
    assert ("h.0.attn.qkv_proj.weight", "transformer.h.0.attn.c_attn.weight", True) in keys
    assert ("h.2.mlp.fc1.bias", "transformer.h.2.mlp.c_fc.bias", False) in keys
    assert [ours for ours, _, _ in keys] == list(model.state_dict())  # every tensor, in order
    assert {theirs for _, theirs, _ in keys} == set(hf.state_dict()) - {"lm_head.weight"}
    hf_modules = dict(hf.named_modules())
    for _, theirs, transposed in keys:
        module, _, leaf = theirs.rpartition(".")
        assert transposed == (isinstance(hf_modules[module], Conv1D) and leaf == "weight"), theirs


def test_to_hf_state_dict_round_trips():
    hf = random_hf(2)
    model = from_hf(hf)
    sd = to_hf_state_dict(model)
    fresh = GPT2LMHeadModel(hf.config).eval()
    fresh.load_state_dict(sd, strict=True)
    for k, v in hf.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v, atol=0, rtol=0, msg=k)
    back = from_hf(fresh)
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), back.state_dict().items()):
        assert k1 == k2
        assert torch.equal(v1, v2), k1


def test_full_124m_keys_shapes_and_count():
    with torch.device("meta"):
        hf = GPT2LMHeadModel(GPT2Config())
    model = gpt2_124m(device="meta")
    ours = to_hf_state_dict(model)
    theirs = hf.state_dict()
    assert set(ours) == set(theirs)
    for k, v in theirs.items():
        assert tuple(ours[k].shape) == tuple(v.shape), k
    assert count_parameters(model).total == 124_439_808
    assert count_parameters(model).total == sum(p.numel() for p in hf.parameters())
    assert GPT2_124M["n_positions"] == hf.config.n_positions == 1024


def test_greedy_generate_equals_transformers():
    hf = random_hf(3)
    model = from_hf(hf).eval()
    prompt = torch.randint(1, 97, (1, 7), generator=torch.Generator().manual_seed(3))
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = None
    ref = hf.generate(prompt, max_new_tokens=30, do_sample=False)
    ours = generate(model, prompt, 30)
    assert ours.shape == (1, 37)
    assert torch.equal(ours, ref)


def test_cached_equals_uncached_and_batched():
    torch.manual_seed(0)
    model = GPTModel(101, 32, 4, 2, 48, 1e-5).eval()
    prompt = torch.randint(0, 101, (3, 5))
    a = generate(model, prompt, 40, use_cache=True)
    b = generate(model, prompt, 40, use_cache=False)
    assert torch.equal(a, b)
    # the cached forward gives the same logits as the full forward, chunk by chunk
    ids = torch.randint(0, 101, (2, 20))
    cache = model.new_cache(2)
    with torch.no_grad():
        full = model(ids)
        parts = torch.cat([model(ids[:, :7], cache), model(ids[:, 7:8], cache), model(ids[:, 8:], cache)], 1)
    torch.testing.assert_close(parts, full, atol=1e-5, rtol=1e-5)


def test_generate_with_a_sampler_and_eos():
    torch.manual_seed(0)
    model = GPTModel(50, 16, 2, 1, 32, 1e-5).eval()

    class Always7:
        def __call__(self, logits):
            return torch.full((logits.shape[0],), 7)

    out = generate(model, torch.tensor([1, 2, 3]), 10, sampler=Always7())
    assert out.tolist() == [1, 2, 3] + [7] * 10
    out = generate(model, torch.tensor([[1, 2, 3]]), 10, sampler=Always7(), eos_id=7)
    assert out.tolist() == [[1, 2, 3, 7]]  # stops at the end token


def test_fresh_lora_model_equals_base():
    hf = random_hf(4)
    base = from_hf(hf).eval()
    lora = from_hf(hf, lora_r=4).eval()
    ids = torch.randint(0, 97, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(lora(ids), base(ids), atol=1e-6, rtol=1e-6)
    frozen = {n for n, p in lora.named_parameters() if not p.requires_grad}
    assert {"wte.weight", "h.0.attn.qkv_proj.weight", "h.2.mlp.fc2.bias"} <= frozen


def test_lora_model_trains_only_the_adapters():
    """GPTModel(lora_r > 0): adapters on every linear layer and the token embedding, and
    nothing else trainable (LayerNorms and the position embedding are frozen too)."""
    model = GPTModel(60, 32, 4, 2, 32, 1e-5, lora_r=4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("lora_A", "lora_B")) for n in trainable)
    for frozen in ("wpe.weight", "h.0.ln_1.weight", "h.1.ln_2.bias", "ln_f.weight", "wte.weight"):
        assert not dict(model.named_parameters())[frozen].requires_grad, frozen
    adapted = {n.rpartition(".")[0] for n in trainable}
    linears = {n for n, m in GPTModel(60, 32, 4, 2, 32).named_modules() if isinstance(m, torch.nn.Linear)}
    assert adapted == linears | {"wte"}
    lora_params = sum(p.numel() for n, p in model.named_parameters() if n.endswith(("lora_A", "lora_B")))
    assert count_parameters(model).trainable == lora_params


def test_lora_trains_only_adapters_and_merges_exactly():
    from course_lib.lora import merge_lora

    torch.manual_seed(0)
    model = GPTModel(60, 32, 4, 2, 32, 1e-5, lora_r=4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 60, (4, 16))
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.endswith(("lora_A", "lora_B")) for n in changed)
    model.eval()
    with torch.no_grad():
        adapted = model(ids)
        exported = to_hf_state_dict(model)  # adapters folded in
        merge_lora(model)
        torch.testing.assert_close(model(ids), adapted, atol=1e-5, rtol=1e-5)
    assert not any("lora" in n for n, _ in model.named_parameters())
    for k, v in to_hf_state_dict(model).items():
        torch.testing.assert_close(v, exported[k], atol=1e-6, rtol=1e-6)
    quantize(model, "fp16")  # merged: no adapters left, so it can be quantised


def test_attention_maps_are_causal_distributions():
    torch.manual_seed(0)
    model = GPTModel(40, 16, 2, 3, 16, 1e-5).eval()
    maps = model.attention_maps(torch.randint(0, 40, (1, 9)))
    assert maps.shape == (3, 1, 2, 9, 9)
    torch.testing.assert_close(maps.sum(-1), torch.ones(3, 1, 2, 9))
    assert torch.all(maps.triu(1) == 0)


@pytest.mark.parametrize("weights,min_agree", [("fp16", 0.97), ("int8", 0.8)])
def test_quantized_fast_path_agrees(weights, min_agree):
    hf = random_hf(5)
    model = from_hf(hf).eval()
    fast = quantize(model, weights)
    ids = torch.randint(0, 97, (2, 64))
    with torch.no_grad():
        agree = (fast(ids).argmax(-1) == model(ids).argmax(-1)).float().mean()
    assert agree >= min_agree
    assert fast.lm_head is not None and model.lm_head is None  # the original is untouched
    with pytest.raises(ValueError, match="'fp16' or 'int8'"):
        quantize(model, "int4")
    with pytest.raises(ValueError, match="merge the LoRA adapters"):
        quantize(from_hf(hf, lora_r=2), "fp16")


def test_bad_inputs_raise_clear_errors():
    model = GPTModel(50, 16, 2, 1, 8, 1e-5).eval()
    with pytest.raises(ValueError, match="n_positions=8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="exceeds the context length n_positions=8"):
        generate(model, torch.zeros(1, 5, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="token id 50 is out of range.*vocab_size=50"):
        model(torch.tensor([[1, 50]]))
    with pytest.raises(ValueError, match="token id -1 is out of range"):
        generate(model, torch.tensor([[-1, 2]]), 2)
    with pytest.raises(TypeError, match="integer tensor"):
        model(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"shape \[B, T\]"):
        model(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        GPTModel(50, 10, 3, 1, 8, 1e-5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, torch.tensor([[1]]), -1)
    with pytest.raises(ValueError, match=r"eos_id must be in \[0, 49\]"):
        generate(model, torch.tensor([[1]]), 2, eos_id=50)
    with pytest.raises(TypeError, match="sampler must return integer token ids"):
        generate(model, torch.tensor([[1]]), 2, sampler=lambda logits: logits[:, 0])
    with pytest.raises(ValueError, match="not the published architecture"):
        from_hf(GPT2LMHeadModel(GPT2Config(**SMALL, activation_function="relu")))


def test_config_dataclass_and_the_three_ways_to_build():
    cfg = GPTConfig(vocab_size=50, d_model=16, n_heads=2, n_layers=1, n_positions=8)
    a, b, c = GPTModel(cfg), GPTModel(50, 16, 2, 1, 8, 1e-5), GPTModel(**dict(vocab_size=50, d_model=16, n_heads=2,
                                                                              n_layers=1, n_positions=8))
    assert a.config == b.config == c.config == cfg and isinstance(a.config, GPTConfig)
    assert list(a.state_dict()) == list(b.state_dict())
    assert GPTModel(cfg, lora_r=2).config.lora_r == 2 and cfg.lora_r == 0  # a changed copy
    with torch.device("meta"):
        assert GPTModel(**GPT2_124M).config == GPTConfig(**GPT2_124M)
    with pytest.raises(ValueError, match="n_heads must be >= 1"):
        GPTConfig(50, 16, 0, 1, 8)
    with pytest.raises(TypeError, match="d_model must be an int"):
        GPTConfig(50, 16.0, 2, 1, 8)
    with pytest.raises(ValueError, match="layer_norm_epsilon must be > 0"):
        GPTConfig(50, 16, 2, 1, 8, layer_norm_epsilon=0.0)
    with pytest.raises(ValueError, match="lora_r must be >= 0"):
        GPTModel(50, 16, 2, 1, 8, lora_r=-1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'n_embd'"):
        GPTModel(50, 16, 2, 1, 8, n_embd=3)


def test_generate_reads_the_ids_once_not_once_per_token(monkeypatch):
    """Checking the ids' range reads them (min/max): on a GPU a device sync. generate checks the
    prompt once and trusts the tokens the sampler produced; a direct call still checks."""
    model = GPTModel(50, 16, 2, 1, 64, 1e-5).eval()
    calls = []
    original = GPTModel.check_token_range
    monkeypatch.setattr(GPTModel, "check_token_range", lambda self, ids: calls.append(ids.shape) or original(self, ids))
    for use_cache in (True, False):
        calls.clear()
        out = generate(model, torch.tensor([[1, 2, 3]]), 20, use_cache=use_cache)
        assert out.shape == (1, 23)
        assert calls == [(1, 3)]  # the prompt, once
    calls.clear()
    with torch.no_grad():
        model(out)
    assert calls == [(1, 23)]
    with pytest.raises(ValueError, match="token id 50 is out of range"):
        generate(model, torch.tensor([[1, 50]]), 5)
