"""ObjectNet: mapping files in the download's formats, unmapped classes excluded, max-collapse
scoring and the 2-pixel border crop."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.demo import fixtures
from helpers.data import DatasetLayoutError, accuracy, correct, label_space, open_dataset
from helpers.data.classes import imagenet_index

SMALL = dict(per_class=2, size=(40, 30))
FOLDERS = ("banana", "coaster", "squeegee", "tie", "winter_glove")


@pytest.fixture
def objectnet(tmp_path):
    return fixtures.write_objectnet(tmp_path / "objectnet-1.0", folders=FOLDERS, **SMALL)


def test_unmapped_classes_are_excluded_and_labels_follow_sorted_kept_folders(objectnet):
    ds = open_dataset("objectnet", objectnet)
    assert ds.classnames == ["Banana", "Tie", "Winter glove"]
    assert ds.excluded_folders == ["coaster", "squeegee"]
    assert {f.parent.name for f in ds.files} == {"banana", "tie", "winter_glove"}
    assert ds.labels.tolist() == [0, 0, 1, 1, 2, 2]
    idx = imagenet_index()
    # The mapping goes through the ILSVRC-2012 ids (a permutation in the fixture), not the line order.
    assert ds.label_space.groups == ((idx["n07753592"],), tuple(sorted((idx["n02883205"], idx["n04591157"]))),
                                     (idx["n03775071"],))
    assert ds.imagenet_indices.tolist() == sorted(idx[w] for w in ("n07753592", "n02883205", "n04591157",
                                                                     "n03775071"))


def test_imagenet_indices_are_the_sorted_union_even_with_single_mappings(tmp_path):
    root = fixtures.write_objectnet(tmp_path / "on", folders=("banana", "lemon"), **SMALL)
    ds = open_dataset("objectnet", root)
    idx = imagenet_index()
    assert ds.label_space.groups == ((idx["n07753592"],), (idx["n07749582"],))  # banana 954, lemon 951
    assert ds.imagenet_indices.tolist() == [951, 954]


def test_correct_when_the_max_over_the_mapped_imagenet_logits_wins(objectnet):
    ds = open_dataset("objectnet", objectnet)
    idx = imagenet_index()
    bow_tie, windsor_tie, banana, mitten = idx["n02883205"], idx["n04591157"], idx["n07753592"], idx["n03775071"]
    logits = np.zeros((len(ds), 1000), dtype=np.float32)
    logits[:, 0] = 50.0  # an unmapped ImageNet class wins globally and must not count
    logits[0, banana] = 3.0             # banana image: banana wins
    logits[1, [banana, windsor_tie]] = (3.0, 4.0)  # banana image: tie wins through Windsor tie
    logits[2, [windsor_tie, mitten]] = (5.0, 4.0)  # tie image: Windsor tie is a tie
    logits[3, [bow_tie, banana]] = (2.0, 1.0)      # tie image: bow tie is a tie
    logits[4, [mitten, bow_tie]] = (1.0, 0.5)      # winter glove image: mitten wins
    logits[5, [mitten, windsor_tie]] = (1.0, 1.5)  # winter glove image: tie wins
    collapsed = ds.collapse(logits)
    assert collapsed.shape == (6, 3)
    assert collapsed[2].tolist() == [0.0, 5.0, 4.0]
    expected = [True, False, True, True, True, False]
    assert correct("objectnet", logits, ds.labels, dataset=ds).tolist() == expected
    assert accuracy("objectnet", torch.from_numpy(logits), ds.labels, root=objectnet) == pytest.approx(4 / 6)
    assert torch.equal(ds.collapse(torch.from_numpy(logits)), torch.from_numpy(collapsed))
    assert label_space("objectnet", objectnet).classnames == ds.classnames


def test_two_pixel_red_border_is_cropped(objectnet):
    ds = open_dataset("objectnet", objectnet)
    raw = np.asarray(Image.open(ds.files[0]).convert("RGB"))
    assert raw.shape == (30, 40, 3)
    assert (raw[:2] == (255, 0, 0)).all() and (raw[:, -2:] == (255, 0, 0)).all()
    image, _ = ds[0]
    assert image.size == (36, 26)
    assert np.array_equal(np.asarray(image), raw[2:-2, 2:-2])


def test_mapping_formats_are_the_downloads(objectnet):
    maps = objectnet / "mappings"
    assert json.loads((maps / "folder_to_objectnet_label.json").read_text())["winter_glove"] == "Winter glove"
    to_imagenet = json.loads((maps / "objectnet_to_imagenet_1k.json").read_text())
    assert to_imagenet["Tie"] == "bow tie, bow-tie, bowtie; Windsor tie"
    p2012 = json.loads((maps / "pytorch_to_imagenet_2012_id.json").read_text())
    lines = (maps / "imagenet_to_label_2012_v2").read_text().splitlines()
    assert len(p2012) == len(lines) == 1000
    assert lines[p2012[str(imagenet_index()["n03775071"])]] == "mitten"


def test_malformed_mappings_name_the_file(objectnet):
    maps = objectnet / "mappings"
    names = maps / "imagenet_to_label_2012_v2"
    text = names.read_text()
    names.write_text(text.replace("\nmitten\n", "\nmittens\n"))
    with pytest.raises(DatasetLayoutError, match=r"imagenet_to_label_2012_v2: expected one line 'mitten' "
                                                 r"\(named for 'Winter glove'.*found no such line"):
        open_dataset("objectnet", objectnet)
    names.write_text(text)
    (maps / "objectnet_to_imagenet_1k.json").write_text("{not json")
    with pytest.raises(DatasetLayoutError, match="objectnet_to_imagenet_1k.json: expected a JSON object.*invalid JSON"):
        open_dataset("objectnet", objectnet)
    (maps / "objectnet_to_imagenet_1k.json").unlink()
    with pytest.raises(DatasetLayoutError, match="objectnet_to_imagenet_1k.json: expected .*found no such file"):
        open_dataset("objectnet", objectnet)


def test_layout_errors(objectnet, tmp_path):
    with pytest.raises(DatasetLayoutError, match=r"nowhere does not exist; expected <root>/images/<folder>/\*\.png "
                                                 r"and <root>/mappings/"):
        open_dataset("objectnet", tmp_path / "nowhere")
    (objectnet / "images" / "mystery").mkdir()
    with pytest.raises(DatasetLayoutError, match="folder 'mystery' is not a folder named in "
                                                 "mappings/folder_to_objectnet_label.json"):
        open_dataset("objectnet", objectnet)
    # Pointing at images/ instead of the download's root.
    with pytest.raises(DatasetLayoutError, match="images/images does not exist; expected <root>/images/"):
        open_dataset("objectnet", objectnet / "images")
