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


def pool_points(df, value: str, ylabel: str, title: str, log: bool = False, ref: float | None = None,
                ref_label: str = "", interval: tuple[str, str] | None = None):
    """One point per model, grouped by backbone and dodged by family (Figures 2a, 2b, 3 style),
    with optional interval bars (e.g. bootstrap CI columns) and a reference line."""
    import matplotlib.pyplot as plt
    import numpy as np

    order = sorted(df["backbone"].unique())
    fams = [f for f in FAMILY_ORDER if f in set(df["family"])]
    width = 0.8 / max(len(fams), 1)
    fig, ax = plt.subplots(figsize=(8.5, 4.2))
    for j, fam in enumerate(fams):
        sub = df[df["family"] == fam]
        x = np.array([order.index(b) for b in sub["backbone"]]) - 0.4 + width * (j + 0.5)
        y = sub[value].to_numpy(dtype=float)
        yerr = None
        if interval is not None:
            yerr = np.vstack([y - sub[interval[0]].to_numpy(float), sub[interval[1]].to_numpy(float) - y])
        ax.errorbar(x, y, yerr=yerr, fmt="o", ms=7, color=FAMILY_COLORS[fam], ecolor="0.35", elinewidth=1,
                    capsize=3, label=FAMILIES[fam])
    if ref is not None:
        ax.axhline(ref, color="0.3", ls="--", lw=1, label=ref_label or None)
    if log:
        ax.set_yscale("log")
    ax.set_xticks(range(len(order)), order)
    ax.set(xlabel="backbone", ylabel=ylabel, title=title)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def distributions(df, value: str, xlabel: str, title: str, log: bool = False):
    """Per-model distributions (box per model, coloured by family)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    df = _family_labels(df)
    fig, ax = plt.subplots(figsize=(8.5, 0.45 * df["entry"].nunique() + 1.5))
    sns.boxplot(data=df, y="entry", x=value, hue="family_label", palette=family_palette(df["family"]),
                dodge=False, fliersize=2, ax=ax)
    if log:
        ax.set_xscale("log")
    ax.set(xlabel=xlabel, ylabel="", title=title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def ranked_profiles(df, x: str, y: str, xlabel: str, ylabel: str, title: str, col: str = "backbone",
                    logy: bool = True):
    """Sorted per-model profiles (importance by direction, Figures 9-10; mean |h_i| by coordinate),
    one panel per backbone, one line per model coloured by family."""
    import seaborn as sns

    df = _family_labels(df)
    g = sns.relplot(data=df, x=x, y=y, hue="family_label", units="entry", estimator=None, kind="line",
                    col=col, col_wrap=min(3, df[col].nunique()), palette=family_palette(df["family"]),
                    height=3.2, aspect=1.2, facet_kws={"sharey": False, "sharex": False}, marker="o", markersize=3)
    if logy:
        g.set(yscale="log")
    g.set_axis_labels(xlabel, ylabel)
    g.legend.set_title(None)
    g.figure.suptitle(title, y=1.02)
    return g.figure


def venn3(sets: dict[str, set], title: str, ax=None):
    """A three-set Venn diagram with the size of every region (Figure 4), drawn with plain circles."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle

    names = list(sets)
    if len(names) != 3:
        raise ValueError(f"venn3 needs exactly three sets, got {len(names)}: {names}")
    A, B, C = (sets[n] for n in names)
    regions = {
        (1, 0, 0): len(A - B - C), (0, 1, 0): len(B - A - C), (0, 0, 1): len(C - A - B),
        (1, 1, 0): len((A & B) - C), (1, 0, 1): len((A & C) - B), (0, 1, 1): len((B & C) - A),
        (1, 1, 1): len(A & B & C),
    }
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.2))
    centres = [(-0.5, 0.35), (0.5, 0.35), (0.0, -0.5)]
    colours = ["#1f77b4", "#2ca02c", "#ff7f0e"]
    for (x, y), col, name in zip(centres, colours, names):
        ax.add_patch(Circle((x, y), 0.95, alpha=0.25, color=col, lw=0))
        ax.add_patch(Circle((x, y), 0.95, fill=False, color=col, lw=1.5))
    text = {(1, 0, 0): (-1.0, 0.65), (0, 1, 0): (1.0, 0.65), (0, 0, 1): (0.0, -1.05),
            (1, 1, 0): (0.0, 0.75), (1, 0, 1): (-0.6, -0.35), (0, 1, 1): (0.6, -0.35), (1, 1, 1): (0.0, 0.05)}
    for region, (x, y) in text.items():
        ax.text(x, y, str(regions[region]), ha="center", va="center", fontsize=11)
    for (x, y), name in zip([(-1.2, 1.45), (1.2, 1.45), (0.0, -1.65)], names):
        ax.text(x, y, f"{name} ({len(sets[name])})", ha="center", va="center", fontsize=10)
    ax.set(xlim=(-1.9, 1.9), ylim=(-1.9, 1.7), aspect="equal", title=title)
    ax.axis("off")
    return ax
