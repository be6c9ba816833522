"""The paper beside this run (helpers/paper/compare.py) and the book's figure and table style
(helpers/plots.py), checked against values written out by hand from the paper's tables."""
import math
import re

import numpy as np
import pandas as pd
import pytest

from helpers import plots
from helpers.paper import compare
from helpers.paper import values as paper_values
from helpers.study import results
from helpers.config import load_profile


@pytest.fixture
def demo(tmp_path):
    return load_profile("demo", overrides={"paths.results_dir": str(tmp_path / "results")})


def test_every_demo_entry_stands_in_for_a_paper_model_of_its_family_and_backbone():
    paper = {e.id: e for e in load_profile("paper").pool}
    demo = load_profile("demo")
    for e in demo.pool:
        assert e.stands_in_for in paper, f"{e.id}: stands_in_for {e.stands_in_for!r} is not a paper.yml entry"
        assert paper[e.stands_in_for].family == e.family and paper[e.stands_in_for].arch == e.arch, e.id
    assert len({e.stands_in_for for e in demo.pool}) == len(demo.pool)
    assert all(e.stands_in_for is None for e in paper.values())


def test_beside_joins_stand_ins_to_the_paper_rows(demo):
    run = pd.DataFrame({"entry": ["demo-vit-zeroshot", "demo-rn-zeroshot"], "imagenet": [0.5, 0.25]})
    out = compare.beside(run, paper_values.accuracies(), "imagenet", demo, scale=100)
    # Table 1 prints RN50 OpenAI 60 % and ViT-B/32 OpenAI 63 %; RN50 comes first in the paper's order
    assert list(out["paper model"]) == ["RN50-openai", "ViT-B-32-openai"]
    assert list(out["paper"]) == [60, 63]
    assert list(out["this run"]) == [25.0, 50.0]
    assert list(out["difference"]) == [-35.0, -13.0]
    assert all("untrained stand-in" in m for m in out["this run's model"])


def test_paper_order_puts_rn50_before_rn101_and_follows_table_1():
    P = load_profile("paper")
    df = pd.DataFrame({"entry": ["RN101-openai", "ViT-B-16-openai", "RN50-openai-ft", "RN50-openai"]})
    assert list(compare.in_paper_order(df, P)["entry"]) == ["RN50-openai", "RN50-openai-ft", "RN101-openai",
                                                            "ViT-B-16-openai"]
    assert compare.backbone_order(["ViT-B-32", "RN101", "coca_ViT-B-32", "RN50"]) == ["RN50", "RN101", "ViT-B-32",
                                                                                       "coca_ViT-B-32"]


def _paper_er(acc_s, acc_i):
    """Eq. (5) written out: ER = ACC(S) - sigmoid(0.76 logit ACC(I) - 1.49)."""
    z = 0.76 * math.log(acc_i / (1 - acc_i)) - 1.49
    return acc_s - 1 / (1 + math.exp(-z))


def test_robustness_claims_on_the_paper_tables_match_a_hand_count(demo):
    rows = pd.read_csv(paper_values.REFERENCE_DIR / "paper_accuracies.csv", comment="#")
    clip = rows[rows["table"] == "1-2"].set_index("entry")
    er = {e: _paper_er(r.shifts_mean / 100, r.imagenet / 100) for e, r in clip.iterrows()}
    zs = [e for e in clip.index if clip.loc[e, "family"] == "robust_zeroshot_clip"]
    pairs = [(e.finetuned_from, e.id) for e in load_profile("paper").pool if e.finetuned_from in er and e.id in er]
    claims = {c.statement: c for c in compare.robustness_claims(demo, run=pd.DataFrame(columns=["entry"]))}
    positive = next(c for s, c in claims.items() if s.startswith("every robust zero-shot CLIP model has a positive"))
    assert positive.paper == f"{sum(er[e] > 0 for e in zs)} of {len(zs)}"
    lowers = next(c for s, c in claims.items() if s.startswith("finetuning on ImageNet lowers"))
    coca = 2  # Table 3: 24 > 14 and 34 > 21
    assert lowers.paper == f"{sum(er[a] > er[b] for a, b in pairs) + coca} of {len(pairs) + coca}"
    assert positive.of == 0 and "no case" in positive.sentence


def test_claims_count_planted_run_values(demo):
    # kurtosis planted: zero-shot above finetuned for RN and ViT, below for CoCa -> 2 of 3 pairs
    planted = {"demo-rn-zeroshot": 40.0, "demo-rn-finetuned": 5.0, "demo-vit-zeroshot": 9.0,
               "demo-vit-finetuned": 3.1, "demo-coca-zeroshot": 3.0, "demo-coca-finetuned": 3.5,
               "demo-rn-supervised": 3.0, "demo-rn-captions": 7.0, "demo-vit-supervised": 3.2}
    run = pd.DataFrame({"entry": list(planted), "kurtosis": list(planted.values())})
    claims = compare.outlier_claims(demo, run)
    assert (claims[0].holds, claims[0].of) == (2, 3)
    assert (claims[1].holds, claims[1].of) == (2, 3)  # RN50 and ViT-B-32 have one > 6, CoCa does not
    assert (claims[2].holds, claims[2].of) == (2, 3)  # the captions model at 7 breaks "no outlier features"
    assert claims[0].sentence.endswith("this run 2 of 3")
    assert "Table 4: 2 of 2" in claims[0].paper  # 12.0 > 3.6 and 15.5 > 4.6


def test_pruning_and_cka_claims_count_planted_curves(demo):
    run = pd.DataFrame({"entry": ["a"] * 2 + ["b"] * 2, "fraction": [0.0, 0.8] * 2, "imagenet": [0.5, 0.46, 0.5, 0.4]})
    c = compare.pruning_claims(demo, run)[0]
    assert (c.holds, c.of) == (1, 2)  # 0.46 >= 0.9 * 0.5, 0.40 < 0.45
    cka = pd.DataFrame({"entry": ["x"] * 4 + ["y"] * 4, "dataset": "imagenet", "layer": ["l1", "l2", "l3", "embedding"] * 2,
                        "depth": [0, 1, 2, 3] * 2, "cka": [0.99, 0.97, 0.95, 0.6, 0.99, 0.5, 0.45, 0.40]})
    c = compare.cka_claims(cka)[0]
    assert (c.holds, c.of) == (1, 2)


def test_numbers_reports_counterparts_for_the_demo(demo):
    results.record(demo, "robustness", "demo-rn-zeroshot", {"imagenet": 0.1, "shifts_mean": 0.05, "er": 0.01,
                                                            "acc_ratio": 0.5})
    results.record(demo, "outlier_features", "demo-coca-zeroshot", {"kurtosis": 4.0})
    nums = compare.numbers(demo)
    clip = paper_values.accuracies().query("table != '3'")
    expected = (clip["imagenet"].notna().sum() + clip["shifts_mean"].notna().sum() + clip["er"].notna().sum()
                + clip["acc_ratio"].notna().sum() + 4 * 4 + len(paper_values.polysemanticity()))  # Tables 3-5: 4 x 4
    assert len(nums) == expected
    got = nums.dropna(subset=["this run"])
    assert len(got) == 5
    assert set(got["paper model"]) == {"RN50-openai", "coca-ViT-B-32-laion2b"}
    row = got[(got["paper item"] == "Table 1")].iloc[0]
    assert (row["paper"], row["this run"], row["difference"]) == (60, 10.0, -50.0)
    assert got[got["paper item"] == "Table 4"]["paper"].iloc[0] == 12.0


def test_entry_styles_are_distinct_within_a_family():
    frame = pd.DataFrame({"entry": [f"z{i}" for i in range(5)] + ["s0"],
                          "family": ["robust_zeroshot_clip"] * 5 + ["supervised"]})
    styles = plots.entry_styles(frame)
    assert len({styles[f"z{i}"][0] for i in range(5)}) == 5
    assert len({styles[f"z{i}"][1] for i in range(5)}) == 5
    # shades stay in the family's hue
    import colorsys

    from matplotlib.colors import to_rgb

    base = colorsys.rgb_to_hls(*to_rgb(plots.FAMILY_COLORS["robust_zeroshot_clip"]))[0]
    assert all(abs(colorsys.rgb_to_hls(*styles[f"z{i}"][0])[0] - base) < 0.02 for i in range(5))


def test_log_ticks_are_plain_numbers():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [2.4, 12.0])
    ax.set_yscale("log")
    plots.plain_log_ticks(ax)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    plt.close(fig)
    assert labels and all(re.fullmatch(r"\d+(\.\d+)?", s) for s in labels), labels
    assert "3" in labels and "10" in labels


def test_table_style_one_decimal_dash_no_index():
    df = pd.DataFrame({"model": ["a", "b", "c"], "acc": [17.5, np.nan, -0.02], "n": [3, 4, 5]}, index=[5, 6, 7])
    html = plots.table(df, "caption").to_html()
    assert ">17.5<" in html and ">–<" in html and "17.500000" not in html and "nan" not in html
    assert ">0.0<" in html and "-0.0" not in html
    assert "row_heading" not in html and ">3<" in html
