"""helpers.models: weights resolution, QuickGELU, zero-shot head (Section 2), checkpoints, demo pool.

Real components throughout: open_clip builds and loads every CLIP / CoCa, torchvision every
supervised ViT. Models are the demo sizes except where a real architecture is the point (tags,
QuickGELU on the meta device, one RN50 read from a hub cache laid out as Hugging Face writes it).
"""
import dataclasses
import hashlib
import json
import os

import pytest
import torch
import torch.nn.functional as F

from helpers import models
from helpers.config import PoolEntry, load_profile

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # On a shared CPU, two torch threads spin-wait on each other: these tiny models run several
    # times faster on one.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def paper():
    return load_profile("paper")


@pytest.fixture(scope="module")
def demo(tmp_path_factory, demo_prepared):
    return load_profile("demo", overrides={"paths.cache_dir": str(tmp_path_factory.mktemp("demo-cache"))})


@pytest.fixture(scope="module")
def demo_models(demo):
    """Every demo entry, loaded once through the profile (zero-shot heads computed once)."""
    return {e.id: models.load_from_profile(demo, e.id, device="cpu") for e in demo.pool}


def images(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 224, 224), dtype=torch.uint8, generator=g)


def entry(**kw):
    base = dict(id="t", arch="ViT-B-32", family="imagenet_captions_clip", pretraining="test", model="demo-ViT-B-32")
    return PoolEntry(**{**base, **kw})


# ---- open_clip tags and QuickGELU over the paper's pool --------------------------------------


def test_paper_open_clip_tags_are_listed_and_every_entry_checks(paper):
    import open_clip

    listed = set(open_clip.list_pretrained())
    tagged = [e for e in paper.pool if e.pretrained]
    assert len(tagged) == 18
    for e in tagged:
        assert (e.model, e.pretrained) in listed, e.id
    for e in paper.pool:
        models.check_entry(e, paper.pool)


def _trained_with_quick_gelu(e, pool):
    """The rule as book/methods.md's facts state it: every openai, yfcc15m and cc12m tag, and ViT-B-32
    laion400m_e31/e32, inherited by the models finetuned from them."""
    by_id = {x.id: x for x in pool}
    while e.pretrained is None and e.finetuned_from:
        e = by_id[e.finetuned_from]
    if e.pretrained is None:
        return None
    return e.pretrained in ("openai", "yfcc15m", "cc12m") or (
        e.arch == "ViT-B-32" and e.pretrained in ("laion400m_e31", "laion400m_e32"))


def test_quick_gelu_rule_over_the_paper_pool(paper):
    from open_clip.transformer import QuickGELU

    built = {}
    for e in paper.pool:
        expected = _trained_with_quick_gelu(e, paper.pool)
        assert models.quick_gelu_required(e, paper.pool) == expected, e.id
        if e.source != "open_clip" or expected is None:
            continue
        if e.model not in built:  # the structure only: no weights, no memory
            arch = models.build_architecture(e, device="meta")
            built[e.model] = any(isinstance(m, QuickGELU) for m in arch.modules())
        assert built[e.model] == expected, e.id
    assert built["RN50-quickgelu"] and built["ViT-B-32-quickgelu"] and not built["ViT-B-16"]


def test_plain_gelu_on_quick_gelu_weights_is_refused(paper):
    wrong = dataclasses.replace(paper.entry("ViT-B-32-laion400m"), model="ViT-B-32")
    with pytest.raises(models.ModelError, match="ViT-B-32-quickgelu"):
        models.load(wrong)
    child = dataclasses.replace(paper.entry("RN50-openai-ft"), model="RN50")
    with pytest.raises(models.ModelError, match="RN50-quickgelu"):
        models.check_entry(child, paper.pool)


def test_unknown_tag_lists_close_alternatives(paper):
    wrong = dataclasses.replace(paper.entry("ViT-B-16-laion400m"), pretrained="laion400m_e33")
    with pytest.raises(models.ModelError, match="laion400m_e32") as err:
        models.check_entry(wrong)
    assert "list_pretrained" in str(err.value)


def _no_download(monkeypatch):
    """Make any download or connection attempt fail the test."""
    import socket

    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError("a download or connection was attempted")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_missing_weights_fail_at_once_naming_entry_tag_and_repo(paper, tmp_path, monkeypatch):
    e = paper.entry("RN50-openai")
    _no_download(monkeypatch)  # offline: the error comes without trying the network
    with pytest.raises(models.MissingWeightsError) as err:
        models.load(e, hf_cache=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written into the hub cache
    msg = str(err.value)
    assert "HF_HUB_OFFLINE is set" in msg
    for needle in ("RN50-openai", "RN50-quickgelu", "'openai'", "timm/resnet50_clip.openai", "checkpoint:",
                   str(tmp_path)):
        assert needle in msg


def test_tag_weights_read_from_a_hub_cache(paper, tmp_path):
    """A hub cache as huggingface_hub lays it out (blob named by its sha256, snapshot symlink)."""
    e = paper.entry("RN50-openai")
    reference = models.build_architecture(e)
    blob_tmp = tmp_path / "weights.bin"
    torch.save(reference.state_dict(), blob_tmp)
    sha = models.file_sha256(blob_tmp)
    repo = tmp_path / "hub" / "models--timm--resnet50_clip.openai"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    blob_tmp.rename(repo / "blobs" / sha)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_pytorch_model.bin").symlink_to(f"../../blobs/{sha}")

    lm = models.load(e, cache_dir=tmp_path / "cache", hf_cache=tmp_path / "hub",
                     classnames=["tench", "goldfish"], templates=["a photo of a {}."])
    assert lm.arch_kind == "modified_resnet" and lm.image_mean == OPENAI_MEAN
    # The digest covers the weights' bytes: sha256 of the blob, read here, inside the documented
    # recipe sha256(JSON [source, model, tag, content sha256]).
    content = hashlib.sha256((repo / "blobs" / sha).read_bytes()).hexdigest()
    assert content == sha
    assert lm.weights_digest == hashlib.sha256(json.dumps(["open_clip", "RN50-quickgelu", "openai", content]).encode()).hexdigest()
    x = lm.normalize_input(images(1))
    with torch.no_grad():
        assert torch.allclose(lm.encode(x), reference.eval().encode_image(x), atol=1e-5)


# ---- local files: open_clip state dicts, normalisation -----------------------------------------


def test_state_dict_file_loads_back_with_identical_embeddings(tmp_path):
    reference = models.build_architecture(entry(seed=11)).eval()
    path = tmp_path / "rn.pt"
    torch.save(reference.state_dict(), path)
    few = dict(classnames=["tench", "goldfish", "great white shark"], templates=["a photo of a {}.", "a {} toy."])
    lm = models.load(entry(checkpoint=str(path)), **few)
    x = lm.normalize_input(images())
    with torch.no_grad():
        assert torch.equal(lm.encode(x), reference.encode_image(x))
        import open_clip
        W = models.zero_shot_head(reference, open_clip.get_tokenizer("demo-ViT-B-32"), few["classnames"],
                                  few["templates"])
    assert torch.allclose(lm.head, W)
    content = hashlib.sha256(path.read_bytes()).hexdigest()
    assert lm.weights_digest == hashlib.sha256(json.dumps(["file", "demo-ViT-B-32", content]).encode()).hexdigest()
    path.write_bytes(path.read_bytes())  # same bytes, new mtime: the same digest
    assert models.load(entry(checkpoint=str(path)), **few).weights_digest == lm.weights_digest


def test_laion2b_vit_l_14_normalisation_survives_a_file(paper, tmp_path):
    laion = paper.entry("ViT-L-14-laion2b")
    assert models.preprocessing(laion).image_mean == (0.5, 0.5, 0.5)
    # from the tag itself, and from the entry when its weights come from a file
    assert models.preprocessing(dataclasses.replace(laion, image_mean=None, image_std=None)).image_std == (0.5,) * 3
    as_file = dataclasses.replace(laion, pretrained=None, checkpoint=str(tmp_path / "vitl.bin"))
    assert models.preprocessing(as_file).image_mean == (0.5, 0.5, 0.5)
    # a file alone carries no normalisation: the override is what keeps 0.5
    assert models.preprocessing(dataclasses.replace(as_file, image_mean=None, image_std=None)).image_mean == OPENAI_MEAN
    forgot = dataclasses.replace(paper.entry("ViT-L-14-laion2b-ft"), image_mean=None, image_std=None)
    with pytest.raises(models.ModelError, match="image_mean"):
        models.check_entry(forgot, paper.pool)

    # the same on a loaded (demo-size) model read from a file
    path = tmp_path / "demo.pt"
    torch.save(models.build_architecture(entry()).state_dict(), path)
    lm = models.load(entry(checkpoint=str(path), image_mean=(0.5,) * 3, image_std=(0.5,) * 3),
                     classnames=["tench"], templates=["{}"])
    assert lm.image_mean == lm.image_std == (0.5, 0.5, 0.5)
    white = torch.full((1, 3, 224, 224), 255, dtype=torch.uint8)
    assert torch.equal(lm.normalize_input(white), torch.ones(1, 3, 224, 224))


def test_preprocess_equals_open_clip_transform_and_the_uint8_path(demo_models):
    import open_clip
    from PIL import Image

    lm = demo_models["demo-vit-zeroshot"]
    g = torch.Generator().manual_seed(3)
    img = Image.fromarray(torch.randint(0, 256, (260, 300, 3), dtype=torch.uint8, generator=g).numpy())
    reference = open_clip.image_transform(224, is_train=False, mean=OPENAI_MEAN,
                                          std=(0.26862954, 0.26130258, 0.27577711))(img)
    assert torch.equal(lm.preprocess(img), reference)
    u8 = lm.to_uint8(img)
    assert u8.dtype == torch.uint8 and u8.shape == (3, 224, 224)
    assert torch.equal(lm.normalize_input(u8[None])[0], reference)
    assert lm.geometry_key == "224-bicubic-shortest"
    with pytest.raises(ValueError, match="demo-vit-zeroshot"):
        lm.normalize_input(torch.zeros(1, 3, 200, 200, dtype=torch.uint8))


# ---- zero-shot head (Section 2) ------------------------------------------------------------------


def test_zero_shot_head_matches_a_hand_computation():
    import open_clip

    clip = models.build_architecture(entry(seed=5)).eval()
    tok = open_clip.get_tokenizer("demo-ViT-B-32")
    classnames = ["goldfish", "tabby cat", "volcano"]
    templates = [lambda c: f"a photo of a {c}.", "a sketch of the {}."]
    W = models.zero_shot_head(clip, tok, classnames, templates, batch_size=2)
    rows = []
    with torch.no_grad():
        for c in classnames:
            texts = [templates[0](c), templates[1].format(c)]
            e = torch.stack([F.normalize(clip.encode_text(tok([t]))[0], dim=-1) for t in texts])
            m = e.mean(0)
            rows.append(clip.logit_scale.exp() * m / m.norm())
    assert W.shape == (3, 64)
    assert torch.allclose(W, torch.stack(rows), atol=1e-5)
    assert torch.allclose(W.norm(dim=1), clip.logit_scale.exp().expand(3))


def test_zero_shot_head_is_cached_and_reloaded_identical(demo, demo_models):
    first = demo_models["demo-vit-zeroshot"]
    assert first.head.shape == (1000, 64)
    files = list((demo.cache_dir / "heads").glob("*.pt"))
    assert files and not list((demo.cache_dir / "heads").glob(".*.tmp"))
    again = models.load_from_profile(demo, "demo-vit-zeroshot")
    assert "cached" in again.head_source
    assert torch.equal(again.head, first.head)
    assert again.weights_digest == first.weights_digest


# ---- logits -------------------------------------------------------------------------------------


def test_logits_normalised_for_clip_and_affine_for_supervised(demo_models):
    x = images()
    for eid, normalized in (("demo-rn-zeroshot", True), ("demo-coca-finetuned", True),
                            ("demo-rn-supervised", False), ("demo-vit-supervised", False)):
        lm = demo_models[eid]
        assert lm.normalize_features is normalized and (lm.bias is None) is normalized, eid
        with torch.no_grad():
            h = lm.encode(lm.normalize_input(x))
            logits = lm(lm.normalize_input(x))
        expected = (h / h.norm(dim=1, keepdim=True)) @ lm.head.T if normalized else h @ lm.head.T + lm.bias
        assert torch.allclose(logits, expected, atol=1e-5), eid


def test_encoder_output_is_encode_image_without_normalisation(demo):
    x = torch.randn(2, 3, 224, 224)
    # random-init entries, so build_architecture gives the same weights (demo-rn-captions: a modified ResNet)
    for eid in ("demo-rn-captions", "demo-vit-zeroshot", "demo-coca-zeroshot"):
        e = demo.entry(eid)
        clip = models.build_architecture(e).eval()  # same seed, same weights
        with torch.no_grad():
            reference = clip.encode_image(x, normalize=False)
            lm = models.load(e, classnames=["tench"], templates=["{}"]) if e.family != "supervised" else models.load(e)
            assert torch.equal(lm.encode(x), reference), eid


# ---- classifier checkpoints, torchvision files, unsafe files ----------------------------------------


def test_classifier_checkpoint_round_trips(demo_models, tmp_path):
    x = images()
    for eid in ("demo-vit-finetuned", "demo-rn-supervised", "demo-vit-supervised"):
        lm = demo_models[eid]
        path = models.save_classifier(lm, tmp_path / eid / "final.pt", epoch=3, note="test")
        raw = torch.load(path, weights_only=True)
        assert raw["format"] == models.CLASSIFIER_FORMAT and raw["entry"] == eid and raw["epoch"] == 3
        back = models.load(dataclasses.replace(lm.entry, checkpoint=str(path)))
        assert back.normalize_features == lm.normalize_features and back.arch_kind == lm.arch_kind
        assert back.state_dict().keys() == lm.state_dict().keys()
        for k, v in lm.state_dict().items():
            assert torch.equal(back.state_dict()[k], v), (eid, k)
        with torch.no_grad():
            assert torch.equal(back(back.normalize_input(x)), lm(lm.normalize_input(x)))
    with pytest.raises(ValueError, match="head"):
        models.save_classifier(lm, tmp_path / "x.pt", head=torch.zeros(1))


def test_classifier_checkpoint_for_another_model_is_refused(demo_models, tmp_path):
    path = models.save_classifier(demo_models["demo-vit-finetuned"], tmp_path / "vit.pt")
    wrong = dataclasses.replace(demo_models["demo-rn-finetuned"].entry, checkpoint=str(path))
    with pytest.raises(models.ModelError, match="demo-ViT-B-32"):
        models.load(wrong)


def test_torchvision_state_dict_loads_with_its_head(tmp_path):
    from helpers.demo.archs import demo_vit_b_32

    torch.manual_seed(0)
    net = demo_vit_b_32().eval()
    torch.nn.init.normal_(net.heads.head.weight)  # torchvision starts the head at zero
    path = tmp_path / "vit.pth"
    torch.save(net.state_dict(), path)
    e = PoolEntry(id="tv", arch="ViT-B-32", family="supervised", pretraining="test", source="torchvision",
                  model="demo_vit_b_32", checkpoint=str(path))
    lm = models.load(e)
    assert lm.arch_kind == "torchvision_vit" and not lm.normalize_features
    assert lm.image_mean == (0.485, 0.456, 0.406)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(lm(x), net(x), atol=1e-5)
        assert lm.encode(x).shape == (2, 64)


class _RunsCode:
    marker = None

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_checkpoint_that_would_run_code_is_refused(tmp_path):
    evil = _RunsCode()
    evil.marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"format": models.CLASSIFIER_FORMAT, "encoder": evil}, path)
    for e in (entry(family="finetuned_clip", checkpoint=str(path)), entry(checkpoint=str(path))):
        with pytest.raises(models.UnsafeCheckpointError, match="evil.pt"):
            models.load(e)
    assert not evil.marker.exists()


def test_missing_checkpoint_names_what_produces_it(tmp_path):
    e = entry(id="ft", family="finetuned_clip", checkpoint=str(tmp_path / "nope.pt"))
    with pytest.raises(models.MissingWeightsError, match="clip-study finetune --entry ft"):
        models.load(e)


# ---- the demo pool ------------------------------------------------------------------------------------


def test_every_demo_entry_loads_and_classifies_two_images(demo, demo_models):
    x = images()
    kinds = {}
    for e in demo.pool:
        lm = demo_models[e.id]
        # torchvision's ViTs are evaluated with torchvision's own preset (resize 256 bilinear, crop 224)
        expected = "bilinear" if e.source == "torchvision" else "bicubic"
        assert not lm.training and lm.image_size == 224 and lm.interpolation == expected, e.id
        with torch.no_grad():
            logits = lm(lm.normalize_input(x))
        assert logits.shape == (2, 1000) and torch.isfinite(logits).all(), e.id
        kinds[e.id] = lm.arch_kind
        layers = {"vit": lambda m: m.encoder.transformer.resblocks, "coca": lambda m: m.encoder.transformer.resblocks,
                  "modified_resnet": lambda m: [m.encoder.layer1, m.encoder.layer4],
                  "torchvision_vit": lambda m: m.encoder.encoder.layers}[lm.arch_kind](lm)
        assert len(layers) >= 2
    assert kinds["demo-rn-zeroshot"] == "modified_resnet" and kinds["demo-vit-zeroshot"] == "vit"
    assert kinds["demo-coca-zeroshot"] == "coca" and kinds["demo-vit-supervised"] == "torchvision_vit"


def test_random_init_is_deterministic_per_seed(demo, demo_models):
    e = demo.entry("demo-vit-supervised")
    again = models.load(e)
    assert again.weights_digest == demo_models[e.id].weights_digest
    for k, v in demo_models[e.id].state_dict().items():
        assert torch.equal(again.state_dict()[k], v)
    other = models.load(dataclasses.replace(e, seed=99))
    assert other.weights_digest != again.weights_digest
    assert not torch.equal(other.head, again.head)


def test_unreachable_hub_fails_within_seconds(paper, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read once, when huggingface_hub is imported
    import socket

    import huggingface_hub

    for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    timeouts = []

    def unreachable(address, timeout=None, *args, **kwargs):
        timeouts.append(timeout)
        raise OSError("network is unreachable")

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted although the hub cannot be reached")
    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    with pytest.raises(models.MissingWeightsError, match="cannot be reached"):
        models.load(paper.entry("ViT-B-32-laion2b"), hf_cache=tmp_path)
    # One probe, with a short timeout (huggingface_hub alone would retry for about 25 s per file).
    assert len(timeouts) == 1 and 0 < timeouts[0] <= 5
