"""ObjectNet (Barbu et al., 2019), one of the five shifts of Section 3, scored as the ImageNet
testbed of Taori et al. and WiSE-FT score it.

Layout of the ``objectnet-1.0`` download::

    <root>/images/<folder>/*.png        313 class folders ('alarm_clock', 'banana', ...)
    <root>/mappings/folder_to_objectnet_label.json      {"alarm_clock": "Alarm clock", ...}
    <root>/mappings/objectnet_to_imagenet_1k.json       {"Alarm clock": "analog clock; digital clock", ...}
    <root>/mappings/imagenet_to_label_2012_v2           line i: the lemmas of ILSVRC-2012 id i
    <root>/mappings/pytorch_to_imagenet_2012_id.json    {"0": 355, ...}: class index -> ILSVRC-2012 id

``objectnet_to_imagenet_1k.json`` names, for the 113 ObjectNet classes that overlap ImageNet, the
ImageNet classes they correspond to (``;``-separated lines of ``imagenet_to_label_2012_v2``); the
class index of such a line is found through ``pytorch_to_imagenet_2012_id.json``. Images of the
other 200 classes are excluded. Label k = k-th kept folder in sorted order; the 1,000 logits are
collapsed to the 113 classes by the max over each class's mapped ImageNet logits (125 in all), and
every image loses 2 pixels on each side, the red border ObjectNet adds (:meth:`load_image`).

CLIP_benchmark scores ObjectNet differently: a 113-way zero-shot head built from the ObjectNet
class names, and no border crop. We implement the testbed variant, the one the effective-robustness
baseline of Eq. (5) was fit with.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from helpers.data.base import DatasetLayoutError, ImageDataset, list_dirs, preview, require_dir
from helpers.data.classes import N_IMAGENET, LabelSpace
from helpers.data.imagenet import scan_class_folders

#: Pixels cropped from every side: ObjectNet images carry a thin red border.
BORDER = 2

FOLDER_TO_LABEL = "folder_to_objectnet_label.json"
OBJECTNET_TO_IMAGENET = "objectnet_to_imagenet_1k.json"
PYTORCH_TO_2012 = "pytorch_to_imagenet_2012_id.json"
IMAGENET_2012_NAMES = "imagenet_to_label_2012_v2"
MAPPING_FILES = (FOLDER_TO_LABEL, OBJECTNET_TO_IMAGENET, PYTORCH_TO_2012, IMAGENET_2012_NAMES)

LAYOUT = ("<root>/images/<folder>/*.png and <root>/mappings/ holding " + ", ".join(MAPPING_FILES)
          + " (the objectnet-1.0 download)")


@dataclass(frozen=True)
class ObjectNetMapping:
    """The kept classes: ``folders[k]`` (sorted) has ObjectNet name ``label_space.names[k]`` and
    ImageNet classes ``label_space.groups[k]``. ``known_folders``: every folder the mapping names."""

    folders: tuple[str, ...]
    known_folders: frozenset[str]
    label_space: LabelSpace


def _fail(path: Path, expected: str, found: str) -> DatasetLayoutError:
    return DatasetLayoutError(f"objectnet: {path}: expected {expected}; found {found}")


def _read_json_object(path: Path, expected: str) -> dict:
    if not path.is_file():
        raise _fail(path, expected, "no such file" + (" (a folder)" if path.exists() else ""))
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(path, expected, f"invalid JSON ({exc})") from None
    if not isinstance(obj, dict) or not obj:
        raise _fail(path, expected, f"{type(obj).__name__} {str(obj)[:80]!r}")
    return obj


def _string_map(path: Path, expected: str) -> dict[str, str]:
    obj = _read_json_object(path, expected)
    bad = [k for k, v in obj.items() if not isinstance(v, str)]
    if bad:
        raise _fail(path, expected, f"non-string values for {preview(bad)}")
    return obj


def read_mappings(root: Path) -> ObjectNetMapping:
    """Parse ``<root>/mappings/`` into the kept classes and their ImageNet groups."""
    root = Path(root)
    maps = root / "mappings"
    require_dir("objectnet", maps, LAYOUT)

    folder_to_label = _string_map(maps / FOLDER_TO_LABEL, 'a JSON object {"<folder>": "<ObjectNet class>"}')
    label_to_folder: dict[str, str] = {}
    for folder, label in folder_to_label.items():
        if label in label_to_folder:
            raise _fail(maps / FOLDER_TO_LABEL, "one folder per ObjectNet class",
                        f"{label!r} for both {label_to_folder[label]!r} and {folder!r}")
        label_to_folder[label] = folder

    to_imagenet = _string_map(maps / OBJECTNET_TO_IMAGENET,
                              'a JSON object {"<ObjectNet class>": "<ImageNet lemmas>; <ImageNet lemmas>"}')

    p2012 = _read_json_object(maps / PYTORCH_TO_2012, 'a JSON object {"<class index>": <ILSVRC-2012 id>} '
                              "over the 1,000 classes")
    try:
        index_to_2012 = {int(k): int(v) for k, v in p2012.items()}
    except (TypeError, ValueError):
        raise _fail(maps / PYTORCH_TO_2012, "integer keys and values", preview(list(p2012.items()))) from None
    if sorted(index_to_2012) != list(range(N_IMAGENET)) or sorted(index_to_2012.values()) != list(range(N_IMAGENET)):
        raise _fail(maps / PYTORCH_TO_2012, f"a one-to-one map of the class indices 0..{N_IMAGENET - 1} "
                    f"onto the ids 0..{N_IMAGENET - 1}", f"{len(index_to_2012)} entries that are not")
    id2012_to_index = {v: k for k, v in index_to_2012.items()}

    names_path = maps / IMAGENET_2012_NAMES
    if not names_path.is_file():
        raise _fail(names_path, f"a text file of {N_IMAGENET} lines (the ImageNet lemmas of each ILSVRC-2012 id)",
                    "no such file")
    lines = [line.strip() for line in names_path.read_text().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) != N_IMAGENET or not all(lines):
        raise _fail(names_path, f"{N_IMAGENET} non-empty lines", f"{len(lines)} lines, "
                    f"{sum(not x for x in lines)} of them empty")
    ids_of_name: dict[str, list[int]] = {}
    for i, line in enumerate(lines):
        ids_of_name.setdefault(line, []).append(i)

    groups: dict[str, tuple[int, ...]] = {}
    for label, lemmas in to_imagenet.items():
        if label not in label_to_folder:
            raise _fail(maps / OBJECTNET_TO_IMAGENET, f"ObjectNet classes named in {FOLDER_TO_LABEL}",
                        f"{label!r}, which is not")
        indices = []
        for lemma in (x.strip() for x in lemmas.split(";")):
            ids = ids_of_name.get(lemma, [])
            if len(ids) != 1:
                found = "no such line" if not ids else f"{len(ids)} lines (ambiguous)"
                raise _fail(names_path, f"one line {lemma!r} (named for {label!r} in {OBJECTNET_TO_IMAGENET})",
                            found)
            indices.append(id2012_to_index[ids[0]])
        groups[label_to_folder[label]] = tuple(sorted(set(indices)))

    folders = tuple(sorted(groups))
    space = LabelSpace("objectnet", tuple(groups[f] for f in folders),
                       names=tuple(folder_to_label[f] for f in folders), union=True)
    return ObjectNetMapping(folders, frozenset(folder_to_label), space)


class ObjectNetDataset(ImageDataset):
    """ObjectNet images of the classes that map to ImageNet; :meth:`load_image` crops the border.
    ``excluded_folders``: the class folders present whose images were left out (unmapped classes)."""

    def __init__(self, *args, excluded_folders: list[str], **kw):
        super().__init__(*args, **kw)
        self.excluded_folders = excluded_folders

    def load_image(self, i: int) -> Image.Image:
        """Image ``i`` as RGB without its 2-pixel red border (as the testbed and WiSE-FT crop it)."""
        image = super().load_image(i)
        w, h = image.size
        return image.crop((BORDER, BORDER, w - BORDER, h - BORDER))


def open_objectnet(root: Path, **kw) -> ObjectNetDataset:
    """ObjectNet restricted to its classes that map to ImageNet (113 in the real download)."""
    root = Path(root)
    require_dir("objectnet", root, LAYOUT)
    images = root / "images"
    require_dir("objectnet", images, LAYOUT)
    mapping = read_mappings(root)
    position = {f: k for k, f in enumerate(mapping.folders)}
    unmapped = frozenset(mapping.known_folders - set(position))
    # Unmapped folders are skipped by name, before any image of theirs is listed or decoded.
    files, labels = scan_class_folders("objectnet", images, position.get,
                                       f"a folder named in mappings/{FOLDER_TO_LABEL}", LAYOUT, unmapped)
    excluded = [d for d in list_dirs(images) if d in unmapped]
    return ObjectNetDataset("objectnet", root, files, labels, mapping.label_space, excluded_folders=excluded, **kw)
