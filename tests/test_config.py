"""Profile loading and validation: each error names the file and the offending key."""
import pytest
import yaml

from helpers.config import ARCHS, FAMILIES, ConfigError, load_profile
from tests.conftest import write_profile


def test_demo_profile_has_one_member_per_family():
    P = load_profile("demo")
    assert P.is_demo and P.name == "demo"
    assert {e.family for e in P.pool} == set(FAMILIES)
    assert P.dataset_root("imagenet") == P.paths["data_root"] / "imagenet" / "val"


def test_paper_profile_lists_the_whole_pool():
    P = load_profile("paper")
    fams = [e.family for e in P.pool]
    # Section 3 / Appendix D: 16 robust zero-shot, 16 finetuned, 3 ImageNet-Captions, 4 supervised (39) + CoCa pairs
    assert fams.count("robust_zeroshot_clip") == 16
    assert fams.count("finetuned_clip") == 16
    assert fams.count("imagenet_captions_clip") == 3
    assert fams.count("supervised") == 4
    assert fams.count("coca_zeroshot") == 2 and fams.count("coca_finetuned") == 2
    assert not P.allow_random_init
    for e in P.pool:
        assert e.arch in ARCHS
        assert e.pretrained or e.checkpoint
        if e.family in ("finetuned_clip", "coca_finetuned"):
            zs = P.entry(e.finetuned_from)
            assert zs.arch == e.arch and zs.pretraining == e.pretraining
            assert (zs.image_mean, zs.image_std) == (e.image_mean, e.image_std)
    # the ViT-L-14 LAION-2B normalisation (facts.md)
    assert P.entry("ViT-L-14-laion2b").image_mean == (0.5, 0.5, 0.5)


def test_select_by_backbone_and_entry():
    P = load_profile("paper")
    assert {e.arch for e in P.select(backbone="ViT-B-32")} == {"ViT-B-32"}
    assert [e.id for e in P.select(entry="RN50-openai")] == ["RN50-openai"]
    with pytest.raises(KeyError, match="no pool entry 'nope'"):
        P.select(entry="nope")
    with pytest.raises(KeyError, match="no entry with backbone 'RN18'"):
        P.select(backbone="RN18")


def _broken(tmp_path, mutate):
    path = write_profile(tmp_path)
    raw = yaml.safe_load(path.read_text())
    mutate(raw)
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("mutate, key, words", [
    (lambda r: r.update(batchsize=3), "batchsize", "unknown key"),
    (lambda r: r["pool"][0].update(family="zero-shot"), "pool[0] (m1).family", "is not one of"),
    (lambda r: r["pool"][1].update(arch="RN18"), "pool[1] (m2).arch", "is not one of"),
    (lambda r: r["pool"][0].pop("model"), "pool[0] (m1).model", "required key is missing"),
    (lambda r: r["pool"][0].update(colour="red"), "pool[0] (m1).colour", "unknown key"),
    (lambda r: r["pool"][1].update(id="m1"), "pool[1].id", "duplicate id"),
    (lambda r: r["pool"][1].update(finetuned_from="m9"), "pool[1] (m2).finetuned_from", "not an id in the pool"),
    (lambda r: r.update(batch_size="big"), "batch_size", "expected a positive integer"),
    (lambda r: r.update(precision="fp8"), "precision", "expected one of"),
    (lambda r: r["paths"].pop("cache_dir"), "paths.cache_dir", "required key is missing"),
    (lambda r: r["datasets"].update(cifar="x"), "datasets.cifar", "unknown dataset"),
    (lambda r: r.update(limits={"imagenet": -1}), "limits.imagenet", "positive integer"),
    (lambda r: r.update(metrics={"er_slop": 1}), "metrics.er_slop", "unknown key"),
    (lambda r: r["pool"][0].update(image_mean=[0.5, 0.5]), "pool[0] (m1).image_mean", "three numbers"),
    (lambda r: r["pool"][0].update(pretrained="openai", checkpoint="x.pt"), "pool[0] (m1).checkpoint", "not both"),
])
def test_bad_profiles_name_the_key(tmp_path, mutate, key, words):
    path = _broken(tmp_path, mutate)
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    msg = str(err.value)
    assert str(path) in msg and key in msg and words in msg


def test_random_init_needs_the_flag(tmp_path):
    path = _broken(tmp_path, lambda r: r.update(allow_random_init=False))
    with pytest.raises(ConfigError, match=r"pool\[0\] \(m1\)\.pretrained: no weights"):
        load_profile(path)


def test_unknown_profile_name_lists_known_ones():
    with pytest.raises(ConfigError, match="demo, paper"):
        load_profile("papper")


def test_overrides_and_placeholders(tmp_path, monkeypatch):
    path = write_profile(tmp_path)
    P = load_profile(path, overrides={"device": "cuda", "paths.data_root": str(tmp_path / "elsewhere")})
    assert P.device == "cuda"
    assert P.dataset_root("imagenet") == tmp_path / "elsewhere" / "imagenet" / "val"
    monkeypatch.setenv("CLIP_STUDY_DATA_ROOT", str(tmp_path / "env"))
    assert load_profile(path).dataset_root("imagenet") == tmp_path / "env" / "imagenet" / "val"
    assert load_profile(path).digest() != P.digest()


def test_checkpoint_placeholders_resolve():
    P = load_profile("paper")
    ft = P.entry("RN50-openai-ft")
    assert ft.checkpoint == str(P.paths["checkpoints_dir"] / "RN50-openai-ft" / "final.pt")
