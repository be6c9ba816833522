"""ImageNet, ImageNet-V2, -R, -A and -Sketch loaders on fixtures in their real layouts, and scoring."""
import os
import pickle

import numpy as np
import pytest
import torch

from helpers.demo import fixtures
from helpers.data import (DatasetLayoutError, UnreadableImageError, accuracy, correct, imagenet_wnids,
                          label_space, open_dataset)
from helpers.data.base import balanced_subsample
from helpers.data.classes import imagenet_a_wnids, imagenet_index, imagenet_r_wnids

SMALL = dict(per_class=2, size=(40, 32))
WNIDS = imagenet_wnids()


def test_imagenet_labels_index_the_1000_sorted_wnids(tmp_path):
    classes = (WNIDS[3], WNIDS[999], WNIDS[0])
    root = fixtures.write_imagenet(tmp_path / "imagenet", "val", classes=classes, **SMALL)
    ds = open_dataset("imagenet", root)
    assert [f.parent.name for f in ds.files] == sorted(c for c in classes for _ in range(2))
    assert ds.labels.tolist() == [0, 0, 3, 3, 999, 999]
    assert ds.labels.dtype == np.int64
    assert ds.imagenet_indices.tolist() == list(range(1000))
    image, label = ds[2]
    assert image.mode == "RGB" and image.size == (40, 32) and label == 3
    tensor, _ = open_dataset("imagenet", root, transform=lambda im: torch.zeros(3, im.size[1], im.size[0]))[0]
    assert tensor.shape == (3, 32, 40)


def test_train_split_and_picklable_for_dataloader_workers(tmp_path):
    root = fixtures.write_imagenet(tmp_path / "imagenet", "train", classes=WNIDS[:2], **SMALL)
    ds = open_dataset("imagenet-train", root)
    assert ds.files[0].name == f"{WNIDS[0]}_0.JPEG"
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.files == ds.files and clone.collapse(np.zeros((1, 1000))).shape == (1, 1000)


def test_imagenet_v2_folder_10_gets_label_10_not_2(tmp_path):
    root = fixtures.write_imagenet_v2(tmp_path / "v2", classes=(WNIDS[2], WNIDS[10], WNIDS[100]), **SMALL)
    ds = open_dataset("imagenet-v2", root)
    by_folder = {f.parent.name: int(y) for f, y in zip(ds.files, ds.labels)}
    assert by_folder == {"2": 2, "10": 10, "100": 100}
    # The files are in string order of the folders ('10' < '100' < '2'), the labels are not.
    assert [f.parent.name for f in ds.files][::2] == ["10", "100", "2"]


@pytest.mark.parametrize("folder", ["010", "1000", "n01440764", "val"])
def test_imagenet_v2_rejects_other_folder_names(tmp_path, folder):
    root = fixtures.write_imagenet_v2(tmp_path / "v2", classes=WNIDS[:1], **SMALL)
    (root / folder).mkdir()
    with pytest.raises(DatasetLayoutError, match=rf"'{folder}' is not a class index.*expected <root>/<class index>"):
        open_dataset("imagenet-v2", root)


def test_imagenet_r_scored_over_its_200_classes_only(tmp_path, monkeypatch):
    # Stand-in names instead of importing open_clip (seconds) for IMAGENET_CLASSNAMES.
    monkeypatch.setattr("helpers.data.classes.imagenet_classnames", lambda: tuple(f"c{i}" for i in range(1000)))
    r = imagenet_r_wnids()
    classes = (r[0], r[5], r[199])
    ds = open_dataset("imagenet-r", fixtures.write_imagenet_r(tmp_path / "r", classes=classes, **SMALL))
    assert ds.labels.tolist() == [0, 0, 5, 5, 199, 199]
    assert ds.imagenet_indices.tolist() == [imagenet_index()[w] for w in r]
    assert ds.classnames[5] == f"c{imagenet_index()[r[5]]}" and len(ds.classnames) == 200
    assert label_space("imagenet").classnames[7] == "c7"

    outside = next(i for i in range(1000) if i not in set(ds.imagenet_indices))
    logits = torch.zeros(len(ds), 1000)
    logits[:, outside] = 100.0  # the global argmax is a class ImageNet-R does not have
    for i, k in enumerate(ds.labels):
        logits[i, ds.imagenet_indices[k]] = 10.0  # the image's class wins among the 200
    logits[1, ds.imagenet_indices[3]] = 20.0  # except here: another R class wins
    assert correct("imagenet-r", logits, ds.labels).tolist() == [True, False, True, True, True, True]
    assert accuracy("imagenet-r", logits, ds.labels) == pytest.approx(5 / 6)
    assert accuracy("imagenet-r", logits.numpy(), ds.labels, dataset=ds) == pytest.approx(5 / 6)
    assert accuracy("imagenet", logits, ds.imagenet_indices[ds.labels]) == 0.0
    assert ds.collapse(logits).shape == (6, 200)


def test_imagenet_a_labels_and_root_readme_ignored(tmp_path):
    a = imagenet_a_wnids()
    root = fixtures.write_imagenet_a(tmp_path / "a", classes=(a[1], a[7]), **SMALL)
    assert (root / "README.txt").exists()
    ds = open_dataset("imagenet-a", root)
    assert ds.labels.tolist() == [1, 1, 7, 7]
    assert " _ " in ds.files[0].name  # the download's file names hold spaces
    assert ds.imagenet_indices[7] == imagenet_index()[a[7]]


def test_imagenet_r_rejects_a_class_outside_its_200(tmp_path):
    not_r = next(w for w in WNIDS if w not in set(imagenet_r_wnids()))
    root = fixtures.write_imagenet_r(tmp_path / "r", classes=imagenet_r_wnids()[:1], **SMALL)
    (root / not_r).mkdir()
    with pytest.raises(DatasetLayoutError, match=rf"'{not_r}' is not one of ImageNet-R's 200 wnids"):
        open_dataset("imagenet-r", root)


def test_sketch_detects_flat_and_nested_layouts(tmp_path):
    fixtures.write_imagenet_sketch(tmp_path / "dl" / "sketch", classes=WNIDS[5:7], **SMALL)
    nested = open_dataset("imagenet-sketch", tmp_path / "dl")
    flat = open_dataset("imagenet-sketch", tmp_path / "dl" / "sketch")
    assert nested.labels.tolist() == flat.labels.tolist() == [5, 5, 6, 6]
    assert nested.files == flat.files
    (tmp_path / "dl" / WNIDS[5]).mkdir()
    with pytest.raises(DatasetLayoutError, match="both a 'sketch/' folder and class folders"):
        open_dataset("imagenet-sketch", tmp_path / "dl")


def test_layout_errors_name_the_folder_expected_layout_and_what_was_found(tmp_path):
    with pytest.raises(DatasetLayoutError, match=r"missing does not exist; expected <root>/<wnid>/\*\.JPEG"):
        open_dataset("imagenet", tmp_path / "missing")
    root = fixtures.write_imagenet(tmp_path / "imagenet", "val", classes=WNIDS[:1], **SMALL)
    (root / "n99999999").mkdir()
    (root / "extras").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"val: folders 'extras', 'n99999999' are not an ImageNet "
                                                 r"wnid; expected .*found folders 'extras', 'n01440764'"):
        open_dataset("imagenet", root)
    # Pointing at the parent of val/ and train/ is the same mistake.
    with pytest.raises(DatasetLayoutError, match="'val' is not an ImageNet wnid"):
        open_dataset("imagenet", tmp_path / "imagenet")
    flat = tmp_path / "flat"
    flat.mkdir()
    (root / WNIDS[0] / "ILSVRC2012_val_00000001.JPEG").rename(flat / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DatasetLayoutError, match="1 images directly in it and no class folders.*unpacks flat"):
        open_dataset("imagenet", flat)
    empty = tmp_path / "empty"
    (empty / WNIDS[0]).mkdir(parents=True)
    with pytest.raises(DatasetLayoutError, match="no image files in the class folders 'n01440764'"):
        open_dataset("imagenet", empty)
    with pytest.raises(ValueError, match="unknown dataset 'imagenet-c'; expected one of imagenet, "):
        open_dataset("imagenet-c", root)


def test_unreadable_image_names_the_file_and_skip_unreadable_counts_it(tmp_path):
    root = fixtures.write_imagenet(tmp_path / "imagenet", "val", classes=WNIDS[:2], **SMALL)
    bad = root / WNIDS[1] / "ILSVRC2012_val_00000003.JPEG"
    bad.write_bytes(b"not a jpeg")
    ds = open_dataset("imagenet", root)
    assert len(ds) == 4 and ds.skipped == []
    with pytest.raises(UnreadableImageError, match=f"{bad}: cannot read image"):
        ds[2]
    ds = open_dataset("imagenet", root, skip_unreadable=True)
    assert ds.skipped == [bad] and len(ds) == 3 and ds.labels.tolist() == [0, 0, 1]
    assert bad not in ds.files


def test_digest_changes_with_any_added_removed_or_changed_file(tmp_path):
    root = fixtures.write_imagenet(tmp_path / "imagenet", "val", classes=WNIDS[:2], **SMALL)
    d0 = open_dataset("imagenet", root).digest()
    assert open_dataset("imagenet", root).digest() == d0
    f = root / WNIDS[0] / "ILSVRC2012_val_00000001.JPEG"
    data = f.read_bytes()
    f.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))  # same size, new content
    os.utime(f, ns=(0, f.stat().st_mtime_ns + 1))
    d1 = open_dataset("imagenet", root).digest()
    assert d1 != d0
    (root / WNIDS[0] / "extra.JPEG").write_bytes(data)
    d2 = open_dataset("imagenet", root).digest()
    assert d2 not in (d0, d1)
    (root / WNIDS[0] / "extra.JPEG").unlink()
    assert open_dataset("imagenet", root).digest() == d1
    assert open_dataset("imagenet", root, limit=2).digest() != d1


def test_limit_is_class_balanced_nested_and_deterministic(tmp_path):
    labels = np.repeat([0, 1, 2], [10, 4, 1])
    picks = {k: balanced_subsample(labels, k) for k in (3, 6, 9, 15, 40)}
    assert np.bincount(labels[picks[3]]).tolist() == [1, 1, 1]
    assert np.bincount(labels[picks[6]], minlength=3).tolist() == [3, 2, 1]
    assert np.bincount(labels[picks[9]], minlength=3).tolist() == [4, 4, 1]
    assert set(picks[3]) < set(picks[6]) < set(picks[9]) and len(picks[15]) == len(picks[40]) == 15
    assert all(np.all(np.diff(p) > 0) for p in picks.values())
    assert np.array_equal(balanced_subsample(labels, 6), picks[6])
    root = fixtures.write_imagenet(tmp_path / "imagenet", "val", classes=WNIDS[:3], per_class=4, size=(16, 16))
    ds = open_dataset("imagenet", root, limit=5)
    assert len(ds) == 5 and np.bincount(ds.labels).tolist() == [2, 2, 1]
    assert ds.files == sorted(ds.files)


def test_scoring_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="expected N x 1000 ImageNet logits"):
        accuracy("imagenet-a", np.zeros((2, 200)), np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="label space 0..199"):
        accuracy("imagenet-r", np.zeros((2, 1000)), np.array([0, 300]))
    with pytest.raises(ValueError, match="N labels"):
        accuracy("imagenet", np.zeros((2, 1000)), np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match="needs the mapping files"):
        accuracy("objectnet", np.zeros((2, 1000)), np.zeros(2, dtype=int))
    assert accuracy("imagenet", torch.eye(1000)[:5].to(torch.bfloat16), np.arange(5)) == 1.0


#: Sizes of the real datasets (images, classes, ImageNet indices scored), as published.
REAL = {"imagenet": (50000, 1000, 1000), "imagenet-v2": (10000, 1000, 1000), "imagenet-r": (30000, 200, 200),
        "imagenet-sketch": (50889, 1000, 1000), "imagenet-a": (7500, 200, 200), "objectnet": (None, 113, 125)}


@pytest.mark.realdata
@pytest.mark.skipif(os.environ.get("CLIP_STUDY_REAL") != "1", reason="real datasets: set CLIP_STUDY_REAL=1")
@pytest.mark.parametrize("name", sorted(REAL))
def test_real_datasets_have_their_published_sizes(name):
    from helpers.config import load_profile

    ds = open_dataset(name, load_profile("paper").datasets[name])
    n, k, scored = REAL[name]
    assert (ds.num_classes, len(ds.imagenet_indices)) == (k, scored)
    assert n is None or len(ds) == n
    assert len(np.unique(ds.labels)) == k
