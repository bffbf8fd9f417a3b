"""course_lib.clip: equivalence with transformers' CLIPTextModel, the full-size tower, tokenizers."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from course_lib.clip import (  # noqa: E402
    CLIPTextConfig, CLIPTextEncoder, WordTokenizer, from_hf, hf_key, load_hf_state_dict, quick_gelu,
)
from course_lib.params import count_parameters  # noqa: E402
from course_lib.zoo.shapes import shapes_tokenizer  # noqa: E402


def _hf_tiny(act: str):
    cfg = transformers.CLIPTextConfig(
        vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=16, hidden_act=act, bos_token_id=0, eos_token_id=98, pad_token_id=1,
    )
    cfg._attn_implementation = "eager"
    model = transformers.CLIPTextModel(cfg).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # randomise every parameter, LayerNorms included
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_hidden_states_match_transformers(act):
    hf = _hf_tiny(act)
    ours = from_hf(hf).eval()
    assert ours.config.activation == act
    ids = torch.randint(0, 99, (3, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf(input_ids=ids).last_hidden_state
        out = ours(ids)
    assert out.shape == (3, 16, 32)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    # a shorter prompt and a padding mask also agree
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:] = 0
    with torch.no_grad():
        ref = hf(input_ids=ids[:, :9], attention_mask=mask).last_hidden_state
        out = ours(ids[:, :9], attention_mask=mask)
    torch.testing.assert_close(out[mask.bool()], ref[mask.bool()], atol=1e-4, rtol=1e-4)


def test_activation_changes_the_output():
    hf = _hf_tiny("quick_gelu")
    a = from_hf(hf)
    hf.config.hidden_act = "gelu"
    b = from_hf(hf)
    ids = torch.randint(0, 99, (2, 8))
    assert not torch.allclose(a(ids), b(ids))
    x = torch.linspace(-4, 4, 50)
    torch.testing.assert_close(quick_gelu(x), x * torch.sigmoid(1.702 * x))


def test_full_size_vit_l14_text_tower():
    """Stable Diffusion v1.5's text encoder: 123,060,480 parameters, keys and shapes as in transformers."""
    with torch.device("meta"):
        ours = CLIPTextEncoder(CLIPTextConfig())
        hf = transformers.CLIPTextModel(transformers.CLIPTextConfig(
            hidden_size=768, intermediate_size=3072, num_attention_heads=12, projection_dim=768))
    assert count_parameters(ours).total == 123_060_480
    assert sum(p.numel() for p in hf.parameters()) == 123_060_480
    theirs = {k: tuple(v.shape) for k, v in hf.state_dict().items() if not k.endswith("position_ids")}
    mapped = {hf_key(k): tuple(v.shape) for k, v in ours.state_dict().items()}
    assert mapped == theirs
    load_hf_state_dict(ours, hf.state_dict())  # strict: succeeds with matching names/shapes


def test_state_dict_mismatch_is_reported():
    hf = _hf_tiny("quick_gelu")
    sd = dict(hf.state_dict())
    sd.pop("final_layer_norm.bias")  # transformers' name for our final_ln.bias
    with pytest.raises(KeyError, match=r"missing keys \[final_ln.bias\]"):
        load_hf_state_dict(CLIPTextEncoder(CLIPTextConfig(99, 32, 2, 4, 16, 37)), sd)
    sd = {"text_model." + k: v for k, v in hf.state_dict().items()}  # old-style prefix accepted
    sd["text_model.embeddings.token_embedding.weight"] = torch.zeros(98, 32)
    with pytest.raises(ValueError, match=r"token_embedding.weight: checkpoint \(98, 32\) vs model \(99, 32\)"):
        load_hf_state_dict(CLIPTextEncoder(CLIPTextConfig(99, 32, 2, 4, 16, 37)), sd)
    sd = dict(hf.state_dict(), extra=torch.zeros(1))  # a key we do not know keeps its own name
    with pytest.raises(KeyError, match=r"unexpected keys \[extra\]"):
        load_hf_state_dict(CLIPTextEncoder(CLIPTextConfig(99, 32, 2, 4, 16, 37)), sd)


def test_bad_inputs():
    model = CLIPTextEncoder(CLIPTextConfig(vocab_size=20, width=16, n_layers=1, n_heads=2, n_positions=8,
                                           mlp_width=32))
    with pytest.raises(ValueError, match="longer than the context"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids must be in"):
        model(torch.full((1, 4), 20))
    with pytest.raises(TypeError, match="integer tensor"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="activation"):
        CLIPTextConfig(activation="relu")
    with pytest.raises(ValueError, match="divisible"):
        CLIPTextConfig(width=10, n_heads=3)


def test_causal_later_tokens_do_not_change_earlier_states():
    model = CLIPTextEncoder(CLIPTextConfig(vocab_size=20, width=16, n_layers=2, n_heads=2, n_positions=8,
                                           mlp_width=32))
    ids = torch.randint(0, 20, (1, 8))
    ids2 = ids.clone()
    ids2[0, 5:] = (ids2[0, 5:] + 1) % 20
    torch.testing.assert_close(model(ids)[:, :5], model(ids2)[:, :5])


def test_word_tokenizer():
    tok = shapes_tokenizer()
    ids = tok(["a red circle", "a big blue triangle on the left"])
    assert ids.shape == (2, tok.max_length)
    assert ids[0, 0] == tok.bos_id and ids[0, 4] == tok.eos_id and (ids[0, 5:] == tok.pad_id).all()
    assert tok.convert_ids_to_tokens(ids[0, :5]) == ["<bos>", "a", "red", "circle", "<eos>"]
    assert tok.decode(ids[1]) == "a big blue triangle on the left"
    assert tok("").tolist()[0][:2] == [tok.bos_id, tok.eos_id]  # the unconditional prompt
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok("a pink circle")
    with pytest.raises(ValueError, match="at most"):
        WordTokenizer(["a"], max_length=4)("a a a")
    assert WordTokenizer.from_dict(tok.to_dict()).vocab == tok.vocab


def test_real_clip_tokenizer_from_a_local_folder(tmp_path):
    """The byte-pair CLIPTokenizer loads offline from a folder (a tiny vocabulary written here)."""
    from course_lib.clip import load_clip_tokenizer

    vocab = ["!", "a", "c", "d", "e", "i", "l", "r", "a</w>", "c</w>", "d</w>", "e</w>", "l</w>", "r</w>",
             "i</w>", "re", "red</w>", "ci", "cir", "circ", "le</w>", "circle</w>",
             "<|startoftext|>", "<|endoftext|>"]
    (tmp_path / "vocab.json").write_text(__import__("json").dumps({t: i for i, t in enumerate(vocab)}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\nr e\nre d</w>\nc i\nci r\ncir c\nl e</w>\ncirc le</w>\n")
    tok = load_clip_tokenizer(str(tmp_path))
    assert tok.convert_ids_to_tokens(tok("a red")["input_ids"]) == \
        ["<|startoftext|>", "a</w>", "red</w>", "<|endoftext|>"]


def test_low_level_modules_import_no_zoo_and_no_datasets():
    """Layering runs one way: the zoo depends on clip/tokenizer/gpt2, never the reverse."""
    import subprocess
    import sys

    code = ("import sys, course_lib.clip, course_lib.tokenizer, course_lib.gpt2, course_lib.transformer; "
            "print(sorted(m for m in sys.modules if m.startswith(('course_lib.zoo', 'course_lib.data'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
