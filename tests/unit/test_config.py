"""Profile loading and validation: each error names the file and the offending key."""
import pytest
import yaml

from helpers.config import ARCHS, FAMILIES, ConfigError, checkpoint_status, expand_env, load_profile
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
    # the ViT-L-14 LAION-2B normalisation (book/methods.md, facts)
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
    # issue 12.3: types and ranges of every key
    (lambda r: r.update(batch_size=0), "batch_size", "expected a positive integer, got 0"),
    (lambda r: r.update(batch_size=True), "batch_size", "expected a positive integer, got True"),
    (lambda r: r.update(num_workers=-2), "num_workers", "expected a non-negative integer, got -2"),
    (lambda r: r.update(device="gpu"), "device", "expected a torch device: cpu, cuda or cuda:N, got 'gpu'"),
    (lambda r: r.update(device="cuda:x"), "device", "got 'cuda:x'"),
    (lambda r: r.update(kind="real"), "kind", "expected one of demo, smoke, paper"),
    (lambda r: r.update(skip_unreadable="yes"), "skip_unreadable", "expected true or false"),
    (lambda r: r.update(metrics={"bootstrap": "many"}), "metrics.bootstrap", "expected an integer >= 1, got 'many'"),
    (lambda r: r.update(metrics={"bootstrap": 0}), "metrics.bootstrap", "expected an integer >= 1, got 0"),
    (lambda r: r.update(metrics={"broden_min_positives": "four"}), "metrics.broden_min_positives",
     "expected an integer >= 1, got 'four'"),
    (lambda r: r.update(metrics={"concept_threshold": 9}), "metrics.concept_threshold", "in (0, 1], got 9"),
    (lambda r: r.update(metrics={"concept_threshold": 0}), "metrics.concept_threshold", "in (0, 1], got 0"),
    (lambda r: r.update(metrics={"concept_thresholds": [0.5, 2]}), "metrics.concept_thresholds", "(0, 1]"),
    (lambda r: r.update(metrics={"prune_fractions": [0.0, 1.0]}), "metrics.prune_fractions", "[0, 1)"),
    (lambda r: r.update(metrics={"er_slope": "steep"}), "metrics.er_slope", "expected a number"),
    (lambda r: r.update(limits={"default": "all"}), "limits.default", "positive integer or null, got 'all'"),
    (lambda r: r["pool"][0].update(published_top1=160), "pool[0] (m1).published_top1", "(0, 100]"),
    # model names known to the installed open_clip / torchvision: tests/unit/test_preflight_models.py
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


def test_every_problem_is_listed_at_once(tmp_path):
    def mutate(r):
        r.update(batch_size=0, device="gpu", metrics={"bootstrap": "many", "broden_min_positives": "four"})
        r["pool"][0].update(image_mean=[0.5])
    path = _broken(tmp_path, mutate)
    with pytest.raises(ConfigError) as err:
        load_profile(path)
    msg = str(err.value)
    assert msg.startswith("5 problems:")
    for key in ("batch_size", "device", "metrics.bootstrap", "metrics.broden_min_positives", "pool[0] (m1).image_mean"):
        assert f"{path}: {key}: " in msg


def test_kind_defaults_follow_random_init_and_can_be_declared(tmp_path):
    assert load_profile("demo").kind == "demo" and load_profile("paper").kind == "paper"
    assert load_profile(write_profile(tmp_path)).kind == "demo"
    full_size = load_profile(write_profile(tmp_path, kind="smoke"))
    assert full_size.kind == "smoke" and full_size.allow_random_init and not full_size.is_demo
    assert load_profile(write_profile(tmp_path)).skip_unreadable is False
    assert load_profile(write_profile(tmp_path, skip_unreadable=True)).skip_unreadable is True


def test_environment_variables_with_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("CLIP_STUDY_TEST_VAR", raising=False)
    assert expand_env("${CLIP_STUDY_TEST_VAR:-/a/b}/c") == "/a/b/c"
    assert expand_env("${CLIP_STUDY_TEST_VAR:-~/x}") == str(__import__("pathlib").Path.home() / "x")
    assert expand_env("$CLIP_STUDY_TEST_VAR/c") == "$CLIP_STUDY_TEST_VAR/c"  # unset, no default: as written
    monkeypatch.setenv("CLIP_STUDY_TEST_VAR", "")
    assert expand_env("${CLIP_STUDY_TEST_VAR:-/d}") == "/d"  # empty counts as unset
    monkeypatch.setenv("CLIP_STUDY_TEST_VAR", str(tmp_path))
    assert expand_env("${CLIP_STUDY_TEST_VAR:-/d}/e") == f"{tmp_path}/e"
    assert expand_env("${CLIP_STUDY_TEST_VAR}/e") == expand_env("$CLIP_STUDY_TEST_VAR/e") == f"{tmp_path}/e"


def test_paper_cache_lives_outside_the_checkout_and_follows_one_variable(monkeypatch, tmp_path):
    from tests.conftest import REPO

    monkeypatch.delenv("CLIP_STUDY_CACHE", raising=False)
    P = load_profile("paper")
    assert REPO not in P.cache_dir.parents
    assert P.cache_dir == __import__("pathlib").Path.home() / ".cache" / "clip-study" / "paper"
    monkeypatch.setenv("CLIP_STUDY_CACHE", str(tmp_path))
    P = load_profile("paper")
    assert P.cache_dir == tmp_path / "paper"
    assert P.entry("RN50-openai-ft").checkpoint.startswith(str(tmp_path))


def test_checkpoints_present_produced_or_missing(tmp_path):
    pool = [{"id": "zs", "arch": "RN50", "family": "robust_zeroshot_clip", "pretraining": "x", "model": "demo-RN50"},
            {"id": "ft", "arch": "RN50", "family": "finetuned_clip", "pretraining": "x", "model": "demo-RN50",
             "finetuned_from": "zs", "checkpoint": "{checkpoints_dir}/ft/final.pt"},
            {"id": "cap", "arch": "RN50", "family": "imagenet_captions_clip", "pretraining": "x", "model": "demo-RN50",
             "checkpoint": str(tmp_path / "captions.pt")}]
    path = write_profile(tmp_path, pool=pool, kind="smoke")
    P = load_profile(path)  # a machine fact, not a profile error: loads without check_files
    status = {e.id: (key, state, detail) for e, key, state, detail in checkpoint_status(P)}
    assert status["ft"][1] == "produced"
    assert status["ft"][2].startswith(f"produced by: clip-study finetune --profile {path} --entry ft")
    assert status["cap"][:2] == ("pool[2] (cap).checkpoint", "missing")
    with pytest.raises(ConfigError) as err:
        load_profile(path, check_files=True)
    msg = str(err.value)
    assert f"{path}: pool[2] (cap).checkpoint: checkpoint file {tmp_path / 'captions.pt'} not found" in msg
    assert "(ft)" not in msg  # produced by a named command: not an error
    demo = load_profile("demo", overrides={"paths.checkpoints_dir": str(tmp_path / "none")})
    status = {e.id: (state, d) for e, _, state, d in checkpoint_status(demo)}
    assert status["demo-rn-finetuned"] == ("produced", "produced by: clip-study prepare-demo --profile demo (into "
                                           f"{tmp_path / 'none' / 'demo-rn-finetuned' / 'final.pt'})")
    (tmp_path / "captions.pt").write_bytes(b"x")
    assert load_profile(path, check_files=True).entry("cap").checkpoint == str(tmp_path / "captions.pt")
