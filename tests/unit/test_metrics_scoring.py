"""The scoring rule of Section 3 (helpers.data.scoring) against a plain argmax written out here:
which label space each dataset is scored in, the edges of the label check, and the refusals."""
import numpy as np
import pytest
import torch

from helpers.data import accuracy, correct, label_space
from helpers.data.classes import imagenet_a_wnids, imagenet_index, imagenet_r_wnids
from helpers.data.scoring import FULL_IMAGENET


@pytest.mark.parametrize("name", FULL_IMAGENET)
def test_full_imagenet_datasets_score_all_1000_classes(name):
    space = label_space(name)
    assert space.num_classes == 1000 and space.is_identity and space.name == name
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 1000))
    labels = rng.integers(0, 1000, size=50)
    labels[:20] = logits[:20].argmax(axis=1)  # 20 right by construction (the others almost surely wrong)
    expected = logits.argmax(axis=1) == labels
    assert correct(name, logits, labels).tolist() == expected.tolist()
    assert accuracy(name, logits, labels) == pytest.approx(expected.mean()) and expected.sum() >= 20


@pytest.mark.parametrize("name,wnids", [("imagenet-r", imagenet_r_wnids), ("imagenet-a", imagenet_a_wnids)])
def test_200_class_shifts_take_the_argmax_among_their_classes(name, wnids):
    cols = np.array([imagenet_index()[w] for w in wnids()])
    space = label_space(name)
    assert space.num_classes == 200 and space.imagenet_indices.tolist() == cols.tolist() and space.name == name
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(40, 1000))
    labels = rng.integers(0, 200, size=40)
    labels[:10] = logits[:10][:, cols].argmax(axis=1)
    expected = logits[:, cols].argmax(axis=1) == labels  # by hand: the 200 columns, then argmax
    assert correct(name, logits, labels).tolist() == expected.tolist()
    assert accuracy(name, torch.from_numpy(logits).float(), labels) == pytest.approx(expected.mean())
    # the largest label is in range, one past it is not
    edge = labels.copy()
    edge[0] = 199
    assert correct(name, logits, edge).shape == (40,)
    edge[0] = 200
    with pytest.raises(ValueError, match=f"{name}: labels must lie in the dataset's label space 0..199, found"):
        correct(name, logits, edge)
    edge[0] = -1
    with pytest.raises(ValueError, match=r"found -1\.\."):
        correct(name, logits, edge)


def test_label_zero_and_one_image_are_accepted():
    logits = np.zeros((1, 1000))
    logits[0, 0] = 1.0
    assert correct("imagenet", logits, np.array([0])).tolist() == [True]
    assert accuracy("imagenet", logits, np.array([1])) == 0.0


def test_refusals_name_the_dataset_and_what_was_expected():
    with pytest.raises(ValueError, match=r"imagenet: expected N x 1000 logits and N labels with N > 0, found "
                                         r"logits of shape \(0, 1000\) and labels of shape \(0,\)"):
        correct("imagenet", np.zeros((0, 1000)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match=r"found logits of shape \(1000,\)"):
        correct("imagenet", np.zeros(1000), np.zeros(1, dtype=int))
    with pytest.raises(ValueError, match=r"labels of shape \(2, 1\)"):
        correct("imagenet", np.zeros((2, 1000)), np.zeros((2, 1), dtype=int))
    with pytest.raises(ValueError, match="unknown dataset 'imagenet-c'; expected one of imagenet, imagenet-train, "
                                         "imagenet-v2, imagenet-sketch, imagenet-r, imagenet-a, objectnet"):
        label_space("imagenet-c")
    with pytest.raises(ValueError, match=r"^objectnet: scoring needs the mapping files: pass the dataset object or "
                                         r"the objectnet-1\.0 root \(the folder holding mappings/\)$"):
        label_space("objectnet")
    # 1-D logits with as many values as labels: still refused by shape, not scored
    with pytest.raises(ValueError, match=r"found logits of shape \(2,\) and labels of shape \(2,\)"):
        correct("imagenet", np.zeros(2), np.zeros(2, dtype=int))

    class Other:
        name = "imagenet-r"
    with pytest.raises(ValueError, match="accuracy for 'imagenet-a' was given the 'imagenet-r' dataset"):
        accuracy("imagenet-a", np.zeros((1, 1000)), np.zeros(1, dtype=int), dataset=Other())


def test_a_given_dataset_supplies_its_label_space():
    class TwoClasses:
        name = "objectnet"
        label_space = type("Space", (), {"num_classes": 2,
                                         "collapse": staticmethod(lambda x: np.stack([x[:, :500].max(1),
                                                                                      x[:, 500:].max(1)], 1))})()
    logits = np.zeros((3, 1000))
    logits[0, 10], logits[1, 900], logits[2, 499] = 1, 1, 1
    assert correct("objectnet", logits, np.array([0, 1, 1]), dataset=TwoClasses()).tolist() == [True, True, False]
    assert accuracy("objectnet", torch.from_numpy(logits), torch.tensor([0, 1, 1]),
                    dataset=TwoClasses()) == pytest.approx(2 / 3)
