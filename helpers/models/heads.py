"""The zero-shot head of Section 2: W_k = tau^-1 * normalise(mean over templates of the normalised
text embeddings of class k), built from a CLIP's own text tower, and its cache under
``cache_dir/heads/`` (keyed by weights, class names, templates and compute dtype)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from helpers.config import PoolEntry
from helpers.models.catalogue import CLASSIFIER_FORMAT, ZERO_SHOT_FAMILIES, ModelError, entry_label, open_clip_module
from helpers.models.precision import autocast, compute_dtype
from helpers.models.weights import atomic_torch_save, hash_parts, read_checkpoint

#: Prompts per text-tower forward when a zero-shot head is built (classes per batch = this // templates).
HEAD_PROMPTS_PER_BATCH = {"cpu": 800, "cuda": 4000}

_HEAD_CACHE_VERSION = "zero-shot-head/1"


class MemoTokenizer:
    """Tokenises through the given tokenizer, remembering each prompt's tokens so that models
    sharing a tokenizer configuration (every CLIP with open_clip's BPE) tokenise the 80,000
    ImageNet prompts once per process (about 5 s on a CPU)."""

    _memo: dict[tuple, torch.Tensor] = {}
    _limit = 400_000

    def __init__(self, tokenizer):
        from open_clip.tokenizer import SimpleTokenizer

        self.tokenizer = tokenizer
        self.key = None
        # Prompts are shared only between SimpleTokenizers that cut and clean alike; their BPE
        # vocabulary is the one open_clip ships (no open_clip config names another bpe_path).
        if type(tokenizer) is SimpleTokenizer and tokenizer.reduction_fn is None:
            self.key = ("bpe", tokenizer.vocab_size, tokenizer.context_length, tokenizer.clean_fn.__name__,
                        tokenizer.sot_token_id, tokenizer.eot_token_id)

    @classmethod
    def forget(cls) -> None:
        """Drop every remembered prompt (a benchmark times tokenising from scratch)."""
        cls._memo.clear()

    def __call__(self, texts: list[str]) -> torch.Tensor:
        if self.key is None:
            return self.tokenizer(texts)
        missing = list(dict.fromkeys(t for t in texts if (self.key, t) not in self._memo))
        if missing:
            if len(self._memo) + len(missing) > self._limit:
                self._memo.clear()
            for t, row in zip(missing, self.tokenizer(missing).to(torch.int32)):
                self._memo[(self.key, t)] = row
        return torch.stack([self._memo[(self.key, t)] for t in texts]).long()


def _template_text(template: str | Callable[[str], str]) -> str:
    return template("{}") if callable(template) else template


def zero_shot_head(clip_model: nn.Module, tokenizer, classnames: Sequence[str],
                   templates: Sequence[str | Callable[[str], str]], device: str | torch.device = "cpu",
                   batch_size: int = 10, precision: str = "fp32", desc: str | None = None) -> torch.Tensor:
    """Zero-shot head W (K x d_H) of Section 2: W_k = tau^-1 * normalise(mean over templates t of
    normalise(f_t(t(class_k)))), with tau^-1 = ``logit_scale.exp()``.

    ``clip_model`` is an open_clip CLIP / CoCa already on ``device``; ``templates`` are callables
    or ``str.format`` strings (open_clip.OPENAI_IMAGENET_TEMPLATES: 80); ``batch_size`` classes are
    encoded per forward pass, under ``precision`` autocast on CUDA (the normalisations and the
    mean run in float32 on the text features). The averaging is open_clip's
    ``build_zero_shot_classifier``; ``desc`` labels the progress bar.
    """
    from tqdm import tqdm  # a plain bar: a notebook widget would pull its JavaScript from a CDN into the book

    oc = open_clip_module()
    # open_clip decides between str.format and calling from the first template only
    templates = [t if callable(t) else t.format for t in templates]
    classnames = list(classnames)
    clip_model.eval()
    # open_clip's own bar has no label: batches of classes go through its builder under a bar
    # that says what is built and where (each class's mean is independent of the batching)
    label = desc or f"zero-shot head: {len(classnames):,} classes x {len(templates)} templates on {device}"
    parts = []
    with torch.no_grad(), autocast(device, precision), \
            tqdm(total=len(classnames), desc=label, unit="class", disable=len(classnames) * len(templates) < 2_000) as bar:
        for i in range(0, len(classnames), batch_size):
            chunk = classnames[i:i + batch_size]
            parts.append(oc.build_zero_shot_classifier(_FloatText(clip_model), MemoTokenizer(tokenizer), chunk,
                                                       templates, num_classes_per_batch=batch_size, device=device,
                                                       use_tqdm=False))
            bar.update(len(chunk))
    directions = torch.cat(parts, dim=1)
    return (clip_model.logit_scale.detach().float().exp() * directions.float().T).float()


class _FloatText:
    """``encode_text`` of a CLIP in float32 output (autocast may give bf16), for open_clip's head
    builder: the per-template normalisation and the mean are then float32."""

    def __init__(self, clip_model: nn.Module):
        self._m = clip_model

    def encode_text(self, tokens, normalize: bool = False):
        import torch.nn.functional as F

        x = self._m.encode_text(tokens).float()
        return F.normalize(x, dim=-1) if normalize else x


def feature_dim(encoder: nn.Module) -> int:
    """d_H, the width of h an image encoder gives (the number of columns of W)."""
    return int(encoder.hidden_dim if hasattr(encoder, "hidden_dim") else encoder.output_dim)


def _head_file(cache_dir: str | os.PathLike, model: str, key: str) -> Path:
    return Path(cache_dir) / "heads" / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', model)}-{key[:32]}.pt"


def _head_key(entry: PoolEntry, weights_digest: str, classnames, templates,
              dtype: str = "fp32") -> tuple[list, list, str]:
    """Class names and templates (the ImageNet defaults for None) and the cache key of the zero-shot
    head they give with these weights, computed in ``dtype``."""
    oc = open_clip_module(entry.model)
    classnames = list(oc.IMAGENET_CLASSNAMES if classnames is None else classnames)
    templates = list(oc.OPENAI_IMAGENET_TEMPLATES if templates is None else templates)
    return classnames, templates, hash_parts(_HEAD_CACHE_VERSION, weights_digest, json.dumps(classnames),
                                          json.dumps([_template_text(t) for t in templates]),
                                          *([] if dtype == "fp32" else [dtype]))


def head_without_model(entry: PoolEntry, weights_digest: str, cache_dir: str | os.PathLike,
                       classnames: Sequence[str] | None = None) -> torch.Tensor | None:
    """The head W that :func:`load` gives ``entry``, read without building the model when it can be:
    a classifier checkpoint's own head, or the zero-shot head cached under ``cache_dir/heads/`` for
    these weights and class names. None when only a load can give it."""
    if entry.checkpoint:
        ckpt = read_checkpoint(entry)
        if isinstance(ckpt, dict) and ckpt.get("format") == CLASSIFIER_FORMAT:
            return ckpt["head"].float()
    if entry.family not in ZERO_SHOT_FAMILIES:
        return None
    key = _head_key(entry, weights_digest, classnames, None)[2]
    path = _head_file(cache_dir, entry.model, key)
    if not path.exists():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return payload["W"].float() if payload.get("key") == key else None


def cached_zero_shot_head(entry: PoolEntry, clip_model: nn.Module, weights_digest: str, cache_dir,
                           classnames, templates, device, batch_size, precision: str = "fp32") -> tuple[torch.Tensor, str]:
    """The zero-shot head, read from ``cache_dir/heads/`` when computed before for these weights,
    class names, templates and compute dtype (then the text tower is never moved nor run);
    otherwise the CLIP model is moved to ``device`` and the head built there."""
    oc = open_clip_module(entry.model)
    dev = torch.device(device)
    dtype = compute_dtype(dev, precision)
    classnames, templates, key = _head_key(entry, weights_digest, classnames, templates, dtype)
    path = _head_file(cache_dir, entry.model, key) if cache_dir is not None else None
    if path is not None and path.exists():
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelError(f"{entry_label(entry)}: cached zero-shot head {path} is unreadable ({exc}); "
                             "delete it to recompute") from None
        expected_shape = (len(classnames), feature_dim(clip_model.visual))
        if payload.get("key") != key or tuple(payload["W"].shape) != expected_shape:
            raise ModelError(f"{entry_label(entry)}: cached zero-shot head {path} does not match these weights and "
                             "classes; delete it to recompute")
        return payload["W"], f"zero-shot head, cached {path}"
    if batch_size is None:
        batch_size = max(1, HEAD_PROMPTS_PER_BATCH.get(dev.type, 800) // len(templates))
    clip_model.to(dev).eval()
    W = zero_shot_head(clip_model, oc.get_tokenizer(entry.model), classnames, templates, dev, batch_size, precision,
                       desc=f"{entry.id}: zero-shot head, {len(classnames):,} classes x {len(templates)} templates "
                            f"on {dev}")
    if path is not None:
        atomic_torch_save({"key": key, "W": W.cpu(), "model": entry.model, "weights_digest": weights_digest,
                            "classes": len(classnames), "templates": len(templates), "dtype": dtype}, path)
    return W, f"zero-shot head over {len(classnames)} classes x {len(templates)} templates ({dtype} on {dev.type})"


def reduced_zero_shot_head(entry: PoolEntry, clip_model: nn.Module, weights_digest: str, cache_dir,
                           n_templates: int | None, class_indices: Sequence[int] | None,
                           device: str | torch.device = "cpu", batch_size: int | None = None,
                           precision: str = "fp32") -> tuple[torch.Tensor, str]:
    """The head of a smoke profile (``kind: smoke``, random weights; refused elsewhere at profile
    load): the zero-shot head of Section 2 from the first ``n_templates`` OpenAI templates (None:
    80) and, when ``class_indices`` are given, from the text tower for those ImageNet classes only;
    the other rows are unit vectors seeded by ``entry.seed``, scaled by tau^-1 like the text rows.
    Still 1,000 rows, so every chapter scores as usual; the text tower of random weights gives rows
    no more meaningful than these, at a fraction of the 2 CPU-minutes of 1,000 prompts."""
    oc = open_clip_module(entry.model)
    templates = list(oc.OPENAI_IMAGENET_TEMPLATES)[:n_templates] if n_templates else None
    if class_indices is None:
        return cached_zero_shot_head(entry, clip_model, weights_digest, cache_dir, None, templates, device, batch_size,
                                      precision)
    names = list(oc.IMAGENET_CLASSNAMES)
    rows = sorted(set(int(i) for i in class_indices))
    text, _ = cached_zero_shot_head(entry, clip_model, weights_digest, cache_dir, [names[i] for i in rows],
                                     templates, device, batch_size, precision)
    g = torch.Generator().manual_seed(entry.seed)
    W = F.normalize(torch.randn(len(names), text.shape[1], generator=g), dim=-1)
    W = W * float(clip_model.logit_scale.detach().exp())
    W[rows] = text.detach().float().cpu()
    n_t = len(templates) if templates is not None else len(oc.OPENAI_IMAGENET_TEMPLATES)
    return W, (f"smoke-profile zero-shot head: {len(rows)} classes x {n_t} templates from the text tower, "
               f"the other {len(names) - len(rows)} rows seeded random (seed {entry.seed})")

