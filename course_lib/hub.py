"""Finding a model repository: a local folder, the Hugging Face cache, or the hub.

``resolve_repo(path_or_repo, allow_patterns)`` returns a local folder that holds
the files of a model repository in the hub's layout:

* a path to an existing folder is returned as it is;
* a hub id (``"gpt2"``, ``"stable-diffusion-v1-5/stable-diffusion-v1-5"``) is
  looked up in the local Hugging Face cache (``HF_HUB_CACHE`` / ``HF_HOME``), and
  downloaded only when the hub is reachable and the cache lacks it.

A repository that is neither a folder, nor cached, nor downloadable raises
``FileNotFoundError`` naming the repository and the cache folder searched.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["resolve_repo"]


def resolve_repo(path_or_repo: str, allow_patterns: list[str] | None = None) -> Path:
    """A local folder with the repository's files (see the module docstring)."""
    if not isinstance(path_or_repo, (str, Path)):
        raise TypeError(f"path_or_repo must be a str or a path, got {type(path_or_repo).__name__}")
    folder = Path(path_or_repo)
    if folder.is_dir():
        return folder
    from .env import hub_reachable

    if not hub_reachable():
        raise FileNotFoundError(f"{path_or_repo!r} is not a local folder and the Hugging Face hub is not "
                                f"reachable (offline): its weights cannot be downloaded")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(path_or_repo), allow_patterns=allow_patterns))
