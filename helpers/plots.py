"""Shared figure conventions: one colour per family across every chapter (the paper's Figure 1
colours: robust zero-shot blue, fine-tuned green, supervised orange, ImageNet-Captions red)."""
from __future__ import annotations

from .config import FAMILIES

FAMILY_COLORS = {
    "robust_zeroshot_clip": "#1f77b4",
    "finetuned_clip": "#2ca02c",
    "supervised": "#ff7f0e",
    "imagenet_captions_clip": "#d62728",
    "coca_zeroshot": "#9467bd",
    "coca_finetuned": "#8c564b",
}
FAMILY_ORDER = list(FAMILIES)


def family_palette(families=None) -> dict[str, str]:
    """Colours keyed by the families' display labels (for seaborn ``hue=`` on labels)."""
    fams = FAMILY_ORDER if families is None else [f for f in FAMILY_ORDER if f in set(families)]
    return {FAMILIES[f]: FAMILY_COLORS[f] for f in fams}


def setup_style() -> None:
    """A clean seaborn style shared by all chapters."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.95)


def _family_labels(df):
    return df.assign(family_label=df["family"].map(FAMILIES))


def robustness_panels(run, paper, metric: str, ylabel: str, title: str):
    """Figure 1a/1b style: one panel for the paper's models and one for this run's, models grouped
    by backbone and coloured by family (values in % from fractions)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=False)
    for ax, (name, df) in zip(axes, [("Paper (Tables 1-3)", paper), ("This run", run)]):
        df = _family_labels(df.dropna(subset=[metric]))
        if df.empty:
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
        else:
            sns.stripplot(data=df.assign(value=100 * df[metric]), x="backbone", y="value", hue="family_label",
                          palette=family_palette(df["family"]), dodge=True, size=7, jitter=False, ax=ax,
                          order=sorted(df["backbone"].unique()))
            ax.legend(title=None, fontsize=8, loc="best")
        ax.axhline(0, color="0.4", lw=0.8)
        ax.set(title=name, xlabel="backbone", ylabel=ylabel)
        ax.tick_params(axis="x", rotation=20)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def baseline_plot(points, slope: float, intercept: float, fit=None):
    """Figure 6 style: logit(mean shift accuracy) against logit(ImageNet accuracy) with the ER
    baseline of Eq. (5); the vertical distance to the line is the effective robustness."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    from .metrics import logit

    fig, ax = plt.subplots(figsize=(6.5, 5))
    df = _family_labels(points).assign(x=lambda d: logit(d.imagenet), y=lambda d: logit(d.shifts_mean))
    sns.scatterplot(data=df, x="x", y="y", hue="family_label", style="source", palette=family_palette(df["family"]),
                    s=60, ax=ax)
    xs = np.linspace(logit(0.02), logit(0.95), 50)
    ax.plot(xs, slope * xs + intercept, color="k", lw=1.2, label=f"baseline ({slope:.2f}, {intercept:.2f})")
    if fit is not None:
        ax.plot(xs, fit.slope * xs + fit.intercept, color="k", ls="--", lw=1,
                label=f"refit ({fit.slope:.2f}, {fit.intercept:.2f}, r={fit.r:.3f})")
    ticks = np.array([0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95])
    ax.set_xticks(logit(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_yticks(logit(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set(xlabel="ImageNet top-1 (%, logit scale)", ylabel="mean of 5 shifts top-1 (%, logit scale)",
           title="Effective robustness is the lift above the baseline")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig
