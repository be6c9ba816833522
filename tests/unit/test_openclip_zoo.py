"""The OpenCLIP-zoo chapter: ER of zoo models against Eq. (5) written out on the raw CSV numbers,
the QuickGELU rule, the training-data family mapping, the take-away counts and the diagnosis."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from helpers.chapters import openclip_zoo as zoo_ch
from helpers.chapters import robustness
from helpers.config import load_profile
from helpers.paper import published
from tests.conftest import refuses

B1, B0 = 0.76, -1.49
COLS = ["ImageNet 1k", "ImageNet v2", "ImageNet-R", "ImageNet Sketch", "ObjectNet", "ImageNet-A"]


def _raw():
    with open(published.OPENCLIP_RESULTS, newline="") as f:
        return {(r["name"], r["pretrained"]): [float(r[c]) for c in COLS] for r in csv.DictReader(f)}


def _er_by_hand(six, b1=B1, b0=B0):
    """Eq. (5): ER = ACC(S) - sigmoid(b1 * logit ACC(I) + b0), ACC(S) the mean of the five shifts."""
    acc_i, shifts = six[0], six[1:]
    acc_s = sum(shifts) / len(shifts)
    return acc_s - 1 / (1 + math.exp(-(b1 * math.log(acc_i / (1 - acc_i)) + b0)))


@pytest.fixture(scope="module")
def zoo():
    return zoo_ch.zoo_frame(B1, B0, load_profile("paper").pool)


@pytest.fixture(scope="module")
def testbed():
    return zoo_ch.testbed_frame(B1, B0)


@pytest.mark.parametrize("name, tag", [("ViT-L-14", "openai"), ("ViT-B-32-quickgelu", "laion400m_e32"),
                                       ("ViT-SO400M-14-SigLIP-384", "webli")])
def test_er_of_three_zoo_models_by_hand(zoo, name, tag):
    six = _raw()[(name, tag)]
    row = zoo[(zoo.name == name) & (zoo.pretrained == tag)].iloc[0]
    assert row["er"] == pytest.approx(_er_by_hand(six), abs=1e-12)
    assert row["acc_ratio"] == pytest.approx(sum(six[1:]) / 5 / six[0], abs=1e-12)


def test_er_under_the_refit_by_hand():
    fit = robustness.testbed_baseline()
    z = zoo_ch.zoo_frame(fit.slope, fit.intercept)
    six = _raw()[("ViT-L-14", "openai")]
    row = z[(z.name == "ViT-L-14") & (z.pretrained == "openai")].iloc[0]
    assert row["er"] == pytest.approx(_er_by_hand(six, fit.slope, fit.intercept), abs=1e-12)


def test_one_row_per_model_the_quickgelu_one(zoo):
    raw = _raw()
    assert len(raw) == 121
    pairs = [(n.removesuffix("-quickgelu"), t) for n, t in raw]
    twice = {p for p in pairs if pairs.count(p) == 2}
    assert len(twice) == 8  # 3 OpenAI (identical numbers), 2 LAION-400M, CC-12M, 2 YFCC-15M
    assert len(zoo) == 121 - len(twice)
    for base, tag in twice:
        rows = zoo[(zoo.base == base) & (zoo.pretrained == tag)]
        assert list(rows.name) == [base + "-quickgelu"]
        assert rows.iloc[0]["imagenet_plain_gelu"] == raw[(base, tag)][0]
    assert zoo[(zoo.name == "ViT-B-32-quickgelu") & (zoo.pretrained == "laion400m_e32")].iloc[0]["imagenet"] == 0.6293


@pytest.mark.parametrize("name, tag, family", [
    ("ViT-B-32-quickgelu", "openai", "OpenAI"), ("RN50-quickgelu", "yfcc15m", "YFCC-15M"),
    ("ViT-B-32-quickgelu", "laion400m_e32", "LAION-400M"), ("ViT-B-32", "laion2b_e16", "LAION-2B"),
    ("convnext_base_w", "laion_aesthetic_s13b_b82k", "LAION-2B"),
    ("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k", "LAION-5B"),
    ("xlm-roberta-large-ViT-H-14", "frozen_laion5b_s13b_b90k", "LAION-5B"),
    ("coca_ViT-L-14", "mscoco_finetuned_laion2b_s13b_b90k", "LAION-2B + MSCOCO fine-tune"),
    ("ViT-L-14", "datacomp_xl_s13b_b90k", "DataComp"), ("ViT-H-14-CLIPA", "datacomp1b", "DataComp"),
    ("ViT-B-16", "commonpool_l_clip_s1b_b8k", "CommonPool (unfiltered / baselines)"),
    ("ViT-H-14-quickgelu", "dfn5b", "DFN"), ("ViT-L-14-quickgelu", "metaclip_fullcc", "MetaCLIP"),
    ("ViT-B-16-SigLIP", "webli", "WebLI (SigLIP)"), ("EVA02-L-14", "merged2b_s4b_b131k", "Merged-2B (EVA)"),
    ("EVA01-g-14", "laion400m_s11b_b41k", "LAION-400M"),
    ("nllb-clip-base", "v1", "NLLB-CLIP (LAION-COCO, translated)"),
])
def test_family_mapping(name, tag, family):
    assert published.data_family(name, tag) == family


def test_every_zoo_tag_has_a_family_and_an_unknown_one_is_refused(zoo):
    assert zoo.family.notna().all() and len(zoo) == 113
    assert zoo_ch.family_table()["zoo models"].sum() == len(zoo)
    with refuses(published.PublishedTableError, "OpenCLIP pair (ViT-B-32, newdata_s1b): pretrained tag "
                 "'newdata_s1b' has no training-data family (helpers.paper.published.DATA_FAMILIES)"):
        published.data_family("ViT-B-32", "newdata_s1b")


def test_takeaway_counts(zoo, testbed):
    raw = _raw()
    kept = [(n, t) for n, t in raw if not ((n + "-quickgelu", t) in raw)]  # the QuickGELU rule, by hand
    ers = [_er_by_hand(raw[k]) for k in kept]
    best = max(testbed.itertuples(), key=lambda r: r.er)
    counts = zoo_ch.takeaway_counts(zoo, testbed).set_index("family")
    total = counts.loc["all"]
    assert total["models"] == len(kept) == 113
    assert total["ER > 0"] == sum(e > 0 for e in ers)
    col = [c for c in counts.columns if c.startswith("ER > ") and c != "ER > 0"][0]
    assert col.startswith(f"ER > {best.model} (")
    assert total[col] == sum(e > best.er for e in ers)
    assert counts.drop(index="all")["models"].sum() == 113
    # every row by hand: strict ">" in both counts, the median in points, families by median
    # (descending) and "all" last, a fresh 0..n index, the reference's ER in the header
    table = zoo_ch.takeaway_counts(zoo, testbed)
    assert col == f"ER > {best.model} ({100 * best.er:.1f})"
    assert list(table.columns) == ["family", "models", "ER > 0", col, "median ER (points)"]
    assert list(table.index) == list(range(len(table))) and table["family"].iloc[-1] == "all"
    medians = list(table["median ER (points)"].iloc[:-1])
    assert medians == sorted(medians, reverse=True) and len(set(medians)) == len(medians)  # no tie
    by_family = {}
    for k, e in zip(kept, ers):
        by_family.setdefault(zoo[(zoo.name == k[0]) & (zoo.pretrained == k[1])].iloc[0]["family"], []).append(e)
    for _, row in table.iloc[:-1].iterrows():
        mine = by_family[row["family"]]
        assert row["models"] == len(mine)
        assert row["ER > 0"] == sum(e > 0 for e in mine)
        assert row[col] == sum(e > best.er for e in mine)
        assert row["median ER (points)"] == pytest.approx(100 * float(np.median(mine)), abs=1e-9)
    tie = zoo.assign(er=np.where(zoo.index == zoo.index[0], 0.0, zoo["er"]))  # an ER of exactly 0 is not > 0
    tied = zoo_ch.takeaway_counts(tie, testbed).set_index("family").loc["all"]
    assert tied["ER > 0"] == int((tie["er"] > 0).sum()) == int((tie["er"] >= 0).sum()) - 1
    at_best = zoo.assign(er=np.where(zoo.index == zoo.index[0], best.er, zoo["er"]))
    assert zoo_ch.takeaway_counts(at_best, testbed).set_index("family").loc["all"][col] == \
        int((at_best["er"] >= best.er).sum()) - 1


def test_family_table_columns_and_counts(zoo):
    table = zoo_ch.family_table()
    assert list(table.columns) == ["matched on", "prefix", "family", "zoo models"]
    assert set(table["matched on"]) == {"pretrained tag", "model name"}
    tags = table[table["matched on"] == "pretrained tag"]
    assert list(zip(tags["prefix"], tags["family"])) == list(published.DATA_FAMILIES)
    names = table[table["matched on"] == "model name"]
    assert list(zip(names["prefix"], names["family"])) == list(published.DATA_FAMILIES_BY_MODEL)


def test_zoo_and_testbed_frames_built_here_labels_links_and_index():
    # built here, not by the module's fixtures: mutation testing links a function to the tests that call it
    P = load_profile("paper")
    zoo, testbed = zoo_ch.zoo_frame(B1, B0, P.pool), zoo_ch.testbed_frame(B1, B0)
    assert (zoo["label"] == zoo["name"] + " " + zoo["pretrained"]).all()
    # OpenAI's QuickGELU weights are listed under the plain name; the pool entry loads "-quickgelu"
    quick = [e for e in P.pool if e.pretrained and e.model.endswith("-quickgelu")]
    assert quick
    for e in quick:
        row = zoo[(zoo.base == e.model.removesuffix("-quickgelu")) & (zoo.pretrained == e.pretrained)]
        assert list(row["paper_entry"]) == [e.id], e.id
    assert zoo["paper_entry"].notna().sum() == len({(e.model, e.pretrained) for e in P.pool if e.pretrained})
    assert "index" not in testbed.columns and list(testbed.index) == list(range(len(testbed)))


def test_table_ids_name_the_slice():
    assert zoo_ch.table_id("zoo") == "zoo-all"
    assert zoo_ch.table_id("zoo", backbone="RN50") == "zoo-backbone-RN50"
    assert zoo_ch.table_id("rings", entry="RN50-openai") == "rings-RN50-openai"


def test_best_testbed_model_by_hand(testbed):
    """The reference: the highest Eq. (5) ER among the testbed's ImageNet-only rows, recomputed."""
    best = zoo_ch.best_testbed(testbed)
    six = [best[c] for c in ("imagenet", "imagenet-v2", "imagenet-r", "imagenet-sketch", "objectnet", "imagenet-a")]
    assert best["er"] == pytest.approx(_er_by_hand(six), abs=1e-12)
    assert best["type"] != "MORE_DATA"
    assert (testbed["er"] <= best["er"]).all()


def test_ranked_tables(zoo):
    top, bottom = zoo_ch.ranked(zoo), zoo_ch.ranked(zoo, most=False)
    assert len(top) == len(bottom) == 10
    assert list(top["ER"]) == sorted(top["ER"], reverse=True)
    assert top["ER"].min() >= 100 * zoo["er"].nlargest(10).min() - 1e-9
    assert bottom["ER"].max() <= 100 * zoo["er"].nsmallest(10).max() + 1e-9


def test_placement_counts_strictly_higher_ers_and_names_every_missing_shift(zoo, testbed):
    best = zoo_ch.best_testbed(testbed)
    six = {d: float(best[d]) for d in ("imagenet", "imagenet-v2", "imagenet-r", "imagenet-sketch", "objectnet",
                                       "imagenet-a")}
    place = zoo_ch.placement(six, zoo, testbed, B1, B0)
    assert place["er"] == pytest.approx(best["er"], abs=1e-15)
    assert place["testbed_above"] == 0 and place["testbed"] == len(testbed)  # the best ties itself: not above
    assert place["zoo_above"] == int((zoo["er"] > place["er"]).sum())
    with refuses(KeyError, "'diagnose: no accuracy for imagenet-r, imagenet-a (need imagenet, imagenet-v2, "
                 "imagenet-r, imagenet-sketch, objectnet, imagenet-a)'"):
        zoo_ch.diagnose({k: v for k, v in six.items() if k not in ("imagenet-r", "imagenet-a")}, zoo, B1, B0)


def test_pct_table_in_percent_with_every_shift_on_request(zoo):
    raw = _raw()
    row = zoo[(zoo.name == "ViT-L-14") & (zoo.pretrained == "openai")]
    six = raw[("ViT-L-14", "openai")]
    short, wide = zoo_ch.pct_table(row), zoo_ch.pct_table(row, per_dataset=True)
    assert list(short.columns) == ["model", "family", "ImageNet", "mean of 5 shifts", "ER", "%acc"]
    assert list(wide.columns) == ["model", "family", "ImageNet", "imagenet-v2", "imagenet-r", "imagenet-sketch",
                                  "objectnet", "imagenet-a", "mean of 5 shifts", "ER", "%acc"]
    got = wide.iloc[0]
    assert got["model"] == "ViT-L-14 openai" and got["family"] == row["family"].iloc[0]
    assert [got[c] for c in ("ImageNet", "imagenet-v2", "imagenet-r", "imagenet-sketch", "objectnet", "imagenet-a")] \
        == pytest.approx([100 * v for v in six], abs=1e-9)
    assert got["mean of 5 shifts"] == pytest.approx(100 * sum(six[1:]) / 5, abs=1e-9)
    assert got["ER"] == pytest.approx(100 * _er_by_hand(six), abs=1e-9)
    assert got["%acc"] == pytest.approx(100 * sum(six[1:]) / 5 / six[0], abs=1e-9)
    assert short.iloc[0][["ImageNet", "ER", "%acc"]].tolist() == got[["ImageNet", "ER", "%acc"]].tolist()
    assert row["imagenet"].iloc[0] == six[0]  # the zoo frame itself stays in fractions


def test_below_counts_models_at_or_under_an_er_per_family(zoo):
    raw = _raw()
    er_of = {k: _er_by_hand(v) for k, v in raw.items()}
    cut = sorted(zoo["er"])[40]  # a zoo model's own ER: "at or below" includes it
    table = zoo_ch.below(zoo, cut)
    assert list(table.columns) == ["family", "models", "best ImageNet top-1 (%)"]
    assert list(table["models"]) == sorted(table["models"], reverse=True)
    assert table["models"].sum() == 41
    for fam, got in table.set_index("family").iterrows():
        mine = zoo[zoo.family == fam]
        keys = [(n, t) for n, t in zip(mine.name, mine.pretrained) if er_of[(n, t)] <= cut + 1e-15]
        assert got["models"] == len(keys), fam
        assert got["best ImageNet top-1 (%)"] == pytest.approx(100 * max(raw[k][0] for k in keys), abs=1e-9), fam
    assert zoo_ch.below(zoo, -1.0).empty


def test_activation_matches_flags_only_a_paper_value_that_matches_plain_gelu():
    import pandas as pd

    table = pd.DataFrame({
        "entry": ["gelu-hit", "both-match", "quick-match", "neither", "no-paper", "no-gelu-row", "half-up"],
        "ImageNet: paper": [60.0, 63.0, 63.0, 70.0, np.nan, 60.0, 61.0],
        "ImageNet: OpenCLIP": [62.96, 63.2, 62.6, 64.0, 55.0, 61.0, 61.7],
        "ImageNet: OpenCLIP, plain GELU": [60.2, 62.8, 55.0, 65.0, 55.0, np.nan, 60.5]})
    # by hand: rounded plain GELU equals the paper's value and rounded QuickGELU does not
    # (60.2 -> 60 = 60, 62.96 -> 63 != 60; 62.8 -> 63 = 63 but 63.2 -> 63 too; 60.5 -> 60 != 61)
    assert zoo_ch.activation_matches(table) == ["gelu-hit"]
    assert zoo_ch.activation_matches(table.assign(**{"ImageNet: paper": 61.0}).iloc[[6]]) == []
    # a row whose other columns hold NaN (CoCa has no paper shift mean) is still compared
    coca = pd.DataFrame({"entry": ["coca-like"], "ImageNet: paper": [64.0], "ImageNet: OpenCLIP": [66.3],
                         "ImageNet: OpenCLIP, plain GELU": [64.1], "shifts: paper": [np.nan]})
    assert zoo_ch.activation_matches(pd.concat([table, coca], ignore_index=True)) == ["gelu-hit", "coca-like"]
    flipped = table.assign(**{"ImageNet: OpenCLIP, plain GELU": [60.2, 62.8, 55.0, 70.4, 55.0, np.nan, 61.4]})
    assert zoo_ch.activation_matches(flipped) == ["gelu-hit", "neither", "half-up"]


def test_pool_beside_zoo_covers_every_pool_entry_with_openclip_weights(zoo):
    P = load_profile("paper")
    want = {e.id for e in P.pool if e.pretrained}
    table = zoo_ch.pool_beside_zoo(zoo, robustness.paper_frame())
    assert set(table["entry"]) == want and len(table) == 18
    assert want <= set(robustness.paper_frame()["entry"])  # each is printed in the paper's Tables 1-3
    raw = _raw()
    row = table.set_index("entry").loc["ViT-B-32-laion400m"]
    assert row["ImageNet: OpenCLIP"] == pytest.approx(100 * raw[("ViT-B-32-quickgelu", "laion400m_e32")][0])
    assert row["ImageNet: OpenCLIP, plain GELU"] == pytest.approx(100 * raw[("ViT-B-32", "laion400m_e32")][0])
    assert row["ImageNet: paper"] == 60
    assert list(table.columns) == ["entry", "OpenCLIP model", "ImageNet: OpenCLIP", "ImageNet: paper",
                                   "ImageNet: OpenCLIP, plain GELU", "shifts: OpenCLIP", "shifts: paper",
                                   "ER: OpenCLIP", "ER: paper"]
    six = raw[("ViT-B-32-quickgelu", "laion400m_e32")]
    assert row["OpenCLIP model"] == "ViT-B-32-quickgelu laion400m_e32"
    assert row["shifts: OpenCLIP"] == pytest.approx(100 * sum(six[1:]) / 5, abs=1e-9)
    assert row["ER: OpenCLIP"] == pytest.approx(100 * _er_by_hand(six), abs=1e-9)
    paper = robustness.paper_frame().set_index("entry").loc["ViT-B-32-laion400m"]
    assert row["shifts: paper"] == pytest.approx(100 * paper["shifts_mean"], abs=1e-9)
    assert row["ER: paper"] == pytest.approx(100 * paper["er"], abs=1e-9)
    # a value the paper's tables do not print (CoCa's mean shift accuracy): NaN, not an error
    coca = table.set_index("entry").filter(like="coca", axis=0)
    assert coca["shifts: paper"].isna().all() and coca["ImageNet: paper"].notna().all()


def test_diagnose_places_a_model_in_the_zoo(zoo):
    raw = _raw()
    six = raw[("ViT-L-14", "openai")]
    accs = dict(zip(("imagenet", "imagenet-v2", "imagenet-r", "imagenet-sketch", "objectnet", "imagenet-a"), six))
    d = zoo_ch.diagnose(accs, zoo, B1, B0)
    er = _er_by_hand(six)
    assert d["er"] == pytest.approx(er, abs=1e-12)
    kept = [k for k in raw if (k[0] + "-quickgelu", k[1]) not in raw]
    others = [_er_by_hand(raw[k]) for k in kept]
    assert d["rank"] == 1 + sum(e > er + 1e-12 for e in others)
    assert d["percentile"] == pytest.approx(100 * sum(e < er - 1e-12 for e in others) / len(others))
    with refuses(KeyError, "'diagnose: no accuracy for objectnet (need imagenet, imagenet-v2, imagenet-r, "
                 "imagenet-sketch, objectnet, imagenet-a)'"):
        zoo_ch.diagnose({k: v for k, v in accs.items() if k != "objectnet"}, zoo, B1, B0)


class _Slice:
    def __init__(self, pool):
        self.pool = pool


def test_paper_pool_follows_the_slice():
    paper = load_profile("paper").pool
    demo = load_profile("demo").pool
    assert len(zoo_ch.paper_pool(_Slice(demo))) == len(paper)
    assert {e.arch for e in zoo_ch.paper_pool(_Slice(demo), backbone="RN50")} == {"RN50"}
    stand_in = [e for e in demo if e.id == "demo-vit-zeroshot"]
    assert [e.id for e in zoo_ch.paper_pool(_Slice(stand_in), entry="demo-vit-zeroshot")] == [stand_in[0].stands_in_for]
    assert zoo_ch.table_id("zoo") == "zoo-all"


def test_banner_says_the_numbers_are_published():
    P = load_profile("demo")
    text = zoo_ch.banner(P, 0.76, -1.49, 113, 287)
    assert text.startswith("```{admonition} Which run produced these numbers")
    assert "Published accuracies, in every profile" in text and "metrics.baseline: paper" in text
    assert "287 ImageNet testbed models trained on ImageNet alone (`robustness_top1s.csv`), vendored under " \
           "`helpers/reference/`: nothing on this page comes from the demo's stand-ins." in text
    assert text.endswith("beta_1 0.76, beta_0 -1.49) and which pool models are ringed.\n```")
