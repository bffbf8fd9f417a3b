"""Finding a model repository: a local folder, the Hugging Face cache, or the hub.

``resolve_repo(path_or_repo, allow_patterns)`` returns a local folder that holds
the files of a model repository in the hub's layout, the way
``transformers``/``diffusers``' ``from_pretrained`` find them:

* a path to an existing folder is returned as it is;
* a hub id (``"gpt2"``, ``"stable-diffusion-v1-5/stable-diffusion-v1-5"``) is
  looked up in the local Hugging Face cache — ``HF_HUB_CACHE``, by default
  ``$HF_HOME/hub`` = ``~/.cache/huggingface/hub``, where a download of revision
  "main" lives in ``models--org--name/snapshots/<commit>/`` — with
  ``huggingface_hub``'s own lookup, so it works offline (``HF_HUB_OFFLINE=1``);
* a hub id that is not cached (or cached without some of the files asked for)
  is downloaded when the hub is reachable.

Otherwise ``FileNotFoundError`` names the repository, the files looked for and the
cache folder searched. ``is_cached(repo, allow_patterns)`` answers the same
question without downloading or raising (``course_lib.env.world`` uses it).

The files a repository must hold are named by ``allow_patterns`` (shell-style, on
paths inside the repository): each pattern must match at least one cached file,
so a cache holding only ``config.json`` does not count as the model.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

__all__ = ["resolve_repo", "is_cached", "cached_snapshot", "cache_dir", "repo_files",
           "GPT2_FILES", "STABLE_DIFFUSION_FILES", "CLIP_TOKENIZER_FILES"]

# What each kind of repository must hold for the course's loaders (and nothing more is downloaded).
GPT2_FILES = ["config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer.json",
              "tokenizer_config.json"]
STABLE_DIFFUSION_FILES = [
    "model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
    "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/*.json",
    "unet/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/model.safetensors"]
CLIP_TOKENIZER_FILES = ["vocab.json", "merges.txt", "tokenizer_config.json"]

# The repositories the notebooks load, and the files each needs.
_KNOWN = {
    "gpt2": GPT2_FILES,
    "stable-diffusion-v1-5/stable-diffusion-v1-5": STABLE_DIFFUSION_FILES,
    "stabilityai/stable-diffusion-2-1": STABLE_DIFFUSION_FILES,
    "openai/clip-vit-large-patch14": CLIP_TOKENIZER_FILES,
}


def repo_files(repo_id: str) -> list[str] | None:
    """The file patterns the course needs from a repository it knows (``None`` for any other)."""
    if repo_id in _KNOWN:
        return list(_KNOWN[repo_id])
    if repo_id.split("/")[-1].startswith(("gpt2", "distilgpt2")):
        return list(GPT2_FILES)
    if "stable-diffusion" in repo_id:
        return list(STABLE_DIFFUSION_FILES)
    return None


def cache_dir() -> Path:
    """The Hugging Face cache folder that ``from_pretrained`` uses now (``HF_HUB_CACHE``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE).expanduser()


def _check_repo(path_or_repo) -> str:
    if not isinstance(path_or_repo, (str, Path)):
        raise TypeError(f"path_or_repo must be a str (a hub id or a folder) or a path, "
                        f"got {type(path_or_repo).__name__}")
    return str(path_or_repo)


def _is_repo_id(name: str) -> bool:
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except ValueError:
        return False
    return True


def _missing(folder: Path, allow_patterns: list[str] | None) -> list[str]:
    """The patterns that match no file under ``folder``."""
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    return [pat for pat in allow_patterns or [] if not fnmatch.filter(files, pat)]


def cached_snapshot(repo_id: str, allow_patterns: list[str] | None = None) -> Path | None:
    """The cached snapshot of ``repo_id`` at revision "main" holding every pattern, or ``None``."""
    from huggingface_hub import snapshot_download

    if not _is_repo_id(_check_repo(repo_id)):
        return None
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=allow_patterns, local_files_only=True))
    except OSError:  # not cached, or known to be incomplete (LocalEntryNotFoundError is a FileNotFoundError)
        return None
    return None if _missing(folder, allow_patterns) else folder


def is_cached(repo_id: str, allow_patterns: list[str] | None = None) -> bool:
    """Whether the Hugging Face cache holds ``repo_id`` with a file for every pattern."""
    return cached_snapshot(repo_id, allow_patterns) is not None


def resolve_repo(path_or_repo, allow_patterns: list[str] | None = None) -> Path:
    """A local folder with the repository's files (see the module docstring)."""
    name = _check_repo(path_or_repo)
    if allow_patterns is not None and (isinstance(allow_patterns, str)
                                       or not all(isinstance(p, str) for p in allow_patterns)):
        raise TypeError(f"allow_patterns must be a list of str patterns, got {allow_patterns!r}")
    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder
    if not _is_repo_id(name):
        raise FileNotFoundError(f"{name!r} is not a local folder, nor a hub id ('name' or 'org/name')")
    snapshot = cached_snapshot(name, allow_patterns)
    if snapshot is not None:
        return snapshot
    from .env import hub_reachable, offline_forced

    if hub_reachable():
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, allow_patterns=allow_patterns))
    why = "HF_HUB_OFFLINE=1" if offline_forced() else "the Hugging Face hub is not reachable"
    wanted = f" with {', '.join(allow_patterns)}" if allow_patterns else ""
    raise FileNotFoundError(
        f"{name!r} is not a local folder and not in the Hugging Face cache at {cache_dir()} "
        f"(looked for its 'main' snapshot{wanted}), and {why}, so it cannot be downloaded. "
        f"Download it once with internet (or point HF_HUB_CACHE / HF_HOME at a cache that has it).")
