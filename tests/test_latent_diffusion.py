"""course_lib.latent_diffusion: equal to diffusers' StableDiffusionPipeline; image-to-image, inpainting, errors."""

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from course_lib.latent_diffusion import LatentDiffusion, erase, load_stable_diffusion, repaint_schedule  # noqa: E402

PROMPTS = ["a red circle", "red"]


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


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    """A tiny random Stable Diffusion pipeline saved with save_pretrained (diffusers layout)."""
    root = tmp_path_factory.mktemp("tiny_sd")
    tokenizer, vocab_size = _tiny_tokenizer(root / "tok_src")
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8)
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=8)
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=12, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=1))
    for i, m in enumerate((unet, vae, text)):
        _randomise(m, seed=i)
    scheduler = diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                        clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = diffusers.StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet,
                                             scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.save_pretrained(root / "sd", safe_serialization=True)
    return root / "sd"


@pytest.fixture(scope="module")
def ldm(sd_folder):
    return load_stable_diffusion(str(sd_folder), device="cpu")


def test_loaded_folder_has_course_modules(ldm):
    from course_lib.autoencoder import Autoencoder
    from course_lib.clip import CLIPTextEncoder
    from course_lib.unet import UNetModel

    assert isinstance(ldm.unet, UNetModel) and isinstance(ldm.autoencoder, Autoencoder)
    assert isinstance(ldm.text_encoder, CLIPTextEncoder)
    assert ldm.factor == 2 and ldm.image_size == 16 and ldm.scaling_factor == pytest.approx(0.18215)


def test_same_latents_as_diffusers_pipeline(sd_folder, ldm):
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(sd_folder), safety_checker=None,
                                                             requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    ref = pipe(PROMPTS, num_inference_steps=6, guidance_scale=7.5, eta=0.0, latents=noise.clone(),
               output_type="latent").images
    ours = ldm.text_to_image(PROMPTS, guidance_scale=7.5, n_steps=6, eta=0.0, latents=noise.clone(),
                             output_type="latent")
    assert ours.shape == (2, 4, 8, 8)
    assert not torch.allclose(ref, noise, atol=1e-2)  # the pipeline really did something
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    # decoding goes through the course autoencoder exactly like the VAE's decode
    ref_img = pipe.vae.decode(ref / pipe.vae.config.scaling_factor).sample
    torch.testing.assert_close(ldm.decode(ours), ref_img, atol=1e-4, rtol=1e-4)


def test_img2img_matches_diffusers(sd_folder, ldm):
    """SDEdit: same encoder mean, same noising to the strength's timestep, same denoising."""
    pipe = diffusers.StableDiffusionImg2ImgPipeline.from_pretrained(str(sd_folder), safety_checker=None,
                                                                    requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    image = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1
    z0 = ldm.encode(image)  # our encoder's posterior mean, scaled
    ref_mean = pipe.vae.encode(image).latent_dist.mean * pipe.vae.config.scaling_factor
    torch.testing.assert_close(z0, ref_mean, atol=1e-4, rtol=1e-4)
    # diffusers takes 4-channel "images" as ready-made latents: start both from the same z0
    ref = pipe(PROMPTS, image=z0.clone(), strength=0.6, num_inference_steps=10, guidance_scale=5.0,
               generator=torch.Generator().manual_seed(5), output_type="latent").images
    ours = ldm.image_to_image(image, PROMPTS, strength=0.6, n_steps=10, guidance_scale=5.0,
                              generator=torch.Generator().manual_seed(5), output_type="latent")
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)


def test_cross_attention_maps_per_token(ldm):
    g = torch.Generator().manual_seed(0)
    ldm.text_to_image(["a red circle"], guidance_scale=3.0, n_steps=3, generator=g, record_attention=True)
    att = ldm.attention
    assert att.maps.shape == (1, 12, 8, 8)
    toks = [t for t, _ in att.for_prompt(0)]
    assert toks == ["a</w>", "red</w>", "circle</w>"]
    # each latent pixel's attention over the tokens sums to one
    torch.testing.assert_close(att.maps.sum(1), torch.ones(1, 8, 8), atol=1e-4, rtol=1e-4)


def test_image_to_image_and_inpaint_run(ldm):
    image = torch.rand(2, 3, 16, 16) * 2 - 1
    out = ldm.image_to_image(image, "red", strength=0.5, n_steps=4, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 16, 16)
    mask = torch.zeros(16, 16)
    mask[4:10, 4:10] = 1
    for method in ("blend", "repaint"):
        z, traj = ldm.inpaint(image, mask, "a red circle", method=method, n_steps=4, jump_length=2,
                              jump_n_sample=2, generator=torch.Generator().manual_seed(0),
                              output_type="latent", return_trajectory=True)
        keep = ldm.latent_mask(mask, image) == 0  # [B, 1, 8, 8]
        assert keep.sum() == 2 * (64 - 9)  # pixels 4..9 cover latent cells 2..4 at least half
        known = ldm.encode(erase(image, mask.expand(2, 1, 16, 16)))
        # outside the mask the final latents are exactly the known ones
        torch.testing.assert_close(z * keep, known * keep)
        assert not torch.allclose(z, known)
    assert len(traj.timesteps) == 4 + 2  # repaint re-ran the steps after its jump


def test_erase_fills_the_mask_with_the_mean_of_the_rest():
    image = torch.rand(2, 3, 8, 8) * 2 - 1
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, 2:5, 2:5] = 1
    mask[1, :, :, :4] = 1
    out = erase(image, mask)
    keep = mask == 0
    torch.testing.assert_close(out[keep.expand_as(out)], image[keep.expand_as(image)])  # kept: untouched
    for b in range(2):
        kept = image[b][:, keep[b, 0]]  # [3, n_kept]
        filled = out[b][:, ~keep[b, 0]]  # [3, n_masked]
        torch.testing.assert_close(filled, kept.mean(1, keepdim=True).expand_as(filled))


def test_inpaint_does_not_see_under_the_mask(ldm):
    a = torch.rand(1, 3, 16, 16) * 2 - 1
    mask = torch.zeros(16, 16)
    mask[4:12, 4:12] = 1
    b = a.clone()
    b[..., 4:12, 4:12] = torch.rand(3, 8, 8)  # other content under the mask only
    outs = [ldm.inpaint(x, mask, "a red circle", n_steps=3, generator=torch.Generator().manual_seed(0),
                        output_type="latent") for x in (a, b)]
    torch.testing.assert_close(outs[0], outs[1])
    assert not torch.allclose(ldm.encode(a), ldm.encode(b))  # without erasing, the latents would differ


def test_repaint_schedule():
    assert repaint_schedule(4, 2, 1) == [0, 1, 2, 3, 4]
    assert repaint_schedule(4, 2, 2) == [0, 1, 2, 0, 1, 2, 3, 4]
    assert repaint_schedule(6, 2, 3) == [0, 1, 2, 0, 1, 2, 0, 1, 2, 3, 4, 2, 3, 4, 2, 3, 4, 5, 6]
    with pytest.raises(ValueError, match="jump_length"):
        repaint_schedule(4, 0, 2)


def test_bad_inputs(ldm):
    image = torch.zeros(1, 3, 16, 16)
    with pytest.raises(ValueError, match="not divisible by 2"):
        ldm.image_to_image(torch.zeros(1, 3, 15, 16), "red", strength=0.5)
    with pytest.raises(ValueError, match="not divisible by 2"):
        ldm.text_to_image(["red"], height=17, n_steps=2)
    with pytest.raises(ValueError, match="mask shape"):
        ldm.inpaint(image, torch.zeros(1, 1, 8, 8), "red", n_steps=2)
    for strength in (0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"strength must be in \(0, 1\]"):
            ldm.image_to_image(image, "red", strength=strength, n_steps=2)
    with pytest.raises(ValueError, match="prompt list is empty"):
        ldm.text_to_image([], n_steps=2)
    with pytest.raises(ValueError, match="threshold"):
        ldm.latent_mask(torch.zeros(16, 16), image, threshold=0)
    with pytest.raises(ValueError, match=r"mask values must be in \[0, 1\]"):
        ldm.inpaint(image, torch.full((16, 16), 2.0), "red", n_steps=2)
    with pytest.raises(ValueError, match="method"):
        ldm.inpaint(image, torch.zeros(16, 16), "red", method="paint")
    with pytest.raises(ValueError, match="longer than"):
        ldm.text_to_image(["red " * 20], n_steps=2)
    with pytest.raises(TypeError, match="prompt"):
        ldm.text_to_image([3], n_steps=2)


def test_loading_errors(tmp_path, ldm):
    with pytest.raises(FileNotFoundError, match="missing"):
        load_stable_diffusion(str(tmp_path), device="cpu")
    with pytest.raises(FileNotFoundError, match="'nobody/no-such-model' is not a local folder and not in the Hugging"):
        load_stable_diffusion("nobody/no-such-model", device="cpu")  # HF_HUB_OFFLINE=1 and not cached
