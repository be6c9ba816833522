"""Weights files: checkpoints read with ``torch.load(weights_only=True)`` (a checkpoint that would
run code when unpickled is refused), open_clip tags' weights from the Hugging Face hub cache, the
digests that name weights in cache keys, and classifier checkpoints written atomically."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from helpers.config import PoolEntry
from helpers.models.catalogue import (
    CLASSIFIER_FORMAT, MissingWeightsError, ModelError, UnsafeCheckpointError, entry_label, expected_file,
    open_clip_module,
)
from helpers.study import provenance
from helpers.study.provenance import sha256_file

if TYPE_CHECKING:
    from helpers.models.loading import LoadedModel

def hash_parts(*parts: Any) -> str:
    """sha256 of the parts' strings: the weights digests and head keys of this package."""
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (memoised per path, size and modification time;
    :func:`helpers.study.provenance.sha256_file`, shared with the provenance records)."""
    return sha256_file(path)


def unsafe_checkpoint_error(entry: PoolEntry, path: str | os.PathLike, exc: Exception) -> UnsafeCheckpointError:
    """The one refusal of a file that ``torch.load(weights_only=True)`` rejected, with how to re-save it."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UnsafeCheckpointError(
        f"{entry_label(entry)}: refusing to load {path}: it holds Python objects that would run code when "
        f"unpickled (torch.load(weights_only=True) rejected it: {first}). Expected tensors only "
        f"({expected_file(entry)}); re-save it in a session you trust as tensors, e.g. "
        "torch.save(model.state_dict(), path)")


def read_checkpoint(entry: PoolEntry) -> Any:
    """The entry's checkpoint file (``.safetensors`` or ``torch.save``), read with ``weights_only=True``
    and noted as an input of the current job; one clear error when missing, unsafe or unreadable."""
    path = Path(entry.checkpoint)
    provenance.note_file("checkpoint", path)  # an input of the current job
    if not path.is_file():
        raise MissingWeightsError(f"{entry_label(entry)}: checkpoint file {path} not found; "
                                  f"expected {expected_file(entry)}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise ModelError(f"{entry_label(entry)}: cannot read {path} as safetensors: {exc}") from None
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # pre-zip torch.save format
    except pickle.UnpicklingError as exc:
        raise unsafe_checkpoint_error(entry, path, exc) from None
    except Exception as exc:
        raise ModelError(f"{entry_label(entry)}: cannot read {path} ({type(exc).__name__}: {exc}); "
                         f"expected {expected_file(entry)}") from None


def hub_offline() -> bool:
    """Whether the Hugging Face hub is offline (``HF_HUB_OFFLINE``): then nothing is downloaded."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")
    return env or bool(constants.HF_HUB_OFFLINE)


def hub_weights(entry: PoolEntry, hf_cache: str | os.PathLike | None) -> tuple[str, str]:
    """(local file, content digest) of an open_clip tag's weights from the hub cache, downloading
    them only when the hub is not offline; one :class:`MissingWeightsError` otherwise."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import EntryNotFoundError

    oc = open_clip_module(entry.model)
    cfg = oc.get_pretrained_cfg(entry.model, entry.pretrained)
    cache = str(hf_cache) if hf_cache else constants.HF_HUB_CACHE
    if not cfg.get("hf_hub"):
        raise MissingWeightsError(f"{entry_label(entry)}: the tag has no Hugging Face hub repository; download "
                                  f"{cfg.get('url')} and set `checkpoint:` to that file instead of `pretrained:`")
    hub = cfg["hf_hub"]
    if hub.endswith("/"):  # open_clip's convention: a bare repository holds its default file names
        repo = hub[:-1]
        candidates = [oc.constants.HF_SAFE_WEIGHTS_NAME, oc.constants.HF_WEIGHTS_NAME]
    else:
        repo, filename = os.path.split(hub)
        candidates = [filename[:-4] + ".safetensors", filename] if filename.endswith((".bin", ".pth")) else [filename]
    for name in candidates:
        found = huggingface_hub.try_to_load_from_cache(repo, name, cache_dir=cache)
        if isinstance(found, str):
            return found, _blob_digest(found)
    if hub_offline():
        why = "HF_HUB_OFFLINE is set, so nothing is downloaded"
    else:
        why = _hub_unreachable()
    if why is None:
        for name in candidates:
            try:
                path = huggingface_hub.hf_hub_download(repo, name, cache_dir=cache)
                return path, _blob_digest(path)
            except EntryNotFoundError:
                continue  # the repository has the other file name
            except Exception as exc:
                why = f"downloading {name} failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
                break
        else:
            why = "the repository holds none of these files"
    raise MissingWeightsError(
        f"{entry_label(entry)}: its weights come from the Hugging Face hub repository {repo!r} "
        f"(file {' or '.join(candidates)}), which is not in the hub cache {cache}, and {why}. "
        f"Supply them in one of two ways: (1) on a machine with network access run "
        f"`hf download {repo} --cache-dir <folder>` and point `paths.hf_cache` of the profile at that folder "
        f"(a hub cache: models--org--repo/snapshots/...); or (2) place the weights file anywhere and replace "
        f"`pretrained: {entry.pretrained}` by `checkpoint: /path/to/{candidates[-1]}` in this entry of the profile, "
        f"keeping its image_mean/image_std.")


def _hub_unreachable() -> str | None:
    """Why the hub cannot be reached, found within seconds (huggingface_hub retries for about 25 s
    per file first); None when it answers, or when a proxy is set and only a download can tell."""
    import socket
    import urllib.parse

    from huggingface_hub import constants

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urllib.parse.urlparse(constants.ENDPOINT)
    host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        return f"the hub ({host}:{port}) cannot be reached ({exc})"
    return None


def _blob_digest(path: str) -> str:
    # The hub cache stores large files as blobs named by their sha256: reuse it instead of rehashing.
    name = Path(os.path.realpath(path)).name
    return name if re.fullmatch(r"[0-9a-f]{64}", name) else file_sha256(path)


def atomic_torch_save(obj: Any, path: Path, verify: bool = False) -> None:
    """torch.save to a temporary file in the same folder, then os.replace: readers never see a
    partial file. ``verify``: read the file back with weights_only=True before publishing it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        if verify:
            try:
                torch.load(tmp, map_location="cpu", weights_only=True, mmap=True)
            except pickle.UnpicklingError as exc:
                raise ModelError(f"{path}: the checkpoint holds values torch.load(weights_only=True) cannot read "
                                 f"back ({str(exc).splitlines()[0]}); extra fields must be plain data: numbers, "
                                 "strings, lists, dicts, tensors") from None
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_classifier(loaded_model: LoadedModel, path: str | os.PathLike, **extra: Any) -> Path:
    """Write ``loaded_model`` as a classifier checkpoint (``clip-study-classifier/1``), atomically.

    Holds ``format``, ``entry``, ``model``, ``source``, ``arch_kind``, ``encoder`` (state dict),
    ``head`` W, ``bias`` b or None, ``normalize_features``, ``image_mean``, ``image_std``, plus
    ``extra`` (plain data: numbers, strings, lists, dicts, tensors). Pass ``entry="<id>"`` to record
    the id of the entry the file is for (a finetuned model saved from its parent's LoadedModel).
    """
    lm = loaded_model
    core = {
        "format": CLASSIFIER_FORMAT, "entry": lm.entry.id, "model": lm.entry.model, "source": lm.entry.source,
        "arch_kind": lm.arch_kind,
        "encoder": {k: v.detach().cpu() for k, v in lm.encoder.state_dict().items()},
        "head": lm.head.detach().cpu(), "bias": None if lm.bias is None else lm.bias.detach().cpu(),
        "normalize_features": lm.normalize_features,
        "image_mean": list(lm.image_mean), "image_std": list(lm.image_std),
    }
    clash = sorted(set(extra) & (set(core) - {"entry"}))
    if clash:
        raise ValueError(f"save_classifier: extra field(s) {', '.join(clash)} would overwrite the checkpoint's own")
    path = Path(path)
    atomic_torch_save({**core, **extra}, path, verify=True)
    return path

