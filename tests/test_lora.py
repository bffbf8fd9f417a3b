"""LoRA layers and tools: peft equivalence, fresh = base, frozen base, merge/unmerge, save/load."""

import pytest
import torch
import torch.nn as nn
from torch.testing import assert_close

from course_lib.lora import LoRAEmbedding, LoRALinear, lora_state_dict, merge_lora
from course_lib.lora_tools import (inject_lora, load_adapter, lora_modules, mark_only_lora_trainable,
                                   merge_adapters, save_adapter, unmerge_adapters)
from course_lib.params import count_parameters

peft = pytest.importorskip("peft")


class Toy(nn.Module):
    """A little transformer-ish model with names like GPT-2's."""

    def __init__(self, v=20, d=12):
        super().__init__()
        self.wte = nn.Embedding(v, d)
        self.attn = nn.ModuleDict({"c_attn": nn.Linear(d, 3 * d), "c_proj": nn.Linear(3 * d, d)})
        self.mlp = nn.ModuleDict({"c_fc": nn.Linear(d, 2 * d), "c_proj": nn.Linear(2 * d, d)})
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, v, bias=False)

    def forward(self, ids):
        x = self.wte(ids)
        x = x + self.attn["c_proj"](torch.tanh(self.attn["c_attn"](x)))
        x = x + self.mlp["c_proj"](torch.relu(self.mlp["c_fc"](x)))
        return self.head(self.ln(x))


def randomise_adapters(model):
    with torch.no_grad():
        for m in lora_modules(model).values() if not isinstance(model, (LoRALinear, LoRAEmbedding)) else [model]:
            m.lora_A.normal_()
            m.lora_B.normal_(std=0.5)


# ------------------------------------------------------------------ layers

@pytest.mark.parametrize("r,alpha", [(1, None), (4, 8.0), (8, 2)])
def test_lora_linear_matches_peft(r, alpha):
    base = nn.Linear(10, 7)
    ref = peft.get_peft_model(
        nn.Sequential(base),
        peft.LoraConfig(r=r, lora_alpha=alpha if alpha is not None else r, target_modules=["0"],
                        lora_dropout=0.0, init_lora_weights=False))
    ours = LoRALinear(10, 7, r, alpha)
    peft_layer = ref.base_model.model[0]
    with torch.no_grad():
        ours.weight.copy_(peft_layer.base_layer.weight)
        ours.bias.copy_(peft_layer.base_layer.bias)
        ours.lora_A.normal_()
        ours.lora_B.normal_()
        peft_layer.lora_A["default"].weight.copy_(ours.lora_A)
        peft_layer.lora_B["default"].weight.copy_(ours.lora_B)
    assert peft_layer.scaling["default"] == pytest.approx(ours.scaling)
    x = torch.randn(3, 5, 10)
    assert_close(ours(x), ref(x), atol=1e-6, rtol=1e-6)
    # and the merged weight equals peft's merged weight
    assert_close(ours.delta_weight(), peft_layer.get_delta_weight("default"), atol=1e-6, rtol=1e-6)


def test_lora_embedding_matches_peft():
    base = nn.Embedding(30, 6)
    ref = peft.get_peft_model(nn.Sequential(base), peft.LoraConfig(
        r=3, lora_alpha=6, target_modules=["0"], init_lora_weights=False))
    layer = ref.base_model.model[0]
    ours = LoRAEmbedding(30, 6, 3, alpha=6)
    with torch.no_grad():
        ours.weight.copy_(layer.base_layer.weight)
        ours.lora_A.normal_()
        ours.lora_B.normal_()
        layer.lora_embedding_A["default"].copy_(ours.lora_A)
        layer.lora_embedding_B["default"].copy_(ours.lora_B)
    ids = torch.randint(0, 30, (4, 9))
    assert_close(ours(ids), ref(ids), atol=1e-6, rtol=1e-6)


def test_fresh_adapter_changes_nothing():
    lin, emb = LoRALinear(8, 5, 4, alpha=16), LoRAEmbedding(11, 5, 2)
    x, ids = torch.randn(2, 8), torch.randint(0, 11, (2, 3))
    assert torch.equal(lin.lora_B, torch.zeros(5, 4)) and lin.lora_A.abs().sum() > 0
    assert torch.equal(lin(x), nn.functional.linear(x, lin.weight, lin.bias))
    assert torch.equal(emb(ids), nn.functional.embedding(ids, emb.weight))


def test_scaling_is_alpha_over_r():
    assert LoRALinear(4, 4, 8).scaling == 1.0
    assert LoRALinear(4, 4, 8, alpha=32).scaling == 4.0
    layer = LoRALinear(4, 4, 2, alpha=6)
    randomise_adapters(layer)
    x = torch.randn(3, 4)
    expected = x @ layer.weight.T + layer.bias + 3.0 * (x @ layer.lora_A.T @ layer.lora_B.T)
    assert_close(layer(x), expected)


def test_only_adapters_train():
    layer = LoRALinear(6, 4, 2)
    w0, b0 = layer.weight.clone(), layer.bias.clone()
    opt = torch.optim.SGD([p for p in layer.parameters() if p.requires_grad], lr=0.1)
    assert {n for n, p in layer.named_parameters() if p.requires_grad} == {"lora_A", "lora_B"}
    for _ in range(3):
        opt.zero_grad()
        layer(torch.randn(5, 6)).pow(2).sum().backward()
        opt.step()
    assert layer.weight.grad is None and layer.bias.grad is None
    assert torch.equal(layer.weight, w0) and torch.equal(layer.bias, b0)
    assert layer.lora_B.abs().sum() > 0  # B moved away from zero


def test_merge_is_exact_and_unmerge_restores():
    lin = LoRALinear(9, 6, 3, alpha=5)
    randomise_adapters(lin)
    x = torch.randn(4, 9)
    y, w0 = lin(x), lin.weight.clone()
    lin.merge()
    assert_close(lin(x), y, atol=1e-5, rtol=1e-5)
    lin.unmerge()
    assert_close(lin.weight, w0, atol=1e-6, rtol=0)
    plain = merge_lora(lin)
    assert type(plain) is nn.Linear
    assert_close(plain(x), y, atol=1e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="already merged"):
        lin.merge()


def test_lora_state_dict_has_only_adapters():
    model = nn.Sequential(LoRALinear(4, 4, 2), nn.ReLU(), LoRAEmbedding(5, 4, 1), nn.Linear(4, 2))
    sd = lora_state_dict(model)
    assert set(sd) == {"0.lora_A", "0.lora_B", "2.lora_A", "2.lora_B"}


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(r=0), ValueError, r"r must be >= 1, got r=0"),
    (dict(r=-2), ValueError, r"r must be >= 1"),
    (dict(r=2.0), TypeError, r"rank r must be an int"),
    (dict(r=2, alpha=0), ValueError, r"alpha must be a finite number > 0"),
    (dict(r=2, alpha="big"), TypeError, r"alpha must be a number"),
])
def test_bad_rank_and_alpha(kwargs, err, match):
    with pytest.raises(err, match=match):
        LoRALinear(4, 4, **kwargs)
    with pytest.raises(err, match=match):
        LoRAEmbedding(4, 4, **kwargs)


def test_bad_dims():
    with pytest.raises(ValueError, match="in_f must be >= 1"):
        LoRALinear(0, 4, 2)
    with pytest.raises(TypeError, match="out_f must be an int"):
        LoRALinear(4, 4.5, 2)
    with pytest.raises(ValueError, match=r"n \(number of embeddings\) must be >= 1"):
        LoRAEmbedding(0, 4, 2)


def test_meta_device_build():
    with torch.device("meta"):
        layer = LoRALinear(768, 2304, 4)
    assert layer.weight.is_meta and layer.adapter_parameters() == 4 * (768 + 2304)


# ------------------------------------------------------------------ tools

def test_inject_keeps_outputs_and_freezes_base():
    model = Toy()
    ids = torch.randint(0, 20, (2, 7))
    before = model(ids)
    names = inject_lora(model, targets=("attn", "mlp"), r=2, alpha=4)
    assert names == ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
    assert isinstance(model.attn["c_attn"], LoRALinear) and type(model.head) is nn.Linear
    assert_close(model(ids), before, atol=0, rtol=0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"{n}.lora_{m}" for n in names for m in "AB"}
    count = count_parameters(model)
    expected = 2 * ((12 + 36) + (36 + 12) + (12 + 24) + (24 + 12))
    assert count.trainable == expected
    assert count.total == sum(p.numel() for p in model.parameters())


def test_inject_embeddings_and_tied_weights():
    model = Toy()
    model.head.weight = model.wte.weight  # tie as GPT-2 does
    inject_lora(model, targets=[r"^wte$"], r=2, embeddings=True)
    assert isinstance(model.wte, LoRAEmbedding) and model.head.weight is model.wte.weight
    assert count_parameters(model).trainable == 2 * (20 + 12)


def test_inject_errors():
    with pytest.raises(ValueError, match="no Linear module name matches"):
        inject_lora(Toy(), targets=("nothing_here",), r=2)
    with pytest.raises(ValueError, match="targets must be non-empty strings"):
        inject_lora(Toy(), targets=(), r=2)
    with pytest.raises(ValueError, match="r must be >= 1"):
        inject_lora(Toy(), r=0)
    model = Toy()
    inject_lora(model, targets=("attn",), r=2)
    with pytest.raises(ValueError, match="already has a LoRA adapter"):
        inject_lora(model, targets=("attn",), r=2)
    with pytest.raises(ValueError, match="no LoRA layers"):
        mark_only_lora_trainable(Toy())


def test_only_adapters_change_in_training():
    model = Toy()
    inject_lora(model, r=2)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 20, (4, 6))
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(ids).flatten(0, 1), ids.flatten()).backward()
        opt.step()
    for k, v in model.state_dict().items():
        if k in frozen:
            assert torch.equal(v, frozen[k]), k


def test_merge_unmerge_model():
    model = Toy()
    inject_lora(model, r=3, alpha=6)
    randomise_adapters(model)
    ids = torch.randint(0, 20, (2, 5))
    y = model(ids)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    merge_adapters(model)
    assert_close(model(ids), y, atol=1e-5, rtol=1e-5)
    unmerge_adapters(model)
    for k, v in model.state_dict().items():
        assert_close(v, weights[k], atol=1e-6, rtol=0)
    merge_lora(model)
    assert not lora_modules(model)
    assert_close(model(ids), y, atol=1e-5, rtol=1e-5)


def test_adapter_save_load_round_trip(tmp_path):
    torch.manual_seed(1)
    model = Toy()
    inject_lora(model, r=2, alpha=4)
    randomise_adapters(model)
    ids = torch.randint(0, 20, (2, 5))
    size = save_adapter(model, tmp_path / "a.safetensors")
    assert 0 < size < 4096  # adapters only: a few hundred floats
    other = Toy()
    other.load_state_dict({k: v for k, v in model.state_dict().items() if "lora_" not in k},
                          strict=True)
    inject_lora(other, r=2, alpha=4)
    assert not torch.allclose(other(ids), model(ids))
    load_adapter(other, tmp_path / "a.safetensors")
    assert_close(other(ids), model(ids), atol=0, rtol=0)


def test_adapter_load_is_strict(tmp_path):
    model = Toy()
    inject_lora(model, targets=("attn",), r=2)
    save_adapter(model, tmp_path / "a.safetensors")
    wrong_rank = Toy()
    inject_lora(wrong_rank, targets=("attn",), r=4)
    with pytest.raises(ValueError, match="adapter layers differ"):
        load_adapter(wrong_rank, tmp_path / "a.safetensors")
    more = Toy()
    inject_lora(more, targets=("attn", "mlp"), r=2)
    with pytest.raises(ValueError, match=r"mlp\.c_fc"):
        load_adapter(more, tmp_path / "a.safetensors")
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(1)}, str(tmp_path / "b.safetensors"))
    with pytest.raises(ValueError, match="not a course_lib LoRA adapter"):
        load_adapter(model, tmp_path / "b.safetensors")
