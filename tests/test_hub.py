"""Hub ids resolve from the local Hugging Face cache, as transformers/diffusers resolve them.

The cache is the local hub of tests/fixtures/make_local_hub.py: tiny random models in
the hub's layout under the real repo ids. Loaded by id, the course's models must give
what transformers / diffusers give when they load the same id.
"""

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

from course_lib import hub
from fixtures.make_local_hub import CLIP_REPO, GPT2_REPO, REPOS, SD1_REPO, SD2_REPO, build

PROMPTS = ["a red circle", "a photograph of an astronaut riding a horse"]


@pytest.fixture
def cache(local_hub, hf_cache):
    return hf_cache(local_hub)


def _snapshot(cache, repo):
    storage = Path(cache) / ("models--" + repo.replace("/", "--"))
    return storage / "snapshots" / (storage / "refs" / "main").read_text()


# ----------------------------------------------------------------------------- resolve_repo


@pytest.mark.parametrize("repo", REPOS)
def test_hub_id_resolves_to_the_cached_snapshot(cache, repo):
    from huggingface_hub import snapshot_download

    folder = hub.resolve_repo(repo, hub.repo_files(repo))
    assert folder == _snapshot(cache, repo)
    assert folder == Path(snapshot_download(repo, local_files_only=True))  # huggingface_hub's own answer
    assert hub.is_cached(repo, hub.repo_files(repo))


def test_a_folder_is_returned_as_it_is(tmp_path, cache):
    assert hub.resolve_repo(str(tmp_path)) == tmp_path
    assert hub.resolve_repo(tmp_path) == tmp_path


def test_missing_repo_names_the_repo_and_the_cache(cache):
    with pytest.raises(FileNotFoundError) as err:
        hub.resolve_repo("someone/not-downloaded", ["model.safetensors"])
    msg = str(err.value)
    assert "'someone/not-downloaded'" in msg and str(cache) in msg and "HF_HUB_OFFLINE=1" in msg
    assert not hub.is_cached("someone/not-downloaded")


def test_a_cache_without_the_weights_does_not_count(tmp_path, hf_cache):
    from fixtures.make_local_hub import write_repo

    hf_cache(tmp_path)
    write_repo(tmp_path, "gpt2", {"config.json": b"{}"})  # e.g. left by AutoConfig.from_pretrained("gpt2")
    assert hub.is_cached("gpt2") and not hub.is_cached("gpt2", hub.GPT2_FILES)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        hub.resolve_repo("gpt2", hub.GPT2_FILES)


def test_missing_path_is_not_taken_for_a_hub_id(cache, tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a local folder, nor a hub id"):
        hub.resolve_repo(str(tmp_path / "no" / "such" / "folder"))


def test_bad_arguments_are_refused(cache):
    with pytest.raises(TypeError, match="path_or_repo must be a str"):
        hub.resolve_repo(3)
    with pytest.raises(TypeError, match="allow_patterns must be a list"):
        hub.resolve_repo("gpt2", "config.json")


def test_online_and_not_cached_downloads_with_the_patterns(tmp_path, hf_cache, monkeypatch):
    """With the hub reachable, an uncached id goes to snapshot_download with the allow patterns."""
    import huggingface_hub

    from course_lib import env

    hf_cache(tmp_path)
    calls = []

    def fake_download(repo_id, allow_patterns=None, local_files_only=False, **kwargs):
        if local_files_only:
            raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
        calls.append((repo_id, allow_patterns))
        return str(tmp_path / "downloaded")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    monkeypatch.setattr(env, "hub_reachable", lambda timeout=2.0: True)
    assert hub.resolve_repo("gpt2", hub.GPT2_FILES) == tmp_path / "downloaded"
    assert calls == [("gpt2", hub.GPT2_FILES)]


# ----------------------------------------------------------------------------- the fixture itself


def test_fixture_is_deterministic(local_hub, tmp_path):
    again = build(tmp_path / "again")

    def digest(folder):
        files = sorted(p for p in Path(folder).rglob("*") if p.is_file())
        return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}

    for repo, snapshot in again.items():
        assert snapshot.name == _snapshot(local_hub, repo).name  # same commit hash
        assert digest(snapshot) == digest(_snapshot(local_hub, repo))


def test_fixture_tokenizers_are_real_bpe(cache):
    from transformers import AutoTokenizer, CLIPTokenizer, GPT2TokenizerFast

    gpt = AutoTokenizer.from_pretrained(GPT2_REPO)
    assert isinstance(gpt, GPT2TokenizerFast)
    text = "The meaning of life is, def f(x): return x ** 2 — ünïcode"
    ids = gpt(text)["input_ids"]
    assert gpt.decode(ids) == text  # byte-level: any text round-trips
    assert len(ids) < len(text.encode()) / 2  # merges learnt on English prose compress it
    assert gpt.eos_token == "<|endoftext|>" and gpt.eos_token_id == len(gpt) - 1
    clip = CLIPTokenizer.from_pretrained(CLIP_REPO)
    ids = clip("A Photograph of an Astronaut")["input_ids"]
    assert ids[0] == clip.bos_token_id and ids[-1] == clip.eos_token_id
    assert clip.decode(ids[1:-1]) == "a photograph of an astronaut"  # lower-cased, words end with </w>
    assert CLIPTokenizer.from_pretrained(SD2_REPO, subfolder="tokenizer").pad_token == "!"


# ----------------------------------------------------------------------------- loading by hub id


def test_gpt2_by_hub_id_matches_transformers(cache):
    from transformers import GPT2LMHeadModel

    from course_lib import gpt2

    ours, tokenizer = gpt2.from_pretrained("gpt2")
    ref = GPT2LMHeadModel.from_pretrained("gpt2").eval()
    ids = tokenizer(["The meaning of life is", "Attention is all you need"], padding=False)["input_ids"]
    ids = torch.tensor([ids[0][:5], ids[1][:5]])
    with torch.no_grad():
        logits = ours(ids)
        torch.testing.assert_close(logits, ref(ids).logits, atol=1e-4, rtol=1e-4)
    assert logits.std() > 0.1  # random weights with a real spread: a wrong tensor would show


def test_gpt2_from_pretrained_raises_when_missing(tmp_path, hf_cache):
    from course_lib import gpt2

    hf_cache(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"'gpt2' is not a local folder and not in the Hugging Face cache"):
        gpt2.from_pretrained("gpt2")


def _same_latents_as_diffusers(repo):
    import diffusers

    from course_lib.latent_diffusion import load_stable_diffusion

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(repo)
    pipe.scheduler = diffusers.DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    ours = load_stable_diffusion(repo, device="cpu")
    side = pipe.unet.config.sample_size
    noise = torch.randn(2, 4, side, side, generator=torch.Generator().manual_seed(3))
    ref = pipe(PROMPTS, num_inference_steps=6, guidance_scale=7.5, eta=0.0, latents=noise.clone(),
               output_type="latent").images
    out = ours.text_to_image(PROMPTS, guidance_scale=7.5, n_steps=6, eta=0.0, latents=noise.clone(),
                             output_type="latent")
    assert not torch.allclose(ref, noise, atol=1e-2)  # the pipeline really did something
    torch.testing.assert_close(out, ref, atol=1e-3, rtol=1e-3)


def test_sd1_by_hub_id_matches_diffusers_pipeline(cache):
    config = json.loads((_snapshot(cache, SD1_REPO) / "scheduler" / "scheduler_config.json").read_text())
    assert config.get("prediction_type", "epsilon") == "epsilon"
    _same_latents_as_diffusers(SD1_REPO)


def test_sd2_v_prediction_by_hub_id_matches_diffusers_pipeline(cache):
    config = json.loads((_snapshot(cache, SD2_REPO) / "scheduler" / "scheduler_config.json").read_text())
    assert config["prediction_type"] == "v_prediction"
    _same_latents_as_diffusers(SD2_REPO)


def test_stable_diffusion_missing_names_the_repo(tmp_path, hf_cache):
    from course_lib.latent_diffusion import load_stable_diffusion

    hf_cache(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"'stable-diffusion-v1-5/stable-diffusion-v1-5'.*" + re.escape(str(tmp_path))):
        load_stable_diffusion(SD1_REPO, device="cpu")


def test_clip_tokenizer_by_hub_id_matches_transformers(cache):
    from transformers import CLIPTokenizer

    from course_lib.clip import load_clip_tokenizer

    for repo, subfolder in ((CLIP_REPO, None), (SD2_REPO, "tokenizer")):
        ours = load_clip_tokenizer(repo, subfolder=subfolder)
        theirs = CLIPTokenizer.from_pretrained(repo, subfolder=subfolder or "")
        text = "a photograph of an astronaut riding a horse"
        assert ours(text)["input_ids"] == theirs(text)["input_ids"]


def test_clip_tokenizer_missing_names_the_repo(tmp_path, hf_cache):
    from course_lib.clip import load_clip_tokenizer

    hf_cache(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="openai/clip-vit-large-patch14"):
        load_clip_tokenizer()
