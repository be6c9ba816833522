"""The decode stage of ``clip-study run`` (helpers.workflow.runner.build_stage, engine.extract
stores_needed / build_stores): the uint8 stores the extraction jobs read are decoded before any job
starts, so no GPU waits on a decode.

Real components: JPEG trees in ImageNet's layout (helpers.demo.fixtures), the data helper's
datasets, the demo architectures (random init, supervised heads: no text tower), DataLoaders and the
store's memmaps on disk; the demo section runs as ``clip-study run`` runs it (papermill, its own
process)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from helpers.config import EVAL_DATASETS, load_profile  # noqa: E402
from helpers.demo import fixtures  # noqa: E402
from helpers.engine import extract  # noqa: E402
from helpers.store import DecodeError, Geometry  # noqa: E402
from helpers.workflow import runner  # noqa: E402
from test_slurm import NOTEBOOK  # noqa: E402
from tests.unit.test_extract import CountDecodes  # noqa: E402 - real decoder calls

#: the open_clip eval geometry of the demo ResNets (three entries read it: kept on disk) and the
#: torchvision preset of the demo ViT (one entry: removed after each pass, so not decoded ahead)
OPEN_CLIP_224 = Geometry(224, "bicubic", "shortest", None)
TORCHVISION_224 = Geometry(224, "bilinear", "shortest", 256)
POOL = [{"id": f"rn{i}", "arch": "RN50", "family": "supervised", "pretraining": "x", "model": "demo-RN50", "seed": i}
        for i in range(3)] + [{"id": "tv", "arch": "ViT-B-32", "family": "supervised", "pretraining": "x",
                               "source": "torchvision", "model": "demo_vit_b_32", "seed": 9}]
N_IMAGENET = 6


@pytest.fixture
def world(tmp_path):
    """Profile over a small ImageNet val and Broden; four notebooks named after real sections
    (the stage reads the section names; these notebooks only start their provenance record)."""
    data = tmp_path / "data"
    fixtures.write_imagenet(data / "imagenet", "val", classes=fixtures.DEMO_CLASSES[:2], per_class=3, size=(120, 90))
    fixtures.write_broden(data / "broden1_224", n_images=4)
    cfg = {"profile": "stage", "allow_random_init": True, "batch_size": 2, "num_workers": 0,
           "paths": {"data_root": str(data), "cache_dir": str(tmp_path / "cache"),
                     "results_dir": str(tmp_path / "results")},
           "datasets": {"imagenet": "{data_root}/imagenet/val", "broden": "{data_root}/broden1_224",
                        "imagenet-v2": "{data_root}/not-downloaded"},
           "pool": POOL}
    (tmp_path / "profile.yml").write_text(yaml.safe_dump(cfg))
    nb = tmp_path / "notebooks"
    nb.mkdir()
    for stem in ("01_robustness", "02_outlier_features", "04_concept_probing", "07_coca"):
        text = NOTEBOOK.replace('open_study("tiny"', f'open_study("{stem[3:]}"')
        (nb / f"{stem}.md").write_text(text.replace("entry = None\n", "entry = None\nskip_unreadable = False\n"))
    return load_profile(tmp_path / "profile.yml"), nb


def _store_dirs(P) -> dict[str, str]:
    """Committed stores under the cache: folder name -> the run folder its manifest names."""
    out = {}
    for d in sorted((P.cache_dir / "stores").glob("*")):
        if (d / "manifest.json").exists():
            out[d.name] = json.loads((d / "manifest.json").read_text())["run"]
    return out


def test_the_stage_lists_the_kept_stores_of_the_sections_datasets(world):
    P, nb = world
    jobs = runner.plan(P, sections=["robustness", "concept_probing", "coca"], per_entry=True, notebook_dir=nb)
    assert [j.name for j in jobs if runner.extracts(j)] == [f"{s}[{e['id']}]" for s in ("robustness", "concept_probing")
                                                            for e in POOL]
    ((profile, specs),) = runner.stage_stores([j for j in jobs if runner.extracts(j)])
    # robustness reads the six evaluation sets (only ImageNet is on disk here; ImageNet-V2's folder
    # is missing, which the job reports), concept probing ImageNet and Broden; the torchvision ViT's
    # geometry has one reader, so its store is not decoded ahead
    assert [(s.dataset, s.geometry) for s in specs] == [("imagenet", OPEN_CLIP_224), ("broden", OPEN_CLIP_224)]
    assert [s.images for s in specs] == [N_IMAGENET, 4]
    assert all(s.material["skip_unreadable"] is False for s in specs)
    # the stage of one slice: the torchvision entry alone needs nothing decoded ahead
    only_tv = runner.plan(P, sections=["robustness"], entry="tv", notebook_dir=nb)
    assert runner.stage_stores(only_tv) == []
    assert runner.build_stage(only_tv, echo=pytest.fail) == []  # no stage: not a line printed
    # a section that reads no images has no stage either
    assert runner.stage_stores([j for j in jobs if j.section == "coca"]) == []


def test_after_the_stage_an_extraction_finds_every_store_and_decodes_nothing(world, monkeypatch):
    P, nb = world
    jobs = runner.plan(P, sections=["outlier_features"], notebook_dir=nb)
    lines: list[str] = []
    records = runner.build_stage(jobs, echo=lines.append)
    assert [(r["dataset"], r["images"], r["cached"]) for r in records] == [("imagenet", N_IMAGENET, False)]
    assert any(line.startswith("decode stage [1/1] imagenet 224-bicubic-shortest: 6 images, decoded in ") for line in lines)
    before = _store_dirs(P)
    assert len(before) == 1
    decodes = CountDecodes(monkeypatch)
    out = extract.extract_many([e["id"] for e in POOL[:3]], "imagenet", P)
    assert decodes.n == 0  # every image came from the stage's store
    assert _store_dirs(P) == before  # the same committed run, no rebuild
    assert not any((P.cache_dir / "stores").glob("*/partial"))  # and no build started
    assert {a.manifest["store"] for a in out.values()} == {next(iter(before))}
    # the rare geometry was left to its extraction, which decodes it (and removes it after the pass)
    extract.extract_many(["tv"], "imagenet", P)
    assert decodes.n == N_IMAGENET
    # a second stage finds the store and says so
    lines.clear()
    records = runner.build_stage(jobs, echo=lines.append)
    assert [r["cached"] for r in records] == [True]
    assert "decode stage [1/1] imagenet 224-bicubic-shortest: 6 images, cached" in lines


def test_the_stage_lists_exactly_the_kept_stores_an_extraction_opens(world):
    P, nb = world
    # no stage: the extraction of the whole pool decodes what it needs itself
    for d in ("imagenet", "broden"):
        extract.extract_many([e["id"] for e in POOL], d, P)
    opened = set(_store_dirs(P))
    jobs = runner.plan(P, sections=["concept_probing"], notebook_dir=nb)
    ((_, specs),) = runner.stage_stores(jobs)
    assert {s.entry(P.cache_dir).dir.name for s in specs} == opened
    # the torchvision store was opened too, and removed after its pass: its folder has no manifest
    rare = [d for d in (P.cache_dir / "stores").glob("*") if d.name.startswith(f"imagenet-{TORCHVISION_224.key}-")]
    assert len(rare) == 1 and not (rare[0] / "manifest.json").exists()


def test_an_unreadable_image_stops_the_run_before_any_job_naming_it(world):
    P, nb = world
    bad = next((P.dataset_root("imagenet")).rglob("*.JPEG"))
    bad.write_bytes(b"not a jpeg")
    jobs = runner.plan(P, sections=["robustness", "coca"], notebook_dir=nb)
    lines: list[str] = []
    with pytest.raises(DecodeError) as err:
        runner.run(jobs, echo=lines.append)
    assert str(bad) in str(err.value) and str(err.value).startswith("decode stage: no job started; imagenet: 1 image(s)")
    assert any(line.startswith("decode stage [1/1] imagenet 224-bicubic-shortest: failed: ") for line in lines)
    for job in jobs:  # no job started: no log, no executed notebook, no record
        assert not Path(job.log).exists() and not Path(job.output).exists() and not Path(job.record).exists()
    # skip_unreadable (the profile key, or `run --skip-unreadable`): the stage leaves it out
    skipping = runner.plan(P, sections=["robustness"], notebook_dir=nb, extra={"skip_unreadable": True})
    (record,) = runner.build_stage(skipping, echo=lambda *_: None)
    assert record["images"] == N_IMAGENET - 1


def test_the_decode_stage_can_be_left_to_the_jobs(world):
    P, nb = world
    jobs = runner.plan(P, sections=["outlier_features"], notebook_dir=nb)
    lines: list[str] = []
    summary = runner.run(jobs, echo=lines.append, decode_stage=False)
    assert [o.status for o in summary.outcomes] == ["ran"]
    assert not any(line.startswith("decode stage") for line in lines) and _store_dirs(P) == {}
    # the default: the stage runs first, and says so
    lines.clear()
    summary = runner.run(jobs, echo=lines.append, force=True)
    assert [o.status for o in summary.outcomes] == ["ran"] and len(_store_dirs(P)) == 1
    stage = [i for i, line in enumerate(lines) if line.startswith("decode stage")]
    first_job = next(i for i, line in enumerate(lines) if "running outlier_features[all]" in line)
    assert stage and max(stage) < first_job


def test_plan_lists_the_stage(world):
    from helpers.workflow import costs

    P, _ = world
    stages = costs.estimate(P, sections=["robustness", "concept_probing"], images={"imagenet": 540_000, "broden": 540_000})
    notes = next(s for s in stages if s.name == "stores").notes
    # the kept stores' decode, 1,080,000 images at the assumed 150 img/s per worker (num_workers 0: one
    # process), is 2 h; the torchvision geometry's (one reader) is its job's, not the stage's
    assert "decode stage of `clip-study run`, before any job (~2.00 h wall): broden, imagenet at " \
        "224-bicubic-shortest" in notes
    assert any("decoded by `clip-study run`'s decode stage before any job starts" in line
               for line in costs.format_stages(stages, P))


def test_store_reads_follow_the_chapters_pairs():
    from helpers.workflow.sections import store_reads

    P = load_profile("demo")
    by = {e.id: e for e in P.pool}
    # CKA: pairs within the slice, over the extraction's own stores (the profile's skip_unreadable)
    (cka,) = store_reads("cka_layers", P.select(backbone="RN50"), P)
    assert [e.id for e in cka.entries] == ["demo-rn-zeroshot", "demo-rn-finetuned"]
    assert cka.datasets == EVAL_DATASETS and cka.skip_unreadable is None
    assert store_reads("cka_layers", [by["demo-rn-finetuned"]], P) == []  # its parent is not in the slice
    # WiSE-FT: pairs with either member in the slice; Broden with the backbone's supervised model
    evals, broden = store_reads("wiseft", [by["demo-rn-finetuned"]], P)
    assert [e.id for e in evals.entries] == ["demo-rn-zeroshot", "demo-rn-finetuned"] and evals.datasets == EVAL_DATASETS
    assert [e.id for e in broden.entries] == ["demo-rn-zeroshot", "demo-rn-finetuned", "demo-rn-supervised"]
    assert broden.datasets == ("broden",) and evals.skip_unreadable is None
    (probing,) = store_reads("concept_probing", [by["demo-vit-zeroshot"]], P)
    assert probing.datasets == ("imagenet", "broden") and probing.entries == (by["demo-vit-zeroshot"],)
    assert store_reads("summary", list(P.pool), P) == []


def _demo_copy(tmp_path: Path, name: str):
    """The demo profile with its cache and results in ``tmp_path / name`` (data and checkpoints: the
    checkout's, which ``demo_prepared`` makes)."""
    from conftest import REPO

    raw = yaml.safe_load((REPO / "configs" / "demo.yml").read_text())
    raw["paths"].update(cache_dir=str(tmp_path / name / "cache"), results_dir=str(tmp_path / name / "results"))
    path = tmp_path / f"{name}.yml"
    path.write_text(yaml.safe_dump(raw))
    return load_profile(path)


def test_a_demo_section_opens_exactly_the_stores_the_stage_decoded(demo_prepared, tmp_path):
    P = _demo_copy(tmp_path, "stage")
    jobs = runner.plan(P, sections=["concept_probing"], entry="demo-rn-supervised")
    ((_, specs),) = runner.stage_stores(jobs)
    listed = {s.entry(P.cache_dir).dir.name for s in specs}
    lines: list[str] = []
    after_stage: dict[str, str] = {}

    def echo(line: str) -> None:
        lines.append(line)
        if line.startswith("decode stage done"):
            after_stage.update(_store_dirs(P))
    summary = runner.run(jobs, echo=echo)  # on a fresh cache
    assert [o.status for o in summary.outcomes] == ["ran"], summary.report()
    # the stage decoded its list: ImageNet and Broden at the ResNets' geometry
    assert set(after_stage) == listed and [(s.dataset, s.geometry) for s in specs] == \
        [("imagenet", OPEN_CLIP_224), ("broden", OPEN_CLIP_224)]
    # the job read exactly those stores (its activations name the store they came from) ...
    read = {json.loads(m.read_text())["store"] for m in (P.cache_dir / "activations").rglob("manifest.json")}
    assert read == listed
    # ... and decoded nothing: the same committed runs, no build started, no decode bar in its log
    assert _store_dirs(P) == after_stage and not any((P.cache_dir / "stores").glob("*/partial"))
    assert "decode " not in Path(jobs[0].log).read_text()


def test_clip_study_run_stops_before_any_job_naming_the_unreadable_file(world, capsys):
    from helpers.workflow import cli

    P, _ = world
    bad = sorted(P.dataset_root("imagenet").rglob("*.JPEG"))[2]
    bad.write_bytes(b"garbage")
    assert cli.main(["run", "--profile", str(P.path), "--section", "outlier_features"]) == 2
    err = capsys.readouterr().err
    assert ("\nclip-study run: stopped before any job: decode stage: no job started; imagenet: 1 image(s) cannot be "
            "decoded") in err and str(bad) in err  # (after the decode's progress bar)
    assert not (P.results_dir / "logs").exists()  # the real notebook never started
