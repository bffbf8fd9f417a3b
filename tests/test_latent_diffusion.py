"""course_lib.latent_diffusion: equal to diffusers' StableDiffusionPipeline; image-to-image, inpainting, errors."""

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from course_lib.diffusion import SchedulerConfig  # noqa: E402
from course_lib.pipelines import CrossAttentionMaps  # noqa: E402
from course_lib.latent_diffusion import (LatentDiffusion, PipelineResult, erase, load_stable_diffusion,  # noqa: E402
                                         repaint_schedule)
from tiny_sd import SD1_SCHEDULER, SD1_UNET, SD2_SCHEDULER, SD2_UNET, save_tiny_sd  # noqa: E402

PROMPTS = ["a red circle", "red"]


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    """SD 1.x-like: ε-prediction, "leading" timesteps, 1×1-conv projections, fixed head count."""
    return save_tiny_sd(tmp_path_factory.mktemp("tiny_sd1"), SD1_UNET, SD1_SCHEDULER)


@pytest.fixture(scope="module")
def sd2_folder(tmp_path_factory):
    """SD 2.x-like: v-prediction, "trailing" timesteps, upcast attention, linear projections, GELU text encoder."""
    return save_tiny_sd(tmp_path_factory.mktemp("tiny_sd2"), SD2_UNET, SD2_SCHEDULER, hidden_act="gelu")


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


def _diffusers_pipe(folder, sampler):
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(folder), safety_checker=None,
                                                             requires_safety_checker=False)
    if sampler == "ddpm":
        pipe.scheduler = diffusers.DDPMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sd2_like_pipeline_equals_diffusers(sd2_folder, sampler):
    """v-prediction, trailing spacing, upcast attention, linear projections: the same latents as
    diffusers' StableDiffusionPipeline with guidance, from the same generator."""
    ours = load_stable_diffusion(str(sd2_folder), device="cpu")
    assert ours.scheduler.prediction_type == "v_prediction" and ours.scheduler.timestep_spacing == "trailing"
    assert ours.unet.config.upcast_attention and ours.unet.config.use_linear_projection
    pipe = _diffusers_pipe(sd2_folder, sampler)
    ref = pipe(PROMPTS, num_inference_steps=7, guidance_scale=7.5, eta=0.0,
               generator=torch.Generator().manual_seed(3), output_type="latent").images
    got = ours.text_to_image(PROMPTS, guidance_scale=7.5, n_steps=7, eta=0.0, sampler=sampler,
                             generator=torch.Generator().manual_seed(3), output_type="latent")
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    assert (ref - noise).abs().max() > 0.1  # the pipeline really moved away from the noise
    torch.testing.assert_close(got, ref, atol=1e-3, rtol=1e-3)
    # the same weights sampled as if they were ε-prediction models give other latents: the config matters
    as_eps = LatentDiffusion(ours.autoencoder, ours.unet, ours.text_encoder, ours.tokenizer,
                             SchedulerConfig(timestep_spacing="trailing"), image_size=16)
    wrong = as_eps.text_to_image(PROMPTS, guidance_scale=7.5, n_steps=7, sampler=sampler,
                                 generator=torch.Generator().manual_seed(3), output_type="latent")
    assert (wrong - ref).abs().max() > 0.1


def test_sd1_like_pipeline_with_ddpm_equals_diffusers(sd_folder, ldm):
    pipe = _diffusers_pipe(sd_folder, "ddpm")
    ref = pipe(PROMPTS, num_inference_steps=6, guidance_scale=5.0, generator=torch.Generator().manual_seed(4),
               output_type="latent").images
    got = ldm.text_to_image(PROMPTS, guidance_scale=5.0, n_steps=6, sampler="ddpm",
                            generator=torch.Generator().manual_seed(4), output_type="latent")
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


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
    result = ldm.text_to_image(["a red circle"], guidance_scale=3.0, n_steps=3, generator=g, record_attention=True)
    assert result.images.shape == (1, 3, 16, 16) and result.trajectory is None
    att = result.attention
    assert att.maps.shape == (1, 12, 8, 8)
    toks = [t for t, _ in att.for_prompt(0)]
    assert toks == ["a</w>", "red</w>", "circle</w>"]
    # each latent pixel's attention over the tokens sums to one
    torch.testing.assert_close(att.maps.sum(1), torch.ones(1, 8, 8), atol=1e-4, rtol=1e-4)
    assert att.heads is None
    with pytest.raises(ValueError, match="record_attention='heads'"):
        att.for_prompt(0, layer="mid_block.attentions.0.transformer_blocks.0.attn2", head=0)


def test_cross_attention_maps_per_head(ldm):
    """record_attention="heads": every head's map, whose mean over heads and layers is the averaged map."""
    prompts = ["a red circle", "a circle red"]
    result = ldm.text_to_image(prompts, guidance_scale=3.0, n_steps=3, generator=torch.Generator().manual_seed(0),
                               record_attention="heads")
    att, layers = result.attention, list(ldm.unet.cross_attention_layers())
    assert list(att.heads) == layers
    heads = att.heads[layers[0]].shape[1]
    assert all(m.shape == (2, heads, 12, 8, 8) for m in att.heads.values())
    mean = sum(m.mean(1) for m in att.heads.values()) / len(layers)
    torch.testing.assert_close(mean, att.maps, atol=1e-5, rtol=1e-5)
    # the same call without "heads" gives the same averaged maps
    plain = ldm.text_to_image(prompts, guidance_scale=3.0, n_steps=3, generator=torch.Generator().manual_seed(0),
                              record_attention=True).attention
    torch.testing.assert_close(plain.maps, att.maps)
    one = dict(att.for_prompt(1, layer=layers[-1], head=heads - 1))
    assert list(one) == ["a</w>", "circle</w>", "red</w>"]
    assert torch.equal(one["red</w>"], att.heads[layers[-1]][1, heads - 1, 3])  # token 3: after <bos>, a, circle
    with pytest.raises(ValueError, match="head"):
        att.for_prompt(0, layer=layers[0], head=heads)
    with pytest.raises(ValueError, match="layer must be one of"):
        att.for_prompt(0, layer="up", head=0)
    mask = torch.zeros(16, 16)
    mask[:8, :8] = 1
    per_head = att.head_contrasts(1, "red</w>", mask)
    assert len(per_head) == len(layers) * heads
    assert per_head[(layers[0], 1)] == att.contrast(1, "red</w>", mask, layers[0], 1)
    assert len(set(per_head.values())) > 1  # the heads differ


def test_attention_contrast():
    """Mean attention inside the mask / outside, on a hand-made map."""
    m = torch.ones(1, 2, 4, 4)
    m[0, 1, :2, :2] = 3.0  # token 1 looks 3× harder at the top-left quarter
    att = CrossAttentionMaps(m, [["a", "red"]])
    mask = torch.zeros(4, 4)
    mask[:2, :2] = 1
    assert att.contrast(0, "red", mask) == pytest.approx(3.0)
    assert att.contrast(0, "a", mask) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not in prompt"):
        att.contrast(0, "blue", mask)
    with pytest.raises(ValueError, match="inside"):
        att.contrast(0, "red", torch.ones(4, 4))
    with pytest.raises(ValueError, match="record_attention='heads'"):
        att.head_contrasts(0, "red", mask)


def test_image_to_image_and_inpaint_run(ldm):
    image = torch.rand(2, 3, 16, 16) * 2 - 1
    out = ldm.image_to_image(image, "red", strength=0.5, n_steps=4, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 16, 16)
    mask = torch.zeros(16, 16)
    mask[4:10, 4:10] = 1
    for method in ("blend", "repaint"):
        result = ldm.inpaint(image, mask, "a red circle", method=method, n_steps=4, jump_length=2,
                             jump_n_sample=2, generator=torch.Generator().manual_seed(0),
                             output_type="latent", return_trajectory=True)
        z, traj = result.images, result.trajectory
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


# ------------------------------------------------------------ the pipeline contract
def _snapshot(obj) -> dict:
    return {k: (id(v), v if isinstance(v, (int, float, str, bool, type(None))) else None) for k, v in vars(obj).items()}


def test_calls_store_nothing_on_the_object(ldm):
    before = _snapshot(ldm)
    image, mask = torch.rand(1, 3, 16, 16) * 2 - 1, torch.zeros(16, 16)
    mask[4:12, 4:12] = 1
    ldm.text_to_image("red", n_steps=2, record_attention=True, return_trajectory=True)
    ldm.image_to_image(image, "red", strength=0.5, n_steps=2, record_attention=True)
    ldm.inpaint(image, mask, "red", method="repaint", n_steps=2, jump_length=1, jump_n_sample=2,
                return_trajectory=True)
    assert _snapshot(ldm) == before
    assert not any(m.record_weights for m in ldm.unet.cross_attention_layers().values())


def test_a_call_inside_another_calls_callback_changes_nothing(ldm):
    def run(callback=None):
        return ldm.text_to_image(PROMPTS, guidance_scale=3.0, n_steps=4, generator=torch.Generator().manual_seed(7),
                                 callback=callback, output_type="latent", record_attention=True)

    alone = run()
    inner = []

    def nested(info):  # another pipeline call (recording nothing) in the middle of the outer one
        inner.append(ldm.image_to_image(torch.zeros(1, 3, 16, 16), "a circle", strength=0.5, n_steps=2,
                                        generator=torch.Generator().manual_seed(info.i)))

    outer = run(nested)
    assert len(inner) == 4
    torch.testing.assert_close(outer.images, alone.images, atol=0, rtol=0)
    torch.testing.assert_close(outer.attention.maps, alone.attention.maps, atol=0, rtol=0)


def test_plain_calls_return_images_and_asked_for_extras_a_result(ldm):
    g = torch.Generator
    plain = ldm.text_to_image("red", n_steps=3, generator=g().manual_seed(0))
    assert isinstance(plain, torch.Tensor) and plain.shape == (1, 3, 16, 16)
    full = ldm.text_to_image("red", n_steps=3, generator=g().manual_seed(0), return_trajectory=True)
    assert isinstance(full, PipelineResult) and full.attention is None
    assert full.trajectory.x_t.shape == (3, 1, 4, 8, 8)
    torch.testing.assert_close(full.images, plain, atol=0, rtol=0)


@pytest.mark.parametrize("call,kwargs,message", [
    ("text_to_image", dict(output_type="png"), "output_type must be one of 'image', 'latent'"),
    ("text_to_image", dict(sampler="euler"), "sampler must be one of 'ddim', 'ddpm'"),
    ("text_to_image", dict(sampler="ddpm", eta=0.5), "eta=0.5 applies to the DDIM sampler only"),
    ("text_to_image", dict(n_steps=0), r"n_steps must be in \[1, 1000\]"),
    ("text_to_image", dict(n_steps=2.5), "n_steps must be an int"),
    ("text_to_image", dict(eta=-1.0), "eta must be >= 0"),
    ("text_to_image", dict(guidance_scale=-2.0), "guidance_scale must be >= 0"),
    ("text_to_image", dict(generator=3), "generator must be a torch.Generator"),
    ("text_to_image", dict(callback=5), "callback must be callable"),
    ("text_to_image", dict(record_attention="yes"), "record_attention must be a bool or 'heads'"),
    ("text_to_image", dict(latents=torch.zeros(1, 4, 4, 4)), r"latents must be \(1, 4, 8, 8\)"),
    ("text_to_image", dict(height=17), "not divisible by 2"),
    ("image_to_image", dict(strength=1.5), r"strength must be in \(0, 1\]"),
    ("image_to_image", dict(strength=0.01, n_steps=10), "leaves no step to run"),
    ("image_to_image", dict(output_type="pil"), "output_type must be one of"),
    ("inpaint", dict(method="paint"), "method must be one of 'blend', 'repaint'"),
    ("inpaint", dict(method="repaint", jump_length=0), "jump_length must be >= 1"),
    ("inpaint", dict(mask_threshold=0), "threshold must be in"),
    ("inpaint", dict(output_type="png"), "output_type must be one of"),
    ("inpaint", dict(sampler="ddpm", eta=1.0), "applies to the DDIM sampler only"),
])
def test_every_argument_is_checked_before_sampling(ldm, monkeypatch, call, kwargs, message):
    calls = []
    for part in (ldm.unet, ldm.autoencoder, ldm.text_encoder):
        monkeypatch.setattr(part, "forward", lambda *a, **k: calls.append(1))
    image, mask = torch.zeros(1, 3, 16, 16), torch.zeros(16, 16)
    args = {"text_to_image": ("red",), "image_to_image": (image, "red"), "inpaint": (image, mask, "red")}[call]
    with pytest.raises((ValueError, TypeError), match=message):
        getattr(ldm, call)(*args, **kwargs)
    assert calls == []  # nothing was encoded, denoised or decoded


def test_to_moves_and_casts_every_component(sd_folder):
    pipe = load_stable_diffusion(str(sd_folder), device="cpu")
    ref = pipe.text_to_image("red", n_steps=3, generator=torch.Generator().manual_seed(0), output_type="latent")
    assert pipe.to(dtype=torch.float64) is pipe
    for part in (pipe.unet, pipe.autoencoder, pipe.text_encoder):
        assert all(p.dtype == torch.float64 for p in part.parameters())
    out = pipe.text_to_image("red", n_steps=3, generator=torch.Generator().manual_seed(0), output_type="latent")
    assert out.dtype == torch.float32  # latents and sampler maths stay float32
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)  # the same noise, only the precision differs
    assert pipe.to("cpu", torch.float32).dtype == torch.float32
    with pytest.raises(TypeError, match="floating-point torch.dtype"):
        pipe.to(dtype=torch.int8)
    with pytest.raises(TypeError, match="SchedulerConfig"):
        LatentDiffusion(pipe.autoencoder, pipe.unet, pipe.text_encoder, pipe.tokenizer, torch.ones(10))


def test_unsupported_scheduler_config_is_refused_on_load(tmp_path, sd_folder):
    import shutil

    folder = tmp_path / "sd"
    shutil.copytree(sd_folder, folder)
    path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "thresholding": True}))
    with pytest.raises(ValueError, match="scheduler_config.json.*thresholding=True is not supported"):
        load_stable_diffusion(str(folder), device="cpu")
    path.write_text(json.dumps({**config, "prediction_type": "sample"}))
    with pytest.raises(ValueError, match="prediction_type must be one of 'epsilon', 'v_prediction'"):
        load_stable_diffusion(str(folder), device="cpu")


def test_downsample_mask_counts_the_masked_share_of_each_cell():
    from course_lib.latent_diffusion import downsample_mask

    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, :4, :4] = 1  # the whole top-left cell of 4x4 pixels
    mask[0, 0, 4:6, 4:8] = 1  # half of the bottom-right cell
    mask[0, 0, 0, 4] = 1  # one pixel of the top-right cell
    cells = [[1.0, 0.0], [0.0, 1.0]]  # >= half: kept as 1
    assert downsample_mask(mask, 4).tolist() == [[cells]]
    assert downsample_mask(mask, 4, threshold=0.6).tolist() == [[[[1.0, 0.0], [0.0, 0.0]]]]
    assert downsample_mask(mask, 4, threshold=1e-6).tolist() == [[[[1.0, 1.0], [0.0, 1.0]]]]  # any pixel
    with pytest.raises(ValueError, match="not divisible"):
        downsample_mask(torch.zeros(1, 1, 6, 8), 4)
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        downsample_mask(torch.zeros(8, 8), 4)
    with pytest.raises(ValueError, match="threshold"):
        downsample_mask(mask, 4, threshold=1.5)
