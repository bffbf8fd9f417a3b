"""course_lib.peft_io: adapters that peft loads, and adapters peft wrote, give the same logits."""

import copy
import json

import pytest
import torch
from torch.testing import assert_close

peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from course_lib.gpt2 import from_hf  # noqa: E402
from course_lib.lora import merge_lora  # noqa: E402
from course_lib.lora_tools import inject_lora, lora_modules, merge_adapters  # noqa: E402
from course_lib.peft_io import linear_layer_names, load_peft_adapter, save_peft_adapter  # noqa: E402
from tiny_gpt2 import random_peft_model, save_tiny_gpt2  # noqa: E402

IDS = torch.tensor([[5, 72, 91, 18, 18, 11, 96, 33], [1, 2, 3, 4, 5, 6, 7, 8]])  # 96: <|endoftext|>


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    return save_tiny_gpt2(tmp_path_factory.mktemp("gpt2"))


def _hf(folder):
    return transformers.GPT2LMHeadModel.from_pretrained(folder).eval()


def _trained_adapter(folder, r=4, alpha=8.0):
    """The course model with LoRA on every linear layer and random (as if trained) A and B."""
    model = from_hf(_hf(folder))
    inject_lora(model, targets=[f"^{n}$" for n in linear_layer_names(model)], r=r, alpha=alpha)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in lora_modules(model).values():
            layer.lora_A.copy_(torch.randn(layer.lora_A.shape, generator=g) * 0.3)
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 0.3)
    return model.eval()


def test_peft_loads_the_adapter_and_matches_the_merged_course_model(gpt2_folder, tmp_path):
    ours = _trained_adapter(gpt2_folder)
    save_peft_adapter(ours, tmp_path / "adapter", base_model_name_or_path=str(gpt2_folder))
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8.0 and config["fan_in_fan_out"] is True
    assert len(config["target_modules"]) == 4 * 2  # c_attn, attn c_proj, c_fc, mlp c_proj in 2 blocks

    theirs = peft.PeftModel.from_pretrained(_hf(gpt2_folder), tmp_path / "adapter").eval()
    merged = merge_lora(copy.deepcopy(ours))
    with torch.no_grad():
        base = _hf(gpt2_folder)(IDS).logits
        reference = theirs(input_ids=IDS).logits
        assert (reference - base).abs().max() > 0.1  # the adapter changes the model
        assert_close(merged(IDS), reference, atol=1e-4, rtol=1e-4)
        assert_close(ours(IDS), reference, atol=1e-4, rtol=1e-4)


def test_an_adapter_peft_wrote_loads_into_the_course_model(gpt2_folder, tmp_path):
    theirs = random_peft_model(gpt2_folder, ["c_attn", "c_fc"], r=3, alpha=6, seed=2)
    theirs.save_pretrained(tmp_path / "from_peft")
    ours = load_peft_adapter(from_hf(_hf(gpt2_folder)), tmp_path / "from_peft").eval()
    assert sorted(lora_modules(ours)) == sorted(f"h.{i}.{m}" for i in range(2) for m in ("attn.qkv_proj", "mlp.fc1"))
    with torch.no_grad():
        assert_close(ours(IDS), theirs(input_ids=IDS).logits, atol=1e-4, rtol=1e-4)


def test_save_then_load_gives_back_the_same_adapter(gpt2_folder, tmp_path):
    ours = _trained_adapter(gpt2_folder, r=2, alpha=5.0)
    save_peft_adapter(ours, tmp_path / "a")
    back = load_peft_adapter(from_hf(_hf(gpt2_folder)), tmp_path / "a")
    saved, loaded = lora_modules(ours), lora_modules(back)
    assert sorted(saved) == sorted(loaded)
    for name, layer in saved.items():
        assert loaded[name].r == 2 and loaded[name].alpha == 5.0
        assert torch.equal(loaded[name].lora_A, layer.lora_A) and torch.equal(loaded[name].lora_B, layer.lora_B)


def test_what_cannot_be_written_or_read_is_refused(gpt2_folder, tmp_path):
    with_embedding = from_hf(_hf(gpt2_folder))
    inject_lora(with_embedding, targets=["^wte$", "mlp.fc1"], r=2, embeddings=True)
    with pytest.raises(ValueError, match="tied output head"):
        save_peft_adapter(with_embedding, tmp_path / "x")
    merged = merge_adapters(_trained_adapter(gpt2_folder))
    with pytest.raises(ValueError, match="unmerge"):
        save_peft_adapter(merged, tmp_path / "x")
    with pytest.raises(ValueError, match="no LoRA layers"):
        save_peft_adapter(from_hf(_hf(gpt2_folder)), tmp_path / "x")
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_peft_adapter(from_hf(_hf(gpt2_folder)), tmp_path / "missing")

    save_peft_adapter(_trained_adapter(gpt2_folder), tmp_path / "ok")
    with pytest.raises(ValueError, match="already has LoRA layers"):
        load_peft_adapter(_trained_adapter(gpt2_folder), tmp_path / "ok")
    dora = json.loads((tmp_path / "ok" / "adapter_config.json").read_text()) | {"use_dora": True}
    (tmp_path / "ok" / "adapter_config.json").write_text(json.dumps(dora))
    with pytest.raises(ValueError, match="use_dora=True"):
        load_peft_adapter(from_hf(_hf(gpt2_folder)), tmp_path / "ok")

    deeper = save_tiny_gpt2(tmp_path / "deep", n_layer=3)  # an adapter for 3 blocks does not fit 2
    save_peft_adapter(_trained_adapter(deeper), tmp_path / "deep_adapter")
    with pytest.raises(ValueError, match="transformer.h.2"):
        load_peft_adapter(from_hf(_hf(gpt2_folder)), tmp_path / "deep_adapter")
