"""Layer-by-layer CKA (Appendix C, Figures 7-8) against torch_cka 0.21 (PyTorch-Model-Compare, the tool
the paper names), and the three places where torch_cka goes wrong, pinned down.

A (zero-shot, finetuned) pair of the demo's architectures (demo ViT-B-32 and demo RN50; the
"finetuned" member is the zero-shot one with perturbed weights, saved as a classifier checkpoint)
runs over a fixture ImageNet. Our side: the extraction engine's pooled layer outputs
(``helpers.engine.extract.layer_activations``) fed minibatch by minibatch to ``helpers.metrics.MinibatchCKA``.
torch_cka's side: its own forward hooks and HSIC on a wrapper of each encoder whose tap modules emit
the pooled 2-D tensors (the pooling written out here, not the engine's: ViT blocks' class token and
mean patch token, ResNet stages averaged over space, and the embedding h), over a DataLoader of the
same images in the same minibatches.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch_cka import CKA

from helpers.engine import extract
from helpers.demo import fixtures
from helpers import models
from helpers.config import load_profile
from helpers.data import open_dataset
from helpers.metrics import MinibatchCKA

N_PER_CLASS, BATCH = 3, 8  # 24 images: three minibatches of 8
#: torch_cka forms its Gram matrices in the features' dtype and its HSIC from uncentred sums, which
#: lose digits to cancellation in float32; it accumulates into a float32 grid. Ours is float64
#: throughout. Fed float64 features, torch_cka gives our grid to TOLERANCE (the same estimator);
#: fed the float32 features a model emits, to FLOAT32_TOLERANCE.
TOLERANCE = 1e-5
FLOAT32_TOLERANCE = 2e-3
PAIRS = [("vit", "demo-ViT-B-32", 4), ("rn", "demo-RN50", 0)]


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    root = tmp_path_factory.mktemp("peer-cka")
    fixtures.write_imagenet(root / "imagenet", "val", per_class=N_PER_CLASS, size=(120, 90))
    pool = []
    for tag, model, seed in PAIRS:
        arch = "RN50" if tag == "rn" else "ViT-B-32"
        pool += [{"id": f"{tag}-zs", "arch": arch, "family": "robust_zeroshot_clip", "pretraining": "random init",
                  "model": model, "seed": seed},
                 {"id": f"{tag}-ft", "arch": arch, "family": "finetuned_clip", "pretraining": "perturbed",
                  "model": model, "finetuned_from": f"{tag}-zs", "checkpoint": "{data_root}/" + f"{tag}-ft.pt"}]
    raw = {"profile": "peer-cka", "kind": "smoke", "allow_random_init": True, "batch_size": BATCH,
           "zero_shot_templates": 1,
           "paths": {"data_root": str(root), "cache_dir": str(root / "cache"), "results_dir": str(root / "results")},
           "datasets": {"imagenet": "{data_root}/imagenet/val"}, "pool": pool}
    (root / "p.yml").write_text(yaml.safe_dump(raw))
    P = load_profile(root / "p.yml")
    for tag, _, _ in PAIRS:
        zs = models.load_from_profile(P, f"{tag}-zs")
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in zs.encoder.parameters():
                if p.is_floating_point() and p.numel() > 1:
                    p.add_(0.3 * p.std() * torch.randn(p.shape, generator=g))
        models.save_classifier(zs, root / f"{tag}-ft.pt", entry=f"{tag}-ft")
    return P


class PooledTaps(nn.Module):
    """An encoder whose pooled layer outputs pass through ``nn.Identity`` taps named after the layers,
    so torch_cka's hooks see (batch, features) tensors. ``reverse_registration`` registers the taps in
    the opposite order to the one they are called in."""

    def __init__(self, lm: models.LoadedModel, reverse_registration: bool = False, dtype=torch.float64):
        super().__init__()
        self.lm, self.dtype = lm, dtype
        self.layers = extract.layer_names(lm)
        order = self.layers[::-1] if reverse_registration else self.layers
        self.taps = nn.ModuleDict({n.replace(".", "_"): nn.Identity() for n in order})
        self._out = {}
        if lm.arch_kind == "modified_resnet":
            for stage in ("layer1", "layer2", "layer3", "layer4"):
                getattr(lm.encoder, stage).register_forward_hook(
                    lambda _m, _i, y, stage=stage: self._out.__setitem__(stage, y.mean(dim=(2, 3))))
        else:
            for i, block in enumerate(lm.encoder.transformer.resblocks):
                def pool(_m, _i, y, i=i):  # open_clip 3.x: batch-first (B, 1 + patches, width)
                    width = len(str(len(lm.encoder.transformer.resblocks) - 1))
                    self._out[f"block{i:0{width}d}.cls"] = y[:, 0]
                    self._out[f"block{i:0{width}d}.mean"] = y[:, 1:].mean(dim=1)
                block.register_forward_hook(pool)

    def forward(self, x):
        self._out.clear()
        self._out["embedding"] = self.lm.encode(self.lm.normalize_input(x))
        return [self.taps[n.replace(".", "_")](self._out[n].to(self.dtype)) for n in self.layers]

    def tap_names(self):
        return ["taps." + n.replace(".", "_") for n in self.layers]


def _images(P):
    """The fixture ImageNet as the engine's uint8 pixels (the store's geometry, in dataset order)."""
    lm = models.load_from_profile(P, "vit-zs")
    ds = open_dataset("imagenet", P.dataset_root("imagenet"))
    return torch.stack([lm.to_uint8(ds.load_image(i)) for i in range(len(ds))])


def _torch_cka(m1, m2, images, batch, layers1=None, layers2=None, images2=None):
    dl = DataLoader(TensorDataset(images), batch_size=batch, shuffle=False)
    dl2 = dl if images2 is None else DataLoader(TensorDataset(images2), batch_size=batch, shuffle=False)
    cka = CKA(m1, m2, model1_name="zero-shot", model2_name="finetuned", model1_layers=layers1 or m1.tap_names(),
              model2_layers=layers2 or m2.tap_names(), device="cpu")
    # torch_cka makes its vector of ones and its grid in the default dtype: float64 with float64 taps
    default = torch.get_default_dtype()
    torch.set_default_dtype(getattr(m1, "dtype", torch.float32))
    try:
        with torch.no_grad():
            cka.compare(dl, dl2)
    finally:
        torch.set_default_dtype(default)
    return cka.export()


def _ours(P, zs, ft, batch):
    la = extract.layer_activations(zs, "imagenet", P)
    lb = extract.layer_activations(ft, "imagenet", P)
    acc = MinibatchCKA(list(la), list(lb))
    n = len(next(iter(la.values())))
    for lo in range(0, n, batch):
        acc.update({k: np.asarray(v[lo:lo + batch]) for k, v in la.items()},
                   {k: np.asarray(v[lo:lo + batch]) for k, v in lb.items()})
    return acc.compute(), la


@pytest.mark.parametrize("tag", [t for t, _, _ in PAIRS])
def test_cka_grid_equals_torch_cka(profile, tag):
    P = profile
    zs, ft = (models.load_from_profile(P, f"{tag}-{k}") for k in ("zs", "ft"))
    images = _images(P)
    m1, m2 = PooledTaps(zs), PooledTaps(ft)
    # the premise: the taps carry exactly the engine's pooled features
    ours, la = _ours(P, f"{tag}-zs", f"{tag}-ft", BATCH)
    with torch.no_grad():
        tapped = m1(images)
    for name, t in zip(m1.layers, tapped):
        np.testing.assert_allclose(t.numpy(), np.asarray(la[name]), rtol=1e-5, atol=1e-5, err_msg=name)
    theirs = _torch_cka(m1, m2, images, BATCH)
    grid = theirs["CKA"].numpy()
    assert grid.shape == ours.shape == (len(m1.layers), len(m2.layers))
    assert theirs["model1_layers"] == m1.tap_names()
    np.testing.assert_allclose(grid, ours, atol=TOLERANCE)
    print(f"\n{tag}: {grid.shape} grid, max |torch_cka - ours| = {np.abs(grid - ours).max():.2e} (float64 taps)")
    # not a trivial grid: the perturbed model's layers differ from the zero-shot ones
    assert np.diag(ours).min() < 0.99


def test_torch_cka_in_float32_loses_layers_with_a_large_mean_to_cancellation(profile):
    """With the float32 features a model emits, torch_cka's uncentred HSIC (sums of K and K L) cancels
    catastrophically when the features' mean dwarfs their spread: the demo RN50's stages (mean
    about 60 times the per-feature std in its embedding) give negative HSIC(K, K) and a NaN grid;
    the ViT's is off by up to FLOAT32_TOLERANCE. MinibatchCKA U-centres in float64."""
    P = profile
    images = _images(P)
    for tag in ("vit", "rn"):
        zs, ft = (models.load_from_profile(P, f"{tag}-{k}") for k in ("zs", "ft"))
        ours, _ = _ours(P, f"{tag}-zs", f"{tag}-ft", BATCH)
        m1, m2 = PooledTaps(zs, dtype=torch.float32), PooledTaps(ft, dtype=torch.float32)
        if tag == "rn":
            with pytest.raises(AssertionError, match="HSIC computation resulted in NANs"):
                _torch_cka(m1, m2, images, BATCH)
            continue
        single = _torch_cka(m1, m2, images, BATCH)["CKA"].numpy()
        np.testing.assert_allclose(single, ours, atol=FLOAT32_TOLERANCE)
        print(f"\n{tag}: max |torch_cka - ours| = {np.abs(single - ours).max():.2e} (float32 taps)")


def test_torch_cka_fails_on_batches_below_four_images(profile):
    """24 images in batches of 7 leave a last batch of 3: the unbiased HSIC divides by n (n - 3).
    torch_cka divides by zero; MinibatchCKA refuses the batch by name, and the chapter drops it
    (at most 3 images)."""
    P = profile
    zs, ft = (PooledTaps(models.load_from_profile(P, f"vit-{k}")) for k in ("zs", "ft"))
    images = _images(P)
    with pytest.raises(ZeroDivisionError):
        _torch_cka(zs, ft, images, 7)
    with pytest.raises(AssertionError, match="HSIC computation resulted in NANs"):
        _torch_cka(zs, ft, images[:22], 4)  # last batch of 2: 0 / 0 in its (n - 2) terms
    with torch.no_grad():
        x, y = zs(images[:3]), ft(images[:3])
    with pytest.raises(ValueError, match="at least 4 images per batch"):
        MinibatchCKA().update({"a": x[0]}, {"b": y[0]})


def test_torch_cka_labels_follow_module_order_but_rows_follow_call_order(profile):
    """Register the taps in reverse: torch_cka labels its rows by ``named_modules`` order (reversed)
    while its features, and so its rows, come in forward-call order. Its labels are then wrong for
    every row but the middle one; MinibatchCKA keys each row by the name it was given."""
    P = profile
    zs = models.load_from_profile(P, "vit-zs")
    ft = models.load_from_profile(P, "vit-ft")
    m1, m2 = PooledTaps(zs, reverse_registration=True), PooledTaps(ft)
    out = _torch_cka(m1, m2, _images(P), BATCH)
    ours, _ = _ours(P, "vit-zs", "vit-ft", BATCH)
    assert out["model1_layers"] == m1.tap_names()[::-1]  # the labels it reports
    np.testing.assert_allclose(out["CKA"].numpy(), ours, atol=TOLERANCE)  # rows: call order
    wrong = np.abs(out["CKA"].numpy()[::-1] - ours).max()
    assert wrong > 0.05  # reading its rows by its labels misattributes them


class TokenMajor(nn.Module):
    """Emits one ViT block's tokens seq-first (tokens, batch, width), as open_clip 2.x and
    nn.MultiheadAttention lay them out."""

    def __init__(self, lm, block: int):
        super().__init__()
        self.lm, self.tap = lm, nn.Identity()
        self._y = None
        lm.encoder.transformer.resblocks[block].register_forward_hook(lambda _m, _i, y: setattr(self, "_y", y))

    def forward(self, x):
        self.lm.encode(self.lm.normalize_input(x))
        return self.tap(self._y.permute(1, 0, 2))


def test_torch_cka_flattens_token_major_tensors_into_a_token_gram(profile):
    """Given (tokens, batch, width) tensors, torch_cka's ``flatten(1)`` makes one row per token: its
    "CKA" compares tokens, not images, and raises nothing. It equals the unbiased CKA of the
    tokens x (batch * width) matrices, and so it does not notice when the second model sees the
    images in another order (a permutation of feature columns), where an image-level CKA collapses.
    MinibatchCKA refuses 3-D input."""
    P = profile
    zs, ft = (models.load_from_profile(P, f"vit-{k}") for k in ("zs", "ft"))
    m1, m2 = TokenMajor(zs, 0), TokenMajor(ft, 0)
    images = _images(P)[:BATCH]
    shuffled = images[torch.tensor([1, 2, 3, 4, 5, 6, 7, 0])]
    aligned = float(_torch_cka(m1, m2, images, BATCH, ["tap"], ["tap"])["CKA"][0, 0])
    misaligned = float(_torch_cka(m1, m2, images, BATCH, ["tap"], ["tap"], images2=shuffled)["CKA"][0, 0])
    with torch.no_grad():
        a, b, b_shuffled = m1(images), m2(images), m2(shuffled)
    token_gram = MinibatchCKA(["a"], ["b"])
    token_gram.update({"a": a.flatten(1)}, {"b": b.flatten(1)})
    assert aligned == pytest.approx(float(token_gram.compute()[0, 0]), abs=1e-4)
    assert misaligned == pytest.approx(aligned, abs=1e-4)  # blind to which image is which
    cls_aligned, cls_misaligned = MinibatchCKA(["a"], ["b"]), MinibatchCKA(["a"], ["b"])
    cls_aligned.update({"a": a[0]}, {"b": b[0]})  # the class token of each image
    cls_misaligned.update({"a": a[0]}, {"b": b_shuffled[0]})
    assert float(cls_aligned.compute()[0, 0]) - float(cls_misaligned.compute()[0, 0]) > 0.3
    print(f"\ntoken-major: torch_cka {aligned:.4f} aligned, {misaligned:.4f} misaligned; class token "
          f"{float(cls_aligned.compute()[0, 0]):.4f} aligned, {float(cls_misaligned.compute()[0, 0]):.4f} misaligned")
    with pytest.raises(ValueError, match="Pool or select tokens first"):
        MinibatchCKA().update({"a": a}, {"b": b})
