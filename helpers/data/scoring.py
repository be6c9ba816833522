"""Top-1 accuracy of 1,000-way ImageNet logits on ImageNet and its five shifts (Section 3), one rule
for all: collapse the logits to the dataset's label space, then argmax.

- ImageNet, ImageNet-V2, ImageNet-Sketch: the 1,000 classes as they are.
- ImageNet-R, ImageNet-A: the 200 columns of their classes (an image is right only when its class
  wins among those 200, whatever the other 800 logits say).
- ObjectNet: per ObjectNet class, the max over the logits of its mapped ImageNet classes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from helpers.data.classes import LabelSpace, imagenet_a_wnids, imagenet_label_space, imagenet_r_wnids

#: Datasets scored over all 1,000 classes.
FULL_IMAGENET = ("imagenet", "imagenet-train", "imagenet-v2", "imagenet-sketch")


def label_space(name: str, root: str | Path | None = None) -> LabelSpace:
    """The label space of dataset ``name``, without listing its images. ObjectNet's depends on its
    ``mappings/`` files, so it needs the dataset ``root``."""
    if name in FULL_IMAGENET:
        return imagenet_label_space(name)
    if name == "imagenet-r":
        return imagenet_label_space(name, imagenet_r_wnids())
    if name == "imagenet-a":
        return imagenet_label_space(name, imagenet_a_wnids())
    if name == "objectnet":
        if root is None:
            raise ValueError("objectnet: scoring needs the mapping files: pass the dataset object or the "
                             "objectnet-1.0 root (the folder holding mappings/)")
        from helpers.data.objectnet import read_mappings

        return read_mappings(Path(root)).label_space
    raise ValueError(f"unknown dataset {name!r}; expected one of "
                     f"{', '.join(FULL_IMAGENET + ('imagenet-r', 'imagenet-a', 'objectnet'))}")


def _to_numpy(x) -> np.ndarray:
    if type(x).__module__.startswith("torch"):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def _space(name: str, dataset, root) -> LabelSpace:
    if dataset is None:
        return label_space(name, root)
    if dataset.name != name:
        raise ValueError(f"accuracy for {name!r} was given the {dataset.name!r} dataset")
    return dataset.label_space


def correct(name: str, logits, labels, dataset=None, root: str | Path | None = None) -> np.ndarray:
    """Per image, whether the top-1 prediction is right (bool, N): argmax of the N x 1000 ImageNet
    ``logits`` (torch or numpy) collapsed to dataset ``name``'s label space, compared with
    ``labels`` (the dataset's ``.labels``, in that label space). The per-image form is what a
    bootstrap over images resamples.

    ObjectNet's collapse needs its mappings: pass ``dataset`` (the open dataset) or ``root``
    (its folder); the other datasets need neither, so cached logits and labels suffice.
    """
    space = _space(name, dataset, root)
    labels = _to_numpy(labels)
    n = int(logits.shape[0]) if len(logits.shape) == 2 else -1
    if labels.ndim != 1 or len(labels) != n or n == 0:
        raise ValueError(f"{name}: expected N x 1000 logits and N labels with N > 0, found logits of shape "
                         f"{tuple(logits.shape)} and labels of shape {labels.shape}")
    if labels.min() < 0 or labels.max() >= space.num_classes:
        raise ValueError(f"{name}: labels must lie in the dataset's label space 0..{space.num_classes - 1}, "
                         f"found {labels.min()}..{labels.max()} (pass dataset.labels, not ImageNet indices)")
    return _to_numpy(space.collapse(logits)).argmax(1) == labels


def accuracy(name: str, logits, labels, dataset=None, root: str | Path | None = None) -> float:
    """Top-1 accuracy (a fraction in [0, 1]) of N x 1000 ImageNet ``logits`` on dataset ``name``:
    the mean of :func:`correct`, with the same arguments."""
    return float(np.mean(correct(name, logits, labels, dataset, root)))
