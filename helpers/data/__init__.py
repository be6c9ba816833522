"""ImageNet, its five natural distribution shifts (Section 3) and Broden (Section 5), each read from
its real on-disk layout; one scoring rule for the six test sets.

- :func:`open_dataset` (``imagenet``, ``imagenet-train``, ``imagenet-v2``, ``imagenet-r``,
  ``imagenet-sketch``, ``objectnet``, ``imagenet-a``) -> :class:`~.base.ImageDataset`;
  ``broden`` -> :class:`~.broden.BrodenDataset` (also :func:`open_broden`); ``folder`` (any folder of
  images, unlabelled: what ``diagnose`` reads) -> :class:`~.folder.ImageFolderDataset`
- :func:`accuracy`, :func:`correct`, :func:`label_space`: top-1 after collapsing 1,000 ImageNet
  logits to the dataset's label space

Modules: :mod:`.imagenet` (ImageNet, V2, R, Sketch, A), :mod:`.objectnet`, :mod:`.broden`,
:mod:`.scoring`, :mod:`.classes` (class lists, label spaces), :mod:`.base` (shared machinery).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from helpers.data.base import IMAGE_EXTENSIONS, LIMIT_SEED, DatasetLayoutError, ImageDataset, UnreadableImageError  # noqa: F401
from helpers.data.broden import BrodenDataset  # noqa: F401
from helpers.data.broden import open_broden as _open_broden
from helpers.data.folder import ImageFolderDataset, open_image_folder  # noqa: F401
from helpers.data.classes import LabelSpace, imagenet_classnames, imagenet_wnids  # noqa: F401
from helpers.data.imagenet import (open_imagenet, open_imagenet_a, open_imagenet_r, open_imagenet_sketch,
                       open_imagenet_v2)
from helpers.data.objectnet import ObjectNetDataset, open_objectnet  # noqa: F401
from helpers.data.scoring import accuracy, correct, label_space  # noqa: F401
from helpers.study import provenance

#: Names :func:`open_dataset` accepts (``helpers.config.DATASETS`` and ``folder``).
OPENABLE = ("imagenet", "imagenet-train", "imagenet-v2", "imagenet-r", "imagenet-sketch", "objectnet",
            "imagenet-a", "broden", "folder")


def open_dataset(name: str, root: str | Path, transform: Callable | None = None,
                 skip_unreadable: bool = False, limit: int | None = None) -> ImageDataset | BrodenDataset:
    """Open test or training set ``name`` from its folder ``root`` (the real layout; see
    :mod:`.imagenet`, :mod:`.objectnet`, :mod:`.broden`).

    ``transform`` is applied to the RGB PIL image in ``__getitem__``. ``limit`` keeps a
    class-balanced, fixed-seed subset of that many images (:func:`.base.balanced_subsample`).
    An unreadable image raises :class:`UnreadableImageError` naming it when loaded; with
    ``skip_unreadable`` every kept image is decoded once, up front, and the unreadable ones are
    dropped and listed in ``.skipped`` (so a later pass never fails half-way).
    """
    root = Path(root)
    provenance.note_dataset(name, root)  # every file at any depth of root: the job's input
    kw = dict(transform=transform, skip_unreadable=skip_unreadable, limit=limit)
    if name in ("imagenet", "imagenet-train"):
        return open_imagenet(name, root, **kw)
    if name == "imagenet-v2":
        return open_imagenet_v2(root, **kw)
    if name == "imagenet-r":
        return open_imagenet_r(root, **kw)
    if name == "imagenet-a":
        return open_imagenet_a(root, **kw)
    if name == "imagenet-sketch":
        return open_imagenet_sketch(root, **kw)
    if name == "objectnet":
        return open_objectnet(root, **kw)
    if name == "broden":
        return open_broden(root, **kw)
    if name == "folder":
        return open_image_folder(root, **kw)
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(OPENABLE)}")


def open_broden(root: str | Path, **kw) -> BrodenDataset:
    """Broden (:func:`.broden.open_broden`), recorded as an input of the current job."""
    provenance.note_dataset("broden", root)
    return _open_broden(root, **kw)
