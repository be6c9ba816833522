"""The book's presentation helpers: the one table helper (display names, no code names, no column
a reader does not need), the Figure 4 comparison and the summary's catalogue view."""
import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd

from helpers import plots
from helpers.chapters import concept_probing


def test_table_shows_display_names_families_and_a_dash_for_missing():
    df = pd.DataFrame({"entry": ["a", "b"], "importance_ratio": [2.0, np.nan], "shifts_mean": [0.5, 0.25],
                       "family": ["robust_zeroshot_clip", "supervised"]})
    html = plots.table(df, "caption").to_html()
    for shown in ("model", "importance ratio", "mean of 5 shifts", "Robust zero-shot CLIP", "Supervised", "–"):
        assert shown in html
    for code in ("importance_ratio", "shifts_mean", "robust_zeroshot_clip", "NaN"):
        assert code not in html
    assert "row_heading" not in html  # no index column


def test_table_drops_what_a_reader_does_not_need():
    df = pd.DataFrame({"paper model": ["ViT-B-16-openai", "RN50-openai"], "paper": [674.0, 500.0],
                       "this run": [3.0, 2.0], "difference": [-671.0, -498.0],
                       "this run's model": ["demo-vit (untrained stand-in)", "demo-rn (untrained stand-in)"],
                       "backbone": ["ViT-B-16", "RN50"], "failed": ["", ""]})
    shown, note = plots.display_frame(df)
    # the backbone is in every paper model's name; difference of values 100x apart; an empty column
    assert list(shown.columns) == ["paper model", "paper", "this run", "this run's model"]
    assert shown["this run's model"].tolist() == ["demo-vit", "demo-rn"]
    assert note == "this run's models are untrained stand-ins"
    same_scale = df.assign(**{"this run": [670.0, 497.0], "this run's model": ["x", "y"], "backbone": ["B", "C"]})
    kept, note = plots.display_frame(same_scale)
    assert "difference" in kept and "backbone" in kept and note == ""


def test_separate_scales_at_ten_times():
    assert plots.separate_scales([674, 747], [3, 6])
    assert not plots.separate_scales([20, 30], [3, 5])  # 30 / 5 = 6
    assert plots.separate_scales([1.0], [0.0])
    assert not plots.separate_scales([], [1.0])


def test_venn_comparison_counts_regions_by_hand():
    venns = {"RN50": {"zero-shot": {"a", "b", "c", "d"}, "finetuned": {"a", "b", "e"}, "supervised": {"a", "b", "f"}}}
    view, claims = concept_probing.venn_comparison(venns)
    # all three: {a, b} = 2; zero-shot only: {c, d} = 2
    assert view.set_index("region")["this run RN50"].to_dict() == {"all three": 2, "zero-shot only": 2}
    # regions: z only 2, f only 1, s only 1, all three 2, pairs 0: the shared region ties for largest
    assert (claims[0].holds, claims[0].of) == (1, 1)
    empty_view, empty_claims = concept_probing.venn_comparison({})
    assert (empty_claims[0].holds, empty_claims[0].of) == (0, 0)


def test_show_figure_writes_a_numbered_figure_directive(capsys):
    import matplotlib.pyplot as plt
    from unittest import mock

    fig, axes = plt.subplots(2, 1, sharex=True)
    for ax in axes:
        ax.plot([0, 1], [1, 2])
    fig.suptitle("baked-in title")
    shown = []
    with mock.patch("IPython.display.display", side_effect=shown.append):
        plots.show_figure(fig, "fig-x", "Reproduces the paper's Figure 2a.")
    text = shown[0].data
    assert text.startswith("```{figure} data:image/png;base64,") and ":name: fig-x" in text
    assert text.rstrip().endswith("Reproduces the paper's Figure 2a.\n```".rstrip())
    assert fig._suptitle.get_text() == ""
    assert all(t.get_visible() for t in axes[0].get_xticklabels() if t.get_text())  # shared x-axis still labelled
    assert axes[0].xaxis.get_tick_params()["labelbottom"]
    plots.show_figure(None, "fig-y", "c", empty="nothing here")
    assert "nothing here" in capsys.readouterr().out


def test_summary_catalogue_view_and_claims(tmp_path):
    """The catalogue as the page shows it: the paper's item and report first, chapters by their
    titles; the verdict's claims are the table's rows."""
    from helpers.chapters import summary
    from helpers.study import results
    from test_chapter_oracles import IDS, make_study

    study = make_study(tmp_path, summary.SECTION)
    for e in IDS:
        results.record(study.profile, "robustness", e, {"imagenet": 0.5, "er": 0.1})
    view = summary.catalogue_view(study)
    assert list(view.columns) == ["paper item", "quantity", "paper reports", "models in this run", "chapter",
                                  "left out (tables of failed jobs)"]
    row = view.set_index("paper item").loc["Figure 2b"]
    assert row["chapter"] == "Privileged directions" and row["models in this run"] == 0
    assert view.set_index("paper item").loc["Table 1", "models in this run"] == len(IDS)
    # the failed-jobs column is empty here: the page's table helper leaves it out
    shown, _ = plots.display_frame(view)
    assert "left out (tables of failed jobs)" not in shown.columns
    claims = summary.claims(study)
    assert [c.statement for c in claims] == summary.all_claims(study)["claim"].tolist()
