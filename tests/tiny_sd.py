"""A tiny random-weight Stable Diffusion pipeline saved in diffusers' layout, offline.

It stands in for a Stable Diffusion checkpoint folder (``unet/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``) at a size a test can afford.
"""

import json
from pathlib import Path

import diffusers
import torch
import transformers


def _tiny_tokenizer(folder):
    """A byte-pair CLIPTokenizer with a vocabulary of a few pieces, written offline."""
    vocab = ["!", "a", "c", "d", "e", "i", "l", "r", "a</w>", "c</w>", "d</w>", "e</w>", "l</w>", "r</w>",
             "i</w>", "re", "red</w>", "ci", "cir", "circ", "le</w>", "circle</w>",
             "<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\nr e\nre d</w>\nc i\nci r\ncir c\nl e</w>\ncirc le</w>\n")
    return transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                                      model_max_length=12), len(vocab)


def _randomise(model, scale=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():  # every parameter, norms included
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return model.eval()


SD1_UNET = dict(attention_head_dim=4)
SD2_UNET = dict(attention_head_dim=(2, 4), use_linear_projection=True, upcast_attention=True)  # heads per level
SD1_SCHEDULER = dict(prediction_type="epsilon", timestep_spacing="leading", steps_offset=1)
SD2_SCHEDULER = dict(prediction_type="v_prediction", timestep_spacing="trailing", steps_offset=1)


def save_tiny_sd(root, unet_kw=None, scheduler_kw=None, hidden_act="quick_gelu") -> Path:
    """A tiny random Stable Diffusion pipeline saved with save_pretrained (diffusers layout); returns its folder.

    Defaults: an SD 1.x-like layout (epsilon, leading spacing); ``SD2_UNET``/``SD2_SCHEDULER``
    give an SD 2.x-like one (v-prediction, trailing spacing, upcast attention, linear projection).
    """
    root = Path(root)
    unet_kw = SD1_UNET if unet_kw is None else unet_kw
    scheduler_kw = SD1_SCHEDULER if scheduler_kw is None else scheduler_kw
    tokenizer, vocab_size = _tiny_tokenizer(root / "tok_src")
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, norm_num_groups=8, **unet_kw)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=8)
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=12, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=1,
        hidden_act=hidden_act))
    for i, m in enumerate((unet, vae, text)):
        _randomise(m, seed=i)
    scheduler = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                        clip_sample=False, set_alpha_to_one=False, **scheduler_kw)
    pipe = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                             scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.save_pretrained(root / "sd", safe_serialization=True)
    return root / "sd"
