"""course-txt2img / course-img2img / course-inpaint end to end on a tiny offline shapes model,
and their one-line errors for bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from course_lib.cli import img2img, inpaint, txt2img

# a shapes-ldm recipe that trains in seconds (zoo.load("shapes-ldm") with these overrides)
TINY_LDM = {"vae": {"n_images": 64, "steps": 3, "batch_size": 8, "block_out_channels": [8, 8, 16], "decoder_steps": 3},
            "n_images": 64, "steps": 3, "batch_size": 8, "unet_channels": [16, 16], "text_width": 16,
            "text_layers": 1, "text_heads": 2}
ZOO = [arg for k, v in TINY_LDM.items() for arg in ("--zoo-option", f"{k}={json.dumps(v)}")]
FAST = ["--steps", "2", "--device", "cpu", "--no-progress", *ZOO]
TOOLS = {"course-txt2img": txt2img, "course-img2img": img2img, "course-inpaint": inpaint}


@pytest.fixture(scope="module", autouse=True)
def _zoo_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:  # one tiny model for the whole module, in a private cache
        mp.setenv("COURSE_LIB_CACHE", str(tmp_path_factory.mktemp("zoo")))
        yield


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """A 32x32 photo-like image, a mask with a white square, and ill-fitting ones."""
    root = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / "image.png")
    Image.fromarray(rng.integers(0, 255, (30, 32, 3), dtype=np.uint8)).save(root / "odd.png")  # 32 wide, 30 high
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[8:24, 8:24] = 255
    Image.fromarray(mask).save(root / "mask.png")
    Image.fromarray(mask[:16, :16]).save(root / "small_mask.png")
    (root / "not_an_image.png").write_text("hello")
    return root


def _pixels(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def test_txt2img_writes_a_png_per_prompt_and_its_settings(tmp_path, capsys):
    out = tmp_path / "out"
    rc = txt2img.main(["--prompt", "a red circle", "--prompt", "a big blue square", "--seed", "3",
                       "--out", str(out), *FAST])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["a-big-blue-square-seed4.json", "a-big-blue-square-seed4.png",
                                                     "a-red-circle-seed3.json", "a-red-circle-seed3.png"]
    assert _pixels(out / "a-red-circle-seed3.png").shape == (32, 32, 3)  # the model's size
    settings = json.loads((out / "a-red-circle-seed3.json").read_text())
    assert settings["prompt"] == "a red circle" and settings["seed"] == 3
    assert settings["guidance_scale"] == 5.0 and settings["n_steps"] == 2  # the zoo model's default guidance
    assert settings["checkpoint"] == "zoo:shapes-ldm" and settings["height"] == settings["width"] == 32
    assert "wrote 2 image(s)" in capsys.readouterr().out


def test_txt2img_is_repeatable_and_takes_a_size(tmp_path):
    args = ["--prompt", "a red circle", "--out", str(tmp_path), *FAST]
    assert txt2img.main(args) == 0
    first = _pixels(tmp_path / "a-red-circle-seed0.png")
    assert txt2img.main([*args, "--overwrite"]) == 0
    assert np.array_equal(_pixels(tmp_path / "a-red-circle-seed0.png"), first)  # same prompt and seed
    assert txt2img.main([*args, "--overwrite", "--seed", "1"]) == 0
    assert not np.array_equal(_pixels(tmp_path / "a-red-circle-seed1.png"), first)
    assert txt2img.main([*args, "--overwrite", "--height", "16", "--width", "24"]) == 0
    assert _pixels(tmp_path / "a-red-circle-seed0.png").shape == (16, 24, 3)


def test_txt2img_with_the_ddpm_sampler(tmp_path):
    assert txt2img.main(["--prompt", "a red circle", "--sampler", "ddpm", "--out", str(tmp_path), *FAST]) == 0
    assert json.loads((tmp_path / "a-red-circle-seed0.json").read_text())["sampler"] == "ddpm"


def test_prompts_from_a_file(tmp_path):
    (tmp_path / "prompts.txt").write_text("a red circle\n\na green triangle\n")
    assert txt2img.main(["--prompt-file", str(tmp_path / "prompts.txt"), "--out", str(tmp_path / "o"),
                         "--batch-size", "2", *FAST]) == 0
    assert sorted(p.name for p in (tmp_path / "o").glob("*.png")) == ["a-green-triangle-seed1.png",
                                                                      "a-red-circle-seed0.png"]


def test_img2img_writes_the_image_and_its_settings(tmp_path, pictures):
    image = str(pictures / "image.png")
    assert img2img.main(["--image", image, "--prompt", "a red circle", "--strength", "0.5",
                         "--out", str(tmp_path), *FAST]) == 0
    out = _pixels(tmp_path / "a-red-circle-seed0.png")
    assert out.shape == (32, 32, 3)
    settings = json.loads((tmp_path / "a-red-circle-seed0.json").read_text())
    assert settings["strength"] == 0.5 and settings["image"] == image
    assert img2img.main(["--image", image, "--prompt", "a red circle", "--height", "16", "--width", "16",
                         "--out", str(tmp_path / "small"), *FAST]) == 0
    assert _pixels(tmp_path / "small" / "a-red-circle-seed0.png").shape == (16, 16, 3)


@pytest.mark.parametrize("method", ["blend", "repaint"])
def test_inpaint_with_each_method(tmp_path, pictures, method):
    assert inpaint.main(["--image", str(pictures / "image.png"), "--mask", str(pictures / "mask.png"),
                         "--prompt", "a red circle", "--method", method, "--out", str(tmp_path), *FAST]) == 0
    assert _pixels(tmp_path / "a-red-circle-seed0.png").shape == (32, 32, 3)
    assert json.loads((tmp_path / "a-red-circle-seed0.json").read_text())["method"] == method


def _error(tool, args, capsys) -> str:
    """Run a tool that must fail; return its one line of error."""
    rc = TOOLS[tool].main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0
    assert len(err) == 1 and err[0].startswith(f"{tool}: error: "), err
    return err[0]


def _exit_error(tool, args, capsys) -> str:
    """The same for flags argparse rejects (it exits with status 2)."""
    with pytest.raises(SystemExit) as exc:
        TOOLS[tool].main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith(f"{tool}: error: "), err
    return err[0]


def test_bad_input_ends_with_one_line(tmp_path, pictures, capsys):
    out = ["--out", str(tmp_path)]
    p = ["--prompt", "a red circle"]
    assert "--image" in _error("course-img2img", ["--image", str(tmp_path / "missing.png"), *p, *out, *FAST],
                               capsys)
    assert "cannot identify image file" in _error(
        "course-img2img", ["--image", str(pictures / "not_an_image.png"), *p, *out, *FAST], capsys)
    assert "multiples of 4" in _error("course-img2img", ["--image", str(pictures / "odd.png"), *p, *out, *FAST],
                                      capsys)
    assert "multiple of 4" in _error("course-txt2img", [*p, "--height", "30", *out, *FAST], capsys)
    assert "16x16 but the image is 32x32" in _error(
        "course-inpaint", ["--image", str(pictures / "image.png"), "--mask", str(pictures / "small_mask.png"),
                           *p, *out, *FAST], capsys)
    assert "at most 8 fit" in _error("course-txt2img", ["--prompt", "a " * 12 + "circle", *out, *FAST], capsys)
    assert "not in the vocabulary" in _error("course-txt2img", ["--prompt", "a purple dog", *out, *FAST], capsys)
    assert "strength must be in (0, 1]" in _error(
        "course-img2img", ["--image", str(pictures / "image.png"), "--strength", "1.5", *p, *out, *FAST], capsys)
    assert "no prompt" in _error("course-txt2img", [*out, *FAST], capsys)
    assert "invalid choice: 'euler'" in _exit_error("course-txt2img", [*p, "--sampler", "euler", *FAST], capsys)
    assert "the following arguments are required: --mask" in _exit_error(
        "course-inpaint", ["--image", str(pictures / "image.png"), *p], capsys)
    assert "zoo:shapes-ldm" in _error("course-txt2img", [*p, "--checkpoint", "zoo:tiny-gpt", *out], capsys)
    assert not list(tmp_path.iterdir())  # nothing was written


def test_existing_files_are_kept_without_overwrite(tmp_path, capsys):
    args = ["--prompt", "a red circle", "--out", str(tmp_path), *FAST]
    (tmp_path / "a-red-circle-seed0.png").write_bytes(b"mine")
    assert "pass --overwrite" in _error("course-txt2img", args, capsys)
    assert (tmp_path / "a-red-circle-seed0.png").read_bytes() == b"mine"
    assert txt2img.main([*args, "--overwrite"]) == 0
    assert _pixels(tmp_path / "a-red-circle-seed0.png").shape == (32, 32, 3)


def test_a_local_diffusers_folder(tmp_path):
    """--checkpoint with a Stable Diffusion folder in diffusers' layout (tiny random weights), as for real SD."""
    pytest.importorskip("diffusers")
    from tiny_sd import save_tiny_sd

    folder = save_tiny_sd(tmp_path / "sd")
    assert txt2img.main(["--checkpoint", str(folder), "--prompt", "a red circle", "--steps", "2",
                         "--device", "cpu", "--no-progress", "--out", str(tmp_path / "out")]) == 0
    assert _pixels(tmp_path / "out" / "a-red-circle-seed0.png").shape == (16, 16, 3)  # sample_size 8 × factor 2
    assert json.loads((tmp_path / "out" / "a-red-circle-seed0.json").read_text())["guidance_scale"] == 7.5


def test_help_and_installed_scripts(capsys):
    for tool, module in TOOLS.items():
        with pytest.raises(SystemExit) as exc:
            module.main(["--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        for flag in ("--prompt", "--prompt-file", "--checkpoint", "--sampler", "--steps", "--eta", "--guidance",
                     "--height", "--width", "--batch-size", "--seed", "--out", "--device", "--dtype", "--overwrite"):
            assert flag in text, (tool, flag)
    bin_dir = Path(sys.executable).parent
    scripts = ["course-txt2img", "course-img2img", "course-inpaint", "course-generate", "course-finetune-lora"]
    assert all((bin_dir / s).exists() for s in scripts), "reinstall the package: pip install -e ."
    done = subprocess.run([str(bin_dir / "course-inpaint"), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--mask" in done.stdout and "--method" in done.stdout
