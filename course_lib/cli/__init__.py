"""The course's command-line tools, installed with the package as console scripts.

=====================  ==========================================================
``course-txt2img``      images from prompts (Stable Diffusion, or the offline shapes model)
``course-img2img``      an image redrawn after a prompt (SDEdit)
``course-inpaint``      the white part of a mask repainted after a prompt
``course-generate``     text from GPT-2 (or the offline tiny GPT), with any sampler
``course-finetune-lora`` LoRA fine-tuning of GPT-2 on text, on one CPU or many GPUs
=====================  ==========================================================

Each is a thin layer over the library the notebooks use; ``common`` holds the
flags every tool shares, ``models`` turns ``--model`` / ``--checkpoint`` into a
model, ``images`` is what the three image tools share. ``<tool> --help`` lists
the flags.
"""
