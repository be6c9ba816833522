"""ImageNet class lists and the label spaces the datasets are scored in.

Reference files (``helpers/reference/``), one entry per line:

- ``imagenet_wnids.txt``: the 1,000 ILSVRC-2012 wnids, sorted; class index = line number (the order
  of torchvision's ImageFolder over ``train/`` and of every model's 1,000-way head).
- ``imagenet_r_wnids.txt``, ``imagenet_a_wnids.txt``: the 200 wnids of ImageNet-R and ImageNet-A
  (sorted, as their folders), copied from timm 1.0.31 (``timm/data/_info/imagenet_{r,a}_synsets.txt``,
  Apache-2.0), which lists the classes Hendrycks et al. released.
- ``imagenet_lemmas.tsv``: ``wnid<TAB>WordNet lemmas`` of the 1,000 classes (timm's
  ``imagenet_synset_to_lemma.txt`` restricted to them); the strings ObjectNet's mapping files use.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

REFERENCE_DIR = Path(__file__).resolve().parent.parent / "reference"

N_IMAGENET = 1000


def _read_lines(name: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in (REFERENCE_DIR / name).read_text().splitlines() if line.strip())


@lru_cache(maxsize=None)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1,000 ImageNet wnids in class-index order."""
    return _read_lines("imagenet_wnids.txt")


@lru_cache(maxsize=None)
def imagenet_index() -> dict[str, int]:
    """wnid -> ImageNet class index."""
    return {w: i for i, w in enumerate(imagenet_wnids())}


@lru_cache(maxsize=None)
def imagenet_r_wnids() -> tuple[str, ...]:
    """The 200 ImageNet-R wnids; ImageNet-R label k is the k-th of them."""
    return _read_lines("imagenet_r_wnids.txt")


@lru_cache(maxsize=None)
def imagenet_a_wnids() -> tuple[str, ...]:
    """The 200 ImageNet-A wnids; ImageNet-A label k is the k-th of them."""
    return _read_lines("imagenet_a_wnids.txt")


@lru_cache(maxsize=None)
def imagenet_lemmas() -> dict[str, str]:
    """wnid -> WordNet lemmas (``"kit fox, Vulpes macrotis"``)."""
    return dict(line.split("\t", 1) for line in _read_lines("imagenet_lemmas.tsv"))


@lru_cache(maxsize=None)
def imagenet_classnames() -> tuple[str, ...]:
    """The 1,000 class names CLIP's zero-shot head is built from (``open_clip.IMAGENET_CLASSNAMES``).
    open_clip is imported here, on first use, because it takes seconds to import."""
    import open_clip

    return tuple(open_clip.IMAGENET_CLASSNAMES)


@dataclass(frozen=True)
class LabelSpace:
    """How a dataset's K classes sit in the 1,000 ImageNet classes.

    ``groups[k]`` holds the ImageNet indices of dataset class k: one index for ImageNet and its
    folder-per-wnid shifts, one or more for ObjectNet. :meth:`collapse` maps N x 1000 logits to
    N x K by taking, per class, the max over its group (a column subset when every group has one
    index; the identity for the 1,000 classes).
    """

    name: str
    groups: tuple[tuple[int, ...], ...]
    names: tuple[str, ...] | None = None  # None: the ImageNet class names of the groups
    union: bool = False  # imagenet_indices as the sorted union of the groups (ObjectNet)
    _gather: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        width = max(len(g) for g in self.groups)
        # Pad each group with its own first index: repeating a column leaves the max unchanged.
        gather = np.array([g + (g[0],) * (width - len(g)) for g in self.groups], dtype=np.int64)
        object.__setattr__(self, "_gather", gather)

    @property
    def num_classes(self) -> int:
        return len(self.groups)

    @property
    def is_identity(self) -> bool:
        return self.num_classes == N_IMAGENET and self._gather.shape[1] == 1 and \
            bool(np.array_equal(self._gather[:, 0], np.arange(N_IMAGENET)))

    @property
    def imagenet_indices(self) -> np.ndarray:
        """ImageNet indices scored: in label order, one per class (ImageNet, R, A), or with
        ``union`` the sorted union of the groups (ObjectNet: 125 indices for 113 classes)."""
        if self.union:
            return np.unique(self._gather)
        return self._gather[:, 0].copy()

    @property
    def classnames(self) -> list[str]:
        if self.names is not None:
            return list(self.names)
        names = imagenet_classnames()
        return [names[g[0]] for g in self.groups]

    def collapse(self, logits):
        """N x 1000 logits (torch tensor or numpy array) -> N x K logits in this label space."""
        shape = tuple(logits.shape)
        if len(shape) != 2 or shape[1] != N_IMAGENET:
            raise ValueError(f"{self.name}: expected N x {N_IMAGENET} ImageNet logits, found shape {shape}")
        if self.is_identity:
            return logits
        gather = self._gather
        if _is_torch(logits):
            import torch

            gather = torch.as_tensor(gather, device=logits.device)
        if self._gather.shape[1] == 1:
            return logits[:, gather[:, 0]]
        gathered = logits[:, gather.reshape(-1)].reshape(shape[0], *self._gather.shape)
        return gathered.amax(-1) if _is_torch(gathered) else gathered.max(-1)


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def imagenet_label_space(name: str, wnids: tuple[str, ...] | None = None) -> LabelSpace:
    """The label space of a folder-per-class ImageNet dataset: the 1,000 classes, or the ``wnids``
    subset in the given order (ImageNet-R, ImageNet-A)."""
    index = imagenet_index()
    if wnids is None:
        return LabelSpace(name, tuple((i,) for i in range(N_IMAGENET)))
    return LabelSpace(name, tuple((index[w],) for w in wnids))
