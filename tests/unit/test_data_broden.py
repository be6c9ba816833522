"""Broden over the broden1_224 layout: concepts, presence from masks and image-level labels, and the
balanced concept sets of Section 5."""
import csv
import os

import numpy as np
import pytest
from PIL import Image

from helpers.demo import fixtures
from helpers.data import DatasetLayoutError, UnreadableImageError, open_broden, open_dataset


@pytest.fixture(scope="module")
def broden(tmp_path_factory):
    return fixtures.write_broden(tmp_path_factory.mktemp("b") / "broden1_224", n_images=40, seed=3)


def test_concepts_exclude_label_0_and_take_the_main_category(broden):
    root, _ = broden
    ds = open_broden(root)
    assert 0 not in ds.concepts.number.tolist()
    assert ds.concepts.number.tolist() == sorted(fixtures.BRODEN_CONCEPTS)
    assert list(ds.concepts.columns) == ["number", "name", "category"]
    with open(root / "label.csv") as f:
        cell = {int(r["number"]): r["category"] for r in csv.DictReader(f)}
    counts = dict(part.rstrip(")").split("(") for part in cell[18].split(";"))
    wheel = ds.concepts.set_index("number").loc[18]
    assert wheel["name"] == "wheel" and wheel["category"] == max(counts, key=lambda c: int(counts[c]))
    assert set(ds.concepts.category) == set(fixtures.BRODEN_CATEGORIES)


def test_presence_matches_the_labels_written(broden):
    root, truth = broden
    ds = open_broden(root)
    numbers = ds.concepts.number.to_numpy()
    assert [str(f.relative_to(root / "images")) for f in ds.files] == sorted(truth)
    expected = np.array([[n in truth[img] for n in numbers] for img in sorted(truth)])
    assert ds.presence.shape == (40, len(numbers)) and np.array_equal(ds.presence, expected)
    col = {n: k for k, n in enumerate(numbers)}
    # Pixel labels above 255 need the G channel; scene and texture are image-level only.
    assert ds.presence[:, col[303]].any() and ds.presence[:, col[1150]].any() and ds.presence[:, col[700]].any()
    mask = next((root / "images").rglob("*_part_1.png"))
    rgb = np.asarray(Image.open(mask))
    assert rgb.shape == (112, 112, 3) and (rgb[..., 1] > 0).any()
    with open(root / "index.csv") as f:
        assert any(";" in r["part"] for r in csv.DictReader(f))  # cells listing two masks


def test_balanced_sets_are_balanced_seeded_and_report_too_few(broden):
    root, _ = broden
    ds = open_broden(root)
    sel, report = ds.balanced_sets(min_positives=3, seed=0)
    presence = ds.presence
    pos, neg = (sel & presence).sum(0), (sel & ~presence).sum(0)
    assert np.array_equal(pos, neg)
    numbers = ds.concepts.number.tolist()
    reported = dict(zip(report.number, report.reason))
    rare = numbers.index(fixtures.BRODEN_RARE)
    assert presence[:, rare].sum() == 2 and not sel[:, rare].any()
    assert reported[fixtures.BRODEN_RARE] == "fewer than 3 positives"
    for c, n in enumerate(numbers):
        p = int(presence[:, c].sum())
        if n in reported:
            continue
        assert pos[c] == p and (sel[:, c] & presence[:, c]).sum() == p  # every positive kept
    black = numbers.index(1)
    assert presence[:, black].sum() > 20 and reported[1].startswith("more positives than negatives")
    assert pos[black] == (~presence[:, black]).sum()
    again, _ = ds.balanced_sets(min_positives=3, seed=0)
    other, _ = ds.balanced_sets(min_positives=3, seed=1)
    assert np.array_equal(sel, again) and not np.array_equal(sel, other)
    strict, report = ds.balanced_sets(min_positives=100)
    assert not strict.any() and len(report) == len(numbers)
    assert list(report.columns) == ["number", "name", "category", "positives", "negatives", "per_side", "reason"]


def test_limit_and_getitem(broden):
    root, truth = broden
    ds = open_broden(root, limit=10, transform=lambda im: im.size)
    assert len(ds) == 10 and ds.files == sorted(ds.files)
    assert set(open_broden(root, limit=5).files) < set(ds.files)
    assert ds[3] == ((224, 224), 3)
    assert ds.presence.shape == (10, len(fixtures.BRODEN_CONCEPTS))
    assert ds.digest() != open_broden(root).digest()


def test_unreadable_image_is_named_or_skipped_with_labels_keeping_positions(tmp_path):
    root, truth = fixtures.write_broden(tmp_path / "broden1_224", n_images=6)
    bad = root / "images" / sorted(truth)[2]
    bad.write_bytes(b"broken")
    with pytest.raises(UnreadableImageError, match=f"{bad}: cannot read image"):
        open_dataset("broden", root)[2]
    ds = open_dataset("broden", root, skip_unreadable=True)
    assert ds.skipped == [bad] and len(ds) == 5 and ds.labels.tolist() == [0, 1, 3, 4, 5]
    assert ds[2][1] == 3
    full = open_broden(root).presence
    assert np.array_equal(ds.presence, full[ds.labels])


def test_layout_errors_name_the_file(tmp_path):
    root, _ = fixtures.write_broden(tmp_path / "broden1_224", n_images=4)
    with pytest.raises(DatasetLayoutError, match="elsewhere does not exist; expected <root>/index.csv"):
        open_broden(tmp_path / "elsewhere")
    text = (root / "label.csv").read_text()
    (root / "label.csv").write_text(text.replace("number,name,category", "id,name,category", 1))
    with pytest.raises(DatasetLayoutError, match=r"label.csv: expected the columns number,name,category,frequency,"
                                                 r"coverage,syns; found header id,name.*missing number"):
        open_broden(root)
    (root / "label.csv").write_text(text)
    (root / "c_texture.csv").unlink()
    with pytest.raises(DatasetLayoutError, match="c_texture.csv: no such file"):
        open_broden(root)


def test_mask_values_outside_label_csv_are_an_error(tmp_path):
    root, _ = fixtures.write_broden(tmp_path / "broden1_224", n_images=4)
    mask = next((root / "images").rglob("*_color.png"))
    rgb = np.asarray(Image.open(mask)).copy()
    rgb[0, 0] = (7, 3, 0)  # label 7 + 256 * 3 = 775: no such concept
    Image.fromarray(rgb).save(mask)
    with pytest.raises(DatasetLayoutError, match=f"{mask}: pixel labels 775"):
        open_broden(root).presence


@pytest.mark.realdata
@pytest.mark.skipif(os.environ.get("CLIP_STUDY_REAL") != "1", reason="real datasets: set CLIP_STUDY_REAL=1")
def test_real_broden_has_63305_images_and_1197_concepts():
    from helpers.config import load_profile

    ds = open_broden(load_profile("paper").datasets["broden"])
    assert len(ds) == 63305 and len(ds.concepts) == 1197


def test_fixture_writes_the_real_label_format(broden):
    """broden1_224's label.csv: no row 0, frequency = sum of the category cell's counts; c_*.csv
    codes 1, 2, ... by descending frequency in that category (book/methods.md, facts)."""
    root, _ = broden
    with open(root / "label.csv") as f:
        labels = list(csv.DictReader(f))
    assert int(labels[0]["number"]) == 1 and all(int(r["number"]) > 0 for r in labels)
    for r in labels:
        counts = [int(part.rstrip(")").split("(")[1]) for part in r["category"].split(";")]
        assert int(r["frequency"]) == sum(counts)
    wheel = next(r for r in labels if r["name"] == "wheel")
    assert wheel["category"].count(";") == 1 and int(wheel["frequency"]) > max(
        int(p.rstrip(")").split("(")[1]) for p in wheel["category"].split(";"))  # counted in part and object
    for cat in fixtures.BRODEN_CATEGORIES:
        with open(root / f"c_{cat}.csv") as f:
            rows = list(csv.DictReader(f))
        assert [int(r["code"]) for r in rows] == list(range(1, len(rows) + 1))
        freq = [int(r["frequency"]) for r in rows]
        assert freq == sorted(freq, reverse=True)
    ds = open_broden(root)  # the reader takes this format
    assert len(ds.concepts) == len(fixtures.BRODEN_CONCEPTS) and 0 not in ds.concepts.number.tolist()


def test_image_listed_in_index_but_missing_is_a_layout_error(tmp_path):
    root, truth = fixtures.write_broden(tmp_path / "broden1_224", n_images=6)
    gone = sorted(truth)[1:3]
    for g in gone:
        (root / "images" / g).unlink()
    with pytest.raises(DatasetLayoutError) as err:
        open_broden(root)
    msg = str(err.value)
    assert "index.csv: lists 2 image(s) missing from" in msg and all(f"images/{g}" in msg for g in gone)
