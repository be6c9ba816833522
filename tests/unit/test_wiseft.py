"""WiSE-FT (Appendix I): the mixture's endpoints are the two models bit for bit, incompatible pairs
are refused, and a sweep runs through the extraction engine with in-memory mixtures."""
import copy
import dataclasses

import numpy as np
import pytest
import torch
import yaml

from helpers.config import load_profile
from helpers.training.finetune import FinetuneRecipe, finetune
from helpers.demo.fixtures import DEMO_CLASSES, write_broden, write_imagenet
from helpers.models import load
from helpers.training.supervised import initial_model
from helpers.engine.mixtures import WiseFTError, evaluate, interpolate, mixture_path

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


def _direct(model, profile, dataset):
    """h of ``model`` on ``dataset`` by the model's own preprocess and encoder, images in file order."""
    from helpers.data import open_broden, open_dataset

    root = profile.dataset_root(dataset)
    ds = open_broden(root) if dataset == "broden" else open_dataset(dataset, root)
    with torch.no_grad():
        x = torch.stack([model.preprocess(ds.load_image(i)) for i in range(len(ds.files))])
        h = torch.cat([model.encode(x[i:i + 8]) for i in range(0, len(x), 8)]).double().numpy()
    return h, np.asarray(ds.labels)


def _unique_concepts_by_hand(h, W, sets, threshold):
    """Eq. (4) from scratch: numpy SVD of W, projections on its right singular vectors, sklearn's AP
    of v and -v on each concept's balanced set, concepts whose best direction reaches the threshold."""
    from sklearn.metrics import average_precision_score

    _, sigma, Vt = np.linalg.svd(np.asarray(W, dtype=np.float64), full_matrices=False)
    Vt = Vt[sigma > max(W.shape) * np.finfo(np.float32).eps * sigma[0]]
    z = h @ Vt.T
    hits = 0
    for c in sets.probed:
        m = sets.selection[:, c]
        y = sets.presence[m, c]
        best = max(max(average_precision_score(y, z[m, i]), average_precision_score(y, -z[m, i]))
                   for i in range(z.shape[1]))
        hits += best >= threshold
    return hits


def test_sweep_values_equal_the_mixtures_recomputed_from_their_embeddings(profile):
    from scipy.stats import kurtosis as scipy_kurtosis

    from helpers.engine.probing import broden_sets

    # Two same-architecture entries with fast random heads stand for the pair: the plumbing is the same.
    alphas = [0.0, 0.5, 1.0]
    table = evaluate(profile, "sup-a", "sup-b", alphas=alphas, datasets=("imagenet",), save=True)
    assert list(table["alpha"]) == alphas and "er" not in table
    a, b = load(profile.entry("sup-a")), load(profile.entry("sup-b"))
    sets = broden_sets(profile)
    for alpha, row in zip(alphas, table.itertuples()):
        model = interpolate(a, b, alpha)
        W, bias = model.head.detach().double().numpy(), model.bias.detach().double().numpy()
        h, labels = _direct(model, profile, "imagenet")
        assert row.imagenet == np.mean((h @ W.T + bias).argmax(axis=1) == labels), alpha
        assert row.kurtosis == pytest.approx(scipy_kurtosis(h, axis=1, fisher=False).mean(), rel=1e-4), alpha
        hb, _ = _direct(model, profile, "broden")
        assert row.unique_concepts == _unique_concepts_by_hand(hb, W, sets, 0.9), alpha
    assert len(set(table["kurtosis"])) == 3  # the mixture is neither endpoint
    saved = mixture_path(profile, profile.entry("sup-b"), 0.5)
    entry = dataclasses.replace(profile.entry("sup-b"), id="mix", checkpoint=str(saved))
    assert torch.equal(load(entry).head, interpolate(a, b, 0.5).head)


def test_mixtures_cache_only_their_summaries(profile):
    # Mixtures keep the numbers their figures read (accuracy, kurtosis, AP), never activations.
    evaluate(profile, "sup-a", "sup-b", alphas=[0.3], datasets=("imagenet",))
    cache = profile.cache_dir
    assert not list((cache / "activations").glob("sup-b.wiseft-*"))
    assert list((cache / "summaries" / "sup-b.wiseft-0.30").glob("imagenet-*/manifest.json"))
    assert list((cache / "concepts" / "sup-b.wiseft-0.30").glob("*.npy"))
