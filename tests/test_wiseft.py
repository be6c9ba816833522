"""WiSE-FT (Appendix I): the mixture's endpoints are the two models bit for bit, incompatible pairs
are refused, and a sweep runs through the extraction engine with in-memory mixtures."""
import copy
import dataclasses

import numpy as np
import pytest
import torch
import yaml

from helpers.config import load_profile
from helpers.finetune import FinetuneRecipe, finetune
from helpers.fixtures import DEMO_CLASSES, write_broden, write_imagenet
from helpers.models import load
from helpers.supervised import initial_model
from helpers.wiseft import WiseFTError, evaluate, interpolate, mixture_path

POOL = [
    {"id": "zs-vit", "arch": "ViT-B-32", "family": "robust_zeroshot_clip", "pretraining": "x", "model": "demo-ViT-B-32"},
    {"id": "ft-vit", "arch": "ViT-B-32", "family": "finetuned_clip", "pretraining": "x", "model": "demo-ViT-B-32",
     "finetuned_from": "zs-vit"},
    {"id": "sup-a", "arch": "ViT-B-32", "family": "supervised", "pretraining": "x", "model": "demo-ViT-B-32", "seed": 1},
    {"id": "sup-b", "arch": "ViT-B-32", "family": "supervised", "pretraining": "x", "model": "demo-ViT-B-32", "seed": 2},
    {"id": "sup-rn", "arch": "RN50", "family": "supervised", "pretraining": "x", "model": "demo-RN50"},
]


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    root = tmp_path_factory.mktemp("wiseft")
    for split in ("train", "val"):
        write_imagenet(root / "data", split, classes=DEMO_CLASSES[:2], per_class=4, size=(64, 48))
    write_broden(root / "data" / "broden", n_images=48)
    raw = {"profile": "wiseft-test", "allow_random_init": True, "batch_size": 8,
           "metrics": {"broden_min_positives": 4},
           "paths": {"data_root": str(root / "data"), "cache_dir": str(root / "cache"),
                     "results_dir": str(root / "results")},
           "datasets": {"imagenet": "{data_root}/val", "imagenet-train": "{data_root}/train",
                        "broden": "{data_root}/broden"}, "pool": POOL}
    (root / "profile.yml").write_text(yaml.safe_dump(raw))
    return load_profile(root / "profile.yml")


@pytest.fixture(scope="module")
def pair(profile):
    """A zero-shot model (one-template head, fast) and the model finetuned from it for two steps."""
    zs = load(profile.entry("zs-vit"), templates=["a photo of a {}."])
    recipe = FinetuneRecipe().replace(epochs=1, batch_size=4, warmup_steps=1, lr=1e-3)
    result = finetune(profile, "ft-vit", recipe, start=copy.deepcopy(zs))
    ft = load(dataclasses.replace(profile.entry("ft-vit"), checkpoint=str(result.final)))
    return zs, ft


@pytest.fixture(scope="module")
def images(profile, pair):
    from helpers.data import open_dataset

    ds = open_dataset("imagenet", profile.dataset_root("imagenet"), transform=pair[0].to_uint8)
    return pair[0].normalize_input(torch.stack([ds[i][0] for i in range(len(ds))]))


def test_endpoints_are_the_two_models_exactly(pair, images):
    zs, ft = pair
    with torch.no_grad():
        assert torch.equal(interpolate(zs, ft, 0.0)(images), zs(images))
        assert torch.equal(interpolate(zs, ft, 1.0)(images), ft(images))
        middle = interpolate(zs, ft, 0.5)
        assert not torch.equal(middle(images), zs(images)) and not torch.equal(middle(images), ft(images))
    for k, v in middle.state_dict().items():  # every parameter, the head included, is the average
        torch.testing.assert_close(v, 0.5 * zs.state_dict()[k] + 0.5 * ft.state_dict()[k], msg=k)
    assert middle.entry.id == "ft-vit.wiseft-0.50" and middle.weights_digest not in (zs.weights_digest, ft.weights_digest)


def test_reused_output_gives_the_same_mixture(pair, images):
    zs, ft = pair
    out = interpolate(zs, ft, 0.3)
    again = interpolate(zs, ft, 0.7, out=interpolate(zs, ft, 0.3))
    with torch.no_grad():
        assert torch.equal(again(images), interpolate(zs, ft, 0.7)(images))
        assert torch.equal(out(images), interpolate(zs, ft, 0.3)(images))


def test_incompatible_models_are_refused(profile, pair):
    zs, _ = pair
    with pytest.raises(WiseFTError, match=r"cannot interpolate 'zs-vit' \(open_clip demo-ViT-B-32\) with 'sup-rn' "
                                          r"\(open_clip demo-RN50\): different architectures"):
        interpolate(zs, initial_model(profile, "sup-rn"), 0.5)
    with pytest.raises(WiseFTError, match="one computes W h/\\|\\|h\\|\\|, the other W h \\+ b"):
        interpolate(zs, initial_model(profile, "sup-a"), 0.5)
    with pytest.raises(WiseFTError, match="alpha must be in"):
        interpolate(zs, zs, 1.5)


def test_sweep_runs_through_the_extraction_engine(profile):
    from helpers.extract import activations

    # Two same-architecture entries with fast random heads stand for the pair: the plumbing is the same.
    table = evaluate(profile, "sup-a", "sup-b", alphas=[0.0, 0.5, 1.0], datasets=("imagenet",), save=True)
    assert list(table["alpha"]) == [0.0, 0.5, 1.0] and "er" not in table
    assert (table["unique_concepts"] >= 0).all()
    assert table["imagenet"].iloc[0] == activations("sup-a", "imagenet", profile).accuracy
    assert table["imagenet"].iloc[2] == activations("sup-b", "imagenet", profile).accuracy
    assert np.isfinite(table["kurtosis"]).all()
    saved = mixture_path(profile, profile.entry("sup-b"), 0.5)
    entry = dataclasses.replace(profile.entry("sup-b"), id="mix", checkpoint=str(saved))
    mixed = interpolate(load(profile.entry("sup-a")), load(profile.entry("sup-b")), 0.5)
    assert torch.equal(load(entry).head, mixed.head)


def test_mixture_concept_count_matches_the_concept_chapter(profile):
    from helpers.chapters.common import head
    from helpers.chapters.concept_probing import ap_matrix
    from helpers.extract import activations
    from helpers.metrics import unique_concepts
    from helpers.wiseft import unique_concepts_of

    # The count a mixture gets (from its activations and head) is the one the concept-probing
    # chapter gives a pool entry (from its cached AP matrix).
    for e in ("sup-a", "sup-b"):
        W, _, _ = head(profile.entry(e), profile)
        mine = unique_concepts_of(profile, activations(e, "broden", profile), W)
        assert mine == unique_concepts(np.nan_to_num(ap_matrix(profile.entry(e), profile)), 0.9)
