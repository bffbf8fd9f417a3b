"""Sample quality of the course's generative models, judged against real data.

Prints one JSON object (and writes it to benchmarks/results/quality.json):

* ``digits``: ``zoo.load("digits-ddpm")`` draws 500 digits (50 per class, guidance
  w = 3, 50 DDIM steps); an RBF SVM fitted on scikit-learn's real digits names
  each one. Pass: at least 95% are the digit that was asked for.
* ``shapes``: ``benchmarks/quality_shapes.py`` (its ``run() -> dict``): the offline
  Stable Diffusion (``shapes-vae`` + ``shapes-ldm``) judged by the strict rule-based
  judge of ``benchmarks/shapes_judge.py`` and, beside it, a CNN: reconstructions,
  text-to-image (colour, kind, convexity, position, size), image-to-image strength
  curve and inpainting (blend vs RePaint), each with its bar and ``pass``, and the
  training times of both models.

Run: ``.venv/bin/python benchmarks/quality.py`` (trains the zoo models on a cold cache);
``--only digits`` (or ``--only shapes``) runs one section.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def digits(n_per_class: int = 50, guidance_scale: float = 3.0, n_steps: int = 50, seed: int = 0) -> dict:
    from course_lib.zoo import load
    from course_lib.zoo.digits_ddpm import classify, digit_classifier

    start = time.perf_counter()
    model = load("digits-ddpm")
    load_seconds = time.perf_counter() - start
    svm, held_out = digit_classifier(train_fraction=0.8)  # how good is the judge itself?
    svm, _ = digit_classifier()  # the judge: fitted on all real digits
    labels = torch.arange(10).repeat_interleave(n_per_class)
    start = time.perf_counter()
    images = model.sample(labels, guidance_scale=guidance_scale, n_steps=n_steps,
                          generator=torch.Generator().manual_seed(seed))
    sample_seconds = time.perf_counter() - start
    predicted = classify(svm, images)
    per_class = [(predicted[labels == c] == c).float().mean().item() for c in range(10)]
    accuracy = (predicted == labels).float().mean().item()
    return {
        "n_samples": len(labels), "guidance_scale": guidance_scale, "ddim_steps": n_steps,
        "accuracy": round(accuracy, 4), "per_class_accuracy": [round(a, 3) for a in per_class],
        "judge": "RBF SVM on the real digits", "judge_held_out_accuracy": round(held_out, 4),
        "train_seconds": round(model.train_seconds, 1), "train_steps": model.config.steps,
        "load_seconds": round(load_seconds, 1), "sample_seconds": round(sample_seconds, 1),
        "threshold": 0.95, "pass": accuracy >= 0.95,
    }


def shapes() -> dict | None:
    """The ``shapes`` section from benchmarks/quality_shapes.py, if that file exists."""
    path = HERE / "quality_shapes.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("quality_shapes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.run()


def main(only: str | None = None) -> dict:
    results = {"torch_threads": torch.get_num_threads()}
    if only in (None, "digits"):
        results["digits"] = digits()
    if only in (None, "shapes"):
        extra = shapes()
        if extra is not None:
            results["shapes"] = extra
    text = json.dumps(results, indent=1)
    print(text)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "quality.json").write_text(text + "\n")
    return results


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("digits", "shapes"), help="run a single section")
    main(parser.parse_args().only)
