"""The one figure and table style every chapter uses.

Conventions: one colour family per model family (the paper's Figure 1 colours: robust zero-shot
blue, fine-tuned green, supervised orange, ImageNet-Captions red), a distinct shade and marker per
model within its family, models and backbones in the paper's order (Table 1: RN50 before RN101),
legends outside the data, plain tick labels on log axes, and the paper's value drawn as a hollow
marker beside this run's filled one. Tables: no index, one decimal, a dash for a missing value.
"""
from __future__ import annotations

import colorsys
import re
from os import PathLike

from helpers.metrics import logit
from helpers.paper.compare import backbone_order, counterparts, in_paper_order, paper_id
from helpers.config import FAMILIES

FAMILY_COLORS = {
    "robust_zeroshot_clip": "#1f77b4",
    "finetuned_clip": "#2ca02c",
    "supervised": "#ff7f0e",
    "imagenet_captions_clip": "#d62728",
    "coca_zeroshot": "#9467bd",
    "coca_finetuned": "#8c564b",
}
FAMILY_ORDER = list(FAMILIES)
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "<", ">", "h", "p", "*", "8", "d", "H")
#: Markers of the paper's pretraining sets (Figure 1's left panel keys models by these).
PRETRAINING_MARKERS = {"OpenAI": "o", "YFCC-15M": "s", "CC-12M": "D", "LAION-400M": "^", "LAION-2B": "v",
                       "DataComp": "P", "ImageNet": "X", "ImageNet-Captions-t": "<", "ImageNet-Captions-td": ">",
                       "ImageNet-Captions-tdt": "h"}
PAPER_LABEL = "paper (hollow)"
#: Figures are saved at twice the CSS pixel density (crisp on a high-density screen) and shown at
#: their natural CSS size: a 9 pt legend is 12.5 px and stays above 9 px down to a 72 % scale.
FIGURE_DPI = 200

#: Column names of the results tables as a reader reads them (``table`` renames every column it
#: finds here; a chapter passes ``columns=`` for anything else).
DISPLAY_NAMES = {
    "entry": "model", "paper_entry": "paper model", "family": "family", "backbone": "backbone",
    "pretraining": "pretraining data", "dataset": "dataset", "imagenet": "ImageNet", "imagenetv2": "ImageNet-V2",
    "imagenet-v2": "ImageNet-V2", "imagenet-r": "ImageNet-R", "imagenet-sketch": "ImageNet-Sketch",
    "objectnet": "ObjectNet", "imagenet-a": "ImageNet-A", "shifts_mean": "mean of 5 shifts", "er": "ER",
    "acc_ratio": "%acc", "kurtosis": "kurtosis", "ci_low": "95 % interval, low", "ci_high": "95 % interval, high",
    "low": "95 % interval, low", "high": "95 % interval, high", "d_H": "dimension of h",
    "top_over_mean": "largest coordinate / mean", "importance_ratio": "importance ratio",
    "most_privileged_direction": "most privileged direction", "unique_concepts": "unique concepts",
    "polysemanticity": "polysemanticity", "threshold": "AP threshold", "fraction": "fraction pruned",
    "alpha": "α", "published_top1": "published top-1 (%)", "top1_deviation": "deviation (points)",
    "spearman": "Spearman ρ", "cka": "CKA", "depth": "layer", "er_percent": "ER (points)",
    "kurtosis_shifts": "kurtosis, mean of 5 shifts", "n_fine": "finetuned concepts", "per_side": "images per side",
    "kurtosis_penultimate": "kurtosis, penultimate layer", "kurtosis_h": "kurtosis of h",
}
#: Values of the ``indicator`` column of the summary's correlations, as a reader reads them.
INDICATOR_NAMES = {"kurtosis": "activation kurtosis, Eq. (1)", "importance_ratio": "importance ratio, Eq. (3)",
                   "unique_concepts": "unique concepts, Eq. (4)"}
STAND_IN_SUFFIX = " (untrained stand-in)"


def family_palette(families=None) -> dict[str, str]:
    """Colours keyed by the families' display labels (for seaborn ``hue=`` on labels)."""
    fams = FAMILY_ORDER if families is None else [f for f in FAMILY_ORDER if f in set(families)]
    return {FAMILIES[f]: FAMILY_COLORS[f] for f in fams}


def setup_style() -> None:
    """A clean seaborn style shared by all chapters: readable fonts, no legend frame, plain
    numbers on axes (no offset or scientific notation)."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)
    mpl.rcParams.update({"axes.formatter.useoffset": False, "axes.formatter.limits": (-4, 5),
                         "legend.frameon": False, "legend.fontsize": 10, "legend.title_fontsize": 10,
                         "figure.dpi": 100, "savefig.dpi": FIGURE_DPI, "savefig.bbox": "tight"})


def venn_grid(venns: dict[str, dict[str, set]]):
    """Figure 4: one three-set Venn diagram (:func:`venn3`) per backbone, side by side."""
    import matplotlib.pyplot as plt

    if not venns:
        return None  # no backbone of the slice has all three models
    fig, axes = plt.subplots(1, len(venns), figsize=(4.4 * len(venns), 4.4), squeeze=False)
    for ax, (arch, sets_by_role) in zip(axes[0], venns.items()):
        venn3(sets_by_role, arch, ax=ax)
    return fig


def indicator_scatter(indicators):
    """Activation kurtosis (Eq. 1) against effective robustness (Eq. 5), one point per model of
    the run, coloured by family (the summary's take-away 2)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    if indicators.empty or "kurtosis" not in indicators:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.scatterplot(data=indicators.assign(family=indicators.family.map(FAMILIES), er=100 * indicators.er),
                    x="kurtosis", y="er", hue="family", palette=family_palette(indicators.family), s=70, ax=ax)
    ax.set(xscale="log", xlabel="activation kurtosis, Eq. (1)", ylabel="effective robustness (points)")
    plain_log_ticks(ax, "x")
    legend_outside(ax)
    return fig


def _shade(color: str, t: float) -> tuple[float, float, float]:
    """``color`` darkened (t < 0) or lightened (t > 0) in HLS lightness, hue kept."""
    from matplotlib.colors import to_rgb

    h, l, s = colorsys.rgb_to_hls(*to_rgb(color))
    l = l + t * (1 - l) if t > 0 else l * (1 + t)
    return colorsys.hls_to_rgb(h, min(max(l, 0.0), 1.0), s)


def entry_styles(frame) -> dict[str, tuple]:
    """(colour, marker) per entry: its family's colour in a shade of its own and a marker of its
    own, so several models of one family stay apart. ``frame`` has ``entry`` and ``family``
    columns in the order the entries should be styled (the pool order)."""
    import numpy as np

    rows = list(dict.fromkeys(zip(frame["entry"], frame["family"])))
    styles = {}
    for fam in dict.fromkeys(f for _, f in rows):
        members = [e for e, f in rows if f == fam]
        shades = [0.0] if len(members) == 1 else np.linspace(-0.35, 0.45, len(members))
        for i, (e, t) in enumerate(zip(members, shades)):
            styles[e] = (_shade(FAMILY_COLORS.get(fam, "#7f7f7f"), float(t)), MARKERS[i % len(MARKERS)])
    return styles


def plain_log_ticks(ax, axis: str = "y") -> None:
    """Log-axis ticks written as plain numbers (3, 10, 200, not 3.2x10^0), denser when the axis
    spans few decades. Call after the data are drawn (the span sets the tick density)."""
    import numpy as np
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis
    lo, hi = sorted(ax.get_ylim() if axis == "y" else ax.get_xlim())
    decades = np.log10(hi / lo) if lo > 0 else 3
    subs = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if decades < 1.2 else (1.0, 2.0, 5.0) if decades < 2.5 else (1.0,)
    target.set_major_locator(LogLocator(base=10, subs=subs, numticks=15))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(NullFormatter())


def legend_outside(ax, handles=None, labels=None, title=None, where: str = "right", ncol: int | None = None):
    """A legend beside the axes (``right``) or under them (``below``), never over the data; long
    lists (the paper profile's 43 models) get more columns."""
    kw = {"title": title, "frameon": False, "fontsize": 10, "title_fontsize": 10}
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    n = len(handles)
    if where == "below":
        leg = ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=ncol or 3, **kw)
    else:
        leg = ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0,
                        ncol=ncol or (1 if n <= 18 else 2), **kw)
    return leg


def _legend_entries(axes) -> tuple[list, list]:
    """Every panel's legend handles and labels, each label once, in first-seen order: one figure
    legend for a facet grid instead of one legend per panel."""
    handles, labels = [], []
    for ax in (axes.flat if hasattr(axes, "flat") else axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    return handles, labels


def _figure_legend(fig, handles, labels):
    """The legend of a multi-panel figure, right of the panels (two columns for long lists)."""
    return fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.95), frameon=False, fontsize=10,
                      ncol=1 if len(handles) <= 18 else 2)


def _paper_handle():
    from matplotlib.lines import Line2D

    return Line2D([], [], ls="", marker="o", ms=8, mfc="none", mec="0.3", mew=1.4, label=PAPER_LABEL)


def separate_scales(a, b, factor: float = 10.0) -> bool:
    """Whether two sets of values differ in scale by more than ``factor`` (largest magnitudes
    compared): drawn on one axis, the smaller would sit flat on zero."""
    import numpy as np

    a, b = np.abs(np.asarray(a, float)), np.abs(np.asarray(b, float))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if not a.size or not b.size:
        return False
    hi_a, hi_b = a.max(), b.max()
    if hi_a == 0 or hi_b == 0:
        return hi_a != hi_b
    return max(hi_a / hi_b, hi_b / hi_a) > factor


def _stand_in_note(run) -> str:
    return " (untrained stand-ins)" if "stand_in" in run and run["stand_in"].any() else ""


def _with_counterparts(run, profile):
    """``run`` with the paper entry each row is compared with and whether it is a stand-in."""
    links = counterparts(profile)
    df = run.drop(columns=[c for c in ("paper_entry", "stand_in") if c in run]).merge(links, on="entry", how="left")
    df["paper_entry"] = df["paper_entry"].fillna(df["entry"])
    df["stand_in"] = df["stand_in"].fillna(False).astype(bool)
    return in_paper_order(df, profile)


def pool_points(run, value: str, ylabel: str, title: str, profile, paper=None, paper_value: str | None = None,
                scale: float = 1.0, log: bool = False, ref: float | None = None, ref_label: str = "",
                interval: tuple[str, str] | None = None, ax=None):
    """One slot per model of this run, grouped by backbone in the paper's order: this run's value
    (filled marker, optional interval bars) and, where the paper prints one for its counterpart,
    the paper's value (hollow marker of the same style) in the same slot (Figures 1-3 style)."""
    import matplotlib.pyplot as plt
    import numpy as np

    df = _with_counterparts(run.groupby("entry", as_index=False, sort=False).first(), profile)
    styles = entry_styles(df)
    paper_map = {} if paper is None else dict(zip(paper["entry"], paper[paper_value or value]))
    order = backbone_order(df["backbone"])
    many = len(df) > 12
    ms = 5 if many else 8
    if ax is None:
        fig, ax = plt.subplots(figsize=(min(9.0, max(5.0, 0.6 * len(df) + 2)), 4.2 + (0.2 * -(-len(df) // 4) if many else 0)))
    fig = ax.figure
    x = 0.0
    ticks, tick_labels = [], []
    paper_points, run_values = [], []
    for b in order:
        sub = df[df["backbone"] == b]
        start = x
        for r in sub.itertuples():
            color, marker = styles[r.entry]
            y = scale * getattr(r, value)
            yerr = None
            if interval is not None:
                lo, hi = scale * getattr(r, interval[0]), scale * getattr(r, interval[1])
                yerr = np.array([[y - lo], [hi - y]])
            ax.errorbar([x], [y], yerr=yerr, fmt=marker, ms=ms, color=color, ecolor="0.35", elinewidth=1, capsize=3,
                        label=f"{r.entry} → {r.paper_entry}" if r.stand_in else r.entry, zorder=3)
            p = paper_map.get(r.paper_entry)
            if p is not None and np.isfinite(p):
                paper_points.append((x + 0.28, scale * p, marker, color))
                run_values.append(abs(y))
            x += 1
        ticks.append((start + x - 1) / 2)
        tick_labels.append(b)
        x += 0.8
    if ref is not None:
        ax.axhline(ref, color="0.3", ls="--", lw=1, label=ref_label or None, zorder=1)
    paper_ax = ax
    if paper_points and separate_scales([p[1] for p in paper_points], run_values):
        # the paper's values and this run's differ by more than 10x (the demo's stand-ins): each on
        # its own axis, so that neither flattens the other
        paper_ax = ax.twinx()
        paper_ax.grid(False)
        paper_ax.set_ylabel("paper's value (hollow markers)")
    for px, py, marker, color in paper_points:
        paper_ax.plot([px], [py], ls="", marker=marker, ms=ms + 1, mfc="none", mec=color, mew=1.4, zorder=3)
    if log:
        ax.set_yscale("log")
        plain_log_ticks(ax)
        if paper_ax is not ax:
            paper_ax.set_yscale("log")
            plain_log_ticks(paper_ax)
    ax.set_xticks(ticks, tick_labels, rotation=25 if len(order) > 2 else 0, ha="right" if len(order) > 2 else "center")
    ax.set_xlim(-0.7, x - 0.5)
    ax.set(xlabel="backbone", ylabel=ylabel, title=title)
    handles, labels = ax.get_legend_handles_labels()
    if paper_map:
        handles.append(_paper_handle())
        labels.append(PAPER_LABEL)
    leg = legend_outside(ax, handles, labels, title="this run" + _stand_in_note(df), where="below" if many else "right",
                         ncol=4 if many else None)
    if leg is not None and paper_ax is not ax and not many:
        width = fig.get_figwidth() * ax.get_position().width  # inches
        leg.set_bbox_to_anchor((1 + 0.9 / width, 1))  # 0.9 inch right: clear of the paper's axis and its label
    return fig


def robustness_panels(run, paper, metric: str, ylabel: str, title: str, profile):
    """Figure 1a/1b: on top, every model of the paper (Tables 1-3) by backbone, coloured by family
    and marked by pretraining set; below, this run's models with their counterparts' paper values
    (hollow) in the same axes, on the same scale. Values in % from fractions."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    n_run = run["entry"].nunique()
    below = 0.2 * -(-n_run // 4) + 0.6 if n_run > 12 else 0.0  # room for a long legend under the lower panel
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7.6 + below), gridspec_kw={"height_ratios": [1, 1 + below / 3.8]})
    p = paper.dropna(subset=[metric])
    order = backbone_order(p["backbone"])
    fams = [f for f in FAMILY_ORDER if f in set(p["family"])]
    width = 0.8 / max(len(fams), 1)
    for j, fam in enumerate(fams):
        for r in p[p["family"] == fam].itertuples():
            x = order.index(r.backbone) - 0.4 + width * (j + 0.5)
            top.plot([x], [100 * getattr(r, metric)], ls="", marker=PRETRAINING_MARKERS.get(r.pretraining, "o"),
                     ms=7, color=FAMILY_COLORS[fam], mec="white", mew=0.5, alpha=0.9)
    top.axhline(0, color="0.4", lw=0.8)
    top.set_xticks(range(len(order)), order, rotation=25, ha="right")
    top.set(title="Paper: every model (Tables 1-3)", xlabel="", ylabel=ylabel)
    handles = [Line2D([], [], ls="", marker="s", ms=8, color=FAMILY_COLORS[f], label=FAMILIES[f]) for f in fams]
    pre = [k for k in PRETRAINING_MARKERS if k in set(p["pretraining"])]
    handles += [Line2D([], [], ls="", marker=PRETRAINING_MARKERS[k], ms=7, color="0.35", label=k) for k in pre]
    legend_outside(top, handles, [h.get_label() for h in handles])
    pool_points(run, metric, ylabel, "This run, with its counterparts' paper values (hollow)", profile, paper=paper,
                scale=100, ref=0, ax=bottom)
    lo = min(top.get_ylim()[0], bottom.get_ylim()[0])
    hi = max(top.get_ylim()[1], bottom.get_ylim()[1])
    top.set_ylim(lo, hi)
    bottom.set_ylim(lo, hi)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def baseline_plot(points, slope: float, intercept: float, fit=None):
    """Figure 6 style: logit(mean shift accuracy) against logit(ImageNet accuracy) with the ER
    baseline of Eq. (5); the vertical distance to the line is the effective robustness."""
    import matplotlib.pyplot as plt
    import numpy as np
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(7.5, 5))
    df = points.assign(family_label=points["family"].map(FAMILIES), x=lambda d: logit(d.imagenet),
                       y=lambda d: logit(d.shifts_mean))
    sns.scatterplot(data=df, x="x", y="y", hue="family_label", style="source", palette=family_palette(df["family"]),
                    hue_order=[FAMILIES[f] for f in FAMILY_ORDER if f in set(df["family"])], s=60, ax=ax)
    xs = np.linspace(logit(0.02), logit(0.95), 50)
    ax.plot(xs, slope * xs + intercept, color="k", lw=1.2, label=f"baseline ({slope:.2f}, {intercept:.2f})")
    if fit is not None:
        ax.plot(xs, fit.slope * xs + fit.intercept, color="k", ls="--", lw=1,
                label=f"refit ({fit.slope:.2f}, {fit.intercept:.2f}, r={fit.r:.3f})")
    ticks = np.array([0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95])
    ax.set_xticks(logit(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_yticks(logit(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set(xlabel="ImageNet top-1 (%, logit scale)", ylabel="mean of 5 shifts top-1 (%, logit scale)",
           title="Figure 6: effective robustness is the lift above the baseline")
    handles, labels = ax.get_legend_handles_labels()
    labels = [{"family_label": "family", "source": "values from"}.get(lab, lab) for lab in labels]
    legend_outside(ax, handles, labels)
    return fig


# --- Published tables: the OpenCLIP zoo and the ImageNet testbed (chapter openclip_zoo, and the
# testbed refit of the robustness chapter). Legends at 9 pt: legible at the book's page width.
ZOO_FONT = 9
TESTBED_GREY = "0.72"


def zoo_palette(families) -> dict[str, tuple]:
    """A colour per training-data family, in the order given (most robust first reads best)."""
    import matplotlib as mpl

    cmap = mpl.colormaps["tab20"]
    order = list(dict.fromkeys(families))
    # even tab20 indices first (saturated), then the light ones
    idx = [*range(0, 20, 2), *range(1, 20, 2)]
    return {f: cmap(idx[i % 20]) for i, f in enumerate(order)}


def _zoo_scatter(ax, zoo, testbed, y: str, palette, scale: float = 100.0):
    """Testbed cloud (grey), zoo coloured by family (in the palette's order), the paper's pool
    ringed in black."""
    ax.scatter(100 * testbed["imagenet"], scale * testbed[y], s=14, color=TESTBED_GREY, lw=0,
               label="testbed, trained on ImageNet alone", zorder=1)
    for fam in palette:
        g = zoo[zoo["family"] == fam]
        ax.scatter(100 * g["imagenet"], scale * g[y], s=30, color=palette[fam], edgecolor="white", lw=0.4,
                   label=fam, zorder=2)
    pool = zoo[zoo["paper_entry"].notna()]
    if not pool.empty:  # no rings (and no legend entry for them) when no pool model is marked
        ax.scatter(100 * pool["imagenet"], scale * pool[y], s=90, facecolor="none", edgecolor="k", lw=1.1,
                   label="in the paper's pool", zorder=3)
    ax.set_xlabel("ImageNet top-1 (%)")


def zoo_figure1(zoo, testbed, slope: float, intercept: float):
    """Figure 1a/1b over the OpenCLIP zoo: ER (Eq. 5) and %acc against ImageNet accuracy, one
    colour per training-data family, the paper's pool ringed, the testbed's ImageNet-trained models
    as the grey reference cloud."""
    import matplotlib.pyplot as plt

    order = zoo.groupby("family")["er"].median().sort_values(ascending=False).index
    pal = zoo_palette(order)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), sharex=True)
    _zoo_scatter(axes[0], zoo, testbed, "er", pal)
    axes[0].axhline(0, color="k", lw=0.8)
    axes[0].set(ylabel="effective robustness (points of %)",
                title=f"1a: effective robustness ($\\beta_1$ = {slope:.2f}, $\\beta_0$ = {intercept:.2f})")
    _zoo_scatter(axes[1], zoo, testbed, "acc_ratio", pal)
    axes[1].axhline(100, color="k", lw=0.8, ls=":")
    axes[1].set(ylabel="%acc (mean of 5 shifts / ImageNet, %)", title="1b: accuracy ratio")
    for ax in axes:
        ax.title.set_fontsize(10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, frameon=False,
               fontsize=ZOO_FONT, title="training data (colour)", title_fontsize=ZOO_FONT, markerscale=1.4)
    fig.tight_layout()
    return fig


def zoo_placement_figure(zoo, testbed, slope: float, intercept: float, new: dict, label: str):
    """:func:`zoo_figure1` with one more model marked and labelled on both panels: a new model
    placed in the zoo by ``clip-study diagnose --accuracies``. ``new`` holds its ``imagenet``,
    ``er`` and ``acc_ratio`` (fractions; :func:`helpers.chapters.openclip_zoo.placement`); a NaN
    %acc (ImageNet accuracy 0) is left out of panel 1b."""
    import math

    fig = zoo_figure1(zoo, testbed, slope, intercept)
    # the label goes where the zoo leaves room: above its rising ER curve in 1a, below it (between
    # the zoo and the testbed) in 1b; towards the middle of the axes, so that it stays inside
    for ax, key, dy in zip(fig.axes[:2], ("er", "acc_ratio"), (14, -16)):
        value = new.get(key)
        if value is None or not math.isfinite(value):
            continue
        x, y = 100 * new["imagenet"], 100 * value
        ax.scatter([x], [y], marker="*", s=260, color="k", edgecolor="white", lw=0.8, zorder=5,
                   label="the diagnosed model")
        lo, hi = ax.get_xlim()
        dx = 14 if x < (lo + hi) / 2 else -14
        ax.annotate(label, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=ZOO_FONT, zorder=6,
                    ha="right" if dx < 0 else "left", va="bottom" if dy > 0 else "top",
                    bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="0.6", lw=0.5),
                    arrowprops=dict(arrowstyle="-", color="0.3", lw=0.7, shrinkA=0, shrinkB=6))
    fig.axes[0].set_title(f"{fig.axes[0].get_title()}\nstar: {label}", fontsize=10)
    return fig


def zoo_er_vs_size(zoo):
    """ER against model size (parameters, image and text towers) and inference FLOPs (OpenCLIP's
    model profile), log x axes, one colour per training-data family."""
    import matplotlib.pyplot as plt

    order = zoo.groupby("family")["er"].median().sort_values(ascending=False).index
    pal = zoo_palette(order)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    for ax, col, label in ((axes[0], "params_m", "parameters (millions)"), (axes[1], "gflops", "GFLOPs per image")):
        for fam in order:
            g = zoo[zoo["family"] == fam]
            ax.scatter(g[col], 100 * g["er"], s=30, color=pal[fam], edgecolor="white", lw=0.4, label=fam)
        pool = zoo[zoo["paper_entry"].notna()]
        ax.scatter(pool[col], 100 * pool["er"], s=90, facecolor="none", edgecolor="k", lw=1.1,
                   label="in the paper's pool")
        ax.set_xscale("log")
        plain_log_ticks(ax, "x")
        ax.set_xlabel(label)
    axes[0].set_ylabel("effective robustness (points of %)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=3, frameon=False,
               fontsize=ZOO_FONT, title="training data (colour)", title_fontsize=ZOO_FONT, markerscale=1.4)
    fig.tight_layout()
    return fig


def testbed_baseline_plot(testbed, fit, slope: float, intercept: float):
    """Eq. (5)'s baseline refitted on the ImageNet testbed (Appendix A, Figure 6): logit(mean
    shift accuracy) against logit(ImageNet accuracy) for every testbed model with the six
    accuracies, the models the fit uses by testbed type, those trained with more data hollow, the
    refit line and the paper's line."""
    import matplotlib.pyplot as plt
    import numpy as np

    df = testbed.assign(shifts_mean=testbed[["imagenet-v2", "imagenet-r", "imagenet-sketch", "objectnet",
                                             "imagenet-a"]].mean(axis=1))
    df = df[(df.imagenet > 0) & (df.imagenet < 1) & (df.shifts_mean > 0) & (df.shifts_mean < 1)]
    x, y = logit(df.imagenet), logit(df.shifts_mean)
    styles = {"STANDARD": ("standard training", "#1f77b4"),
              "LOW_ACCURACY_CNN": ("low-accuracy checkpoints (early epochs, subsampled data)", "#17becf"),
              "ROBUST_INTV": ("robustness interventions", "#8c564b"),
              "LP_ADV": ("Lp-adversarially robust", "#bcbd22")}
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    used = df["imagenet_only"]
    for t, (label, color) in styles.items():
        m = used & (df["type"] == t)
        ax.scatter(x[m], y[m], s=16, color=color, lw=0, label=f"{label} ({int(m.sum())})")
    m = used & ~df["type"].isin(list(styles))
    ax.scatter(x[m], y[m], s=22, color="0.3", marker="x", lw=1, label=f"classical baselines on pixels ({int(m.sum())})")
    ax.scatter(x[~used], y[~used], s=22, facecolor="none", edgecolor="#2ca02c", lw=1,
               label=f"trained with more data: excluded ({int((~used).sum())})")
    xs = np.linspace(logit(0.002), logit(0.95), 50)
    ax.plot(xs, fit.slope * xs + fit.intercept, color="k", lw=1.4,
            label=f"refit: slope {fit.slope:.2f}, intercept {fit.intercept:.2f}, r {fit.r:.3f} (n={fit.n})")
    ax.plot(xs, slope * xs + intercept, color="#d62728", lw=1.2, ls="--",
            label=f"paper: slope {slope:.2f}, intercept {intercept:.2f}, r 0.99")
    ticks = np.array([0.002, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95])
    ax.set_xticks(logit(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_yticks(logit(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set(xlabel="ImageNet top-1 (%, logit scale)", ylabel="mean of 5 shifts top-1 (%, logit scale)",
           title="The ER baseline refitted on the ImageNet testbed (published accuracies)")
    ax.title.set_fontsize(10)
    ax.legend(loc="upper left", fontsize=ZOO_FONT, frameon=False)
    fig.tight_layout()
    return fig


def distributions(df, value: str, xlabel: str, title: str, profile, log: bool = False):
    """Per-model distributions (a box per model in the paper's order, coloured by family)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    order = list(in_paper_order(df[["entry"]].drop_duplicates(), profile)["entry"])
    df = df.assign(family_label=df["family"].map(FAMILIES))
    fig, ax = plt.subplots(figsize=(8.5, 0.45 * len(order) + 1.5))
    sns.boxplot(data=df, y="entry", x=value, hue="family_label", palette=family_palette(df["family"]), order=order,
                hue_order=[FAMILIES[f] for f in FAMILY_ORDER if f in set(df["family"])], dodge=False, fliersize=2, ax=ax)
    if log:
        ax.set_xscale("log")
        plain_log_ticks(ax, "x")
    ax.set(xlabel=xlabel, ylabel="", title=title)
    legend_outside(ax)
    return fig


def ranked_profiles(df, x: str, y: str, xlabel: str, ylabel: str, title: str, profile, col: str = "backbone",
                    logy: bool = True):
    """Sorted per-model profiles (importance by direction, Figures 9-10; mean |h_i| by coordinate):
    one panel per backbone in the paper's order, one line per model in its own shade and marker."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    entries = in_paper_order(df[["entry", "family"]].drop_duplicates("entry"), profile)
    styles = entry_styles(entries)
    panels = backbone_order(df[col])
    ncol = min(2, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol + 1.2, 3.4 * nrow), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for e in entries["entry"]:
            sub = df[(df[col] == panel) & (df["entry"] == e)].sort_values(x)
            if sub.empty:
                continue
            color, marker = styles[e]
            ax.plot(sub[x], sub[y], color=color, marker=marker, ms=4, lw=1.3, label=e, markevery=max(1, len(sub) // 12))
        if logy:
            ax.set_yscale("log")
            plain_log_ticks(ax)
        ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))
        ax.set(title=panel, xlabel=xlabel, ylabel=ylabel)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles, labels = _legend_entries(axes)
    _figure_legend(fig, handles, labels)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def threshold_sweep(table, profile, value: str = "unique_concepts", ylabel: str = "unique concepts"):
    """Footnote 3: a value against the AP threshold, one line per model (own shade and marker)."""
    import matplotlib.pyplot as plt

    table = in_paper_order(table, profile)
    styles = entry_styles(table)
    fig, ax = plt.subplots(figsize=(7, 4))
    for e, sub in table.groupby("entry", sort=False):
        color, marker = styles[e]
        ax.plot(sub["threshold"], sub[value], marker=marker, color=color, label=e)
    ax.set(xlabel="AP threshold", ylabel=ylabel, title=f"{ylabel.capitalize()} against the AP threshold")
    legend_outside(ax)
    return fig


def pruning_grid(table, profile, paper=None):
    """Figures 11-14: ImageNet top-1 and ER against the pruned fraction, one row per backbone
    (paper order), one line per model; the paper's unpruned values (Tables 1-2, hollow) at 0."""
    import matplotlib.pyplot as plt
    import numpy as np

    table = _with_counterparts(table, profile)
    styles = entry_styles(table.drop_duplicates("entry"))
    panels = backbone_order(table["backbone"])
    metrics = [("imagenet", "ImageNet top-1 (%)"), ("er", "effective robustness (points)")]
    fig, axes = plt.subplots(len(panels), 2, figsize=(9, 2.9 * len(panels) + 0.6), squeeze=False, sharex=True)
    paper_map = {} if paper is None else paper.set_index("entry")
    for i, b in enumerate(panels):
        for j, (m, label) in enumerate(metrics):
            ax = axes[i, j]
            for e, sub in table[table["backbone"] == b].groupby("entry", sort=False):
                color, marker = styles[e]
                sub = sub.sort_values("fraction")
                ax.plot(100 * sub["fraction"], 100 * sub[m], color=color, marker=marker, ms=4, label=e)
                pe = sub["paper_entry"].iloc[0]
                if len(paper_map) and pe in paper_map.index and np.isfinite(paper_map.loc[pe, m]):
                    ax.plot([0], [100 * paper_map.loc[pe, m]], ls="", marker=marker, ms=9, mfc="none", mec=color, mew=1.6)
            ax.axvline(100 * 0.8, color="0.5", ls=":", lw=1)
            ax.set(title=f"{b}: {label}", ylabel="", xlabel="singular directions pruned (%)" if i == len(panels) - 1 else "")
    handles, labels = _legend_entries(axes)
    if len(paper_map):
        handles.append(_paper_handle())
        labels.append(PAPER_LABEL + ", unpruned")
    _figure_legend(fig, handles, labels)
    fig.suptitle("Figures 11-14: pruning the least important singular directions (dotted: 80 %)")
    fig.tight_layout()
    return fig


def cka_layers(view):
    """Figures 7-8: CKA(zero-shot, finetuned) per layer, ImageNet (orange) and the mean ± sd over
    the five shifts (blue band), one panel per finetuned model."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    panels = list(dict.fromkeys(view["entry"]))
    ncol = min(2, len(panels))
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol + 1, 3.2 * nrow), squeeze=False)
    for ax, e in zip(axes.flat, panels):
        sub = view[view["entry"] == e]
        inet = sub[sub["where"] == "ImageNet"].sort_values("depth")
        ax.plot(inet["depth"], inet["cka"], color="#ff7f0e", marker="o", ms=4)
        sh = sub[sub["where"] == "shifts"].groupby("depth")["cka"].agg(["mean", "std"]).reset_index()
        ax.plot(sh["depth"], sh["mean"], color="#1f77b4", marker="s", ms=4)
        ax.fill_between(sh["depth"], sh["mean"] - sh["std"].fillna(0), sh["mean"] + sh["std"].fillna(0),
                        color="#1f77b4", alpha=0.2, lw=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(title=e, xlabel="layer (input → output)", ylabel="CKA(zero-shot, finetuned)")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color="#ff7f0e", marker="o", label="ImageNet"),
               Line2D([], [], color="#1f77b4", marker="s", label="shifts: mean"), Patch(color="#1f77b4", alpha=0.2, label="shifts: ± sd")]
    _figure_legend(fig, handles, [h.get_label() for h in handles])
    fig.suptitle("Figures 7-8: layer-by-layer CKA between zero-shot and finetuned models")
    fig.tight_layout()
    return fig


def paper_bars(table, panels: dict[str, str], title: str):
    """Grouped bars, paper (grey) beside this run (family colour), one panel per quantity.
    ``table`` has ``paper model``, ``this run's model`` and per panel ``<column> paper`` / ``<column> run``."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels) + 0.5, 3.6), squeeze=False)
    x = np.arange(len(table))
    for ax, (column, name) in zip(axes[0], panels.items()):
        ax.bar(x - 0.2, table[f"{column} paper"], width=0.4, color="0.65")
        run_ax = ax
        if separate_scales(table[f"{column} paper"], table[f"{column} run"]):
            # more than 10x apart (the demo's stand-ins): this run on its own axis, right
            run_ax = ax.twinx()
            run_ax.grid(False)
            ax.set_ylabel("paper (grey)")
            run_ax.set_ylabel("this run (right axis)")
        run_ax.bar(x + 0.2, table[f"{column} run"], width=0.4, color=[FAMILY_COLORS.get(f, "0.3") for f in table["family"]])
        ax.set_xticks(x, table["paper model"], rotation=25, ha="right", fontsize=9)
        ax.set(title=name)
    handles = [Patch(color="0.65", label="paper")] + [Patch(color=FAMILY_COLORS[f], label=f"this run: {FAMILIES[f]}")
                                                      for f in FAMILY_ORDER if f in set(table["family"])]
    _figure_legend(fig, handles, [h.get_label() for h in handles])
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def display_frame(df, columns: dict | None = None, drop=()) -> tuple["object", str]:
    """``df`` as the book shows it, before number formatting: display names for the columns
    (``columns`` first, then :data:`DISPLAY_NAMES`), families by their names, no column a reader
    does not need (``drop``; a backbone column beside model names that already name it; a
    ``difference`` where the paper's and this run's values differ by more than 10x in scale, as
    the demo's stand-ins do), and a stand-in suffix repeated in every row moved into a note.
    Returns (frame, note for the caption)."""
    import pandas as pd

    df = df.reset_index(drop=True).copy()
    df.columns = [str(c) for c in df.columns]
    df = df.drop(columns=[c for c in drop if c in df])
    empty = [c for c in df.columns if len(df) and df[c].map(lambda v: v is None or v == "" or
                                                          (isinstance(v, float) and v != v)).all()]
    df = df.drop(columns=empty)  # a column with nothing in it tells the reader nothing
    note = ""
    if "family" in df:
        df["family"] = df["family"].map(lambda f: FAMILIES.get(f, f))
    if "indicator" in df:
        df["indicator"] = df["indicator"].map(lambda f: INDICATOR_NAMES.get(f, f))
    for c in list(df.columns):
        if not pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]):
            vals = df[c].dropna().astype(str)
            if len(vals) and vals.str.endswith(STAND_IN_SUFFIX).all():
                df[c] = df[c].map(lambda v: v.removesuffix(STAND_IN_SUFFIX) if isinstance(v, str) else v)
                note = "this run's models are untrained stand-ins"
    if "backbone" in df:
        names = [c for c in ("entry", "paper model", "paper_entry", "model") if c in df]
        same = lambda b, name: b.replace("_", "-").lower() in str(name).replace("_", "-").lower()  # noqa: E731
        if names and all(isinstance(b, str) and any(same(b, r[n]) for n in names)
                         for b, (_, r) in zip(df["backbone"], df.iterrows())):
            df = df.drop(columns="backbone")
    if {"difference", "paper", "this run"} <= set(df.columns) and (note or separate_scales(
            pd.to_numeric(df["paper"], errors="coerce"), pd.to_numeric(df["this run"], errors="coerce"))):
        # an untrained stand-in's value minus the paper's, or values of another scale, is no difference to read
        df = df.drop(columns="difference")
    return df.rename(columns=_display_names(df.columns, columns)), note


def _display_names(names, columns: dict | None = None) -> dict:
    """Each column's display name: ``columns``, then :data:`DISPLAY_NAMES`, and a snake_case name
    nobody named yet written with spaces (no code name reaches a header)."""
    out = {}
    for c in map(str, names):
        name = (columns or {}).get(c, DISPLAY_NAMES.get(c, c))
        out[c] = name.replace("_", " ") if re.fullmatch(r"[a-z0-9]+(?:_[a-z0-9]+)+", name) else name
    return out


def table(df, caption: str | None = None, decimals: int = 1, formats: dict | None = None,
          columns: dict | None = None, drop=()):
    """The one way the book shows a table: :func:`display_frame` (display names, no code names,
    family names, no redundant column), no index column, ``decimals`` decimals for floats
    (percentages with one), integers as integers, ``–`` for a missing value. ``formats`` is keyed
    by the original column names."""
    from pandas.api.types import is_float_dtype

    renames = _display_names(df.columns, columns)
    formats = {renames.get(k, k): v for k, v in (formats or {}).items()}
    df, note = display_frame(df, columns, drop)
    fmt = {}
    for c in df.columns:
        if c in formats:
            fmt[c] = formats[c]
        elif is_float_dtype(df[c]):
            df[c] = df[c].round(decimals) + 0.0  # what rounds to zero prints 0.0, not -0.0
            fmt[c] = "{:.%df}" % decimals
    styler = df.style.format(fmt, na_rep="–").hide(axis="index")
    if caption or note:
        styler = styler.set_caption(f"{caption} ({note})" if caption and note else caption or note.capitalize())
    return styler


show_table = table


def _tidy_for_caption(fig) -> None:
    """What the caption now says leaves the image: the figure's suptitle and, on a one-panel
    figure, the panel's title. Every panel with data shows its x tick labels (shared x-axes hide
    them on all but the bottom row)."""
    if getattr(fig, "_suptitle", None) is not None:
        fig._suptitle.set_text("")
    axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    if len(axes) == 1:
        axes[0].set_title("")
    shown, seen = False, []
    for ax in axes:
        where = tuple(round(v, 4) for v in ax.get_position().bounds)
        if where in seen:
            continue  # a twin drawn over its host: the host carries the x labels
        seen.append(where)
        if ax.has_data() and not ax.xaxis.get_tick_params(which="major").get("labelbottom", True):
            shown = True
            ax.tick_params(labelbottom=True)
            ax.xaxis.get_offset_text().set_visible(True)
    if shown:  # the labels now shown need the room tight_layout gave the bottom row only
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a layout it cannot improve stays as drawn
            fig.tight_layout()


def show_figure(fig, name: str, caption: str, empty: str = "This slice has nothing to draw here.") -> None:
    """Show ``fig`` as a numbered, captioned figure of the book: a MyST ``figure`` directive with
    the image inline (PNG at :data:`FIGURE_DPI`, displayed at its natural CSS size), target
    ``name`` for ``{numref}``, ``caption`` naming the paper figure it reproduces. The figure is
    closed (it is not shown a second time by the inline backend). ``fig`` None: ``empty`` is
    printed instead (a slice without the models the figure needs)."""
    import base64
    import io

    import matplotlib.pyplot as plt
    from IPython.display import Markdown, display

    from PIL import Image

    if fig is None:
        print(empty)
        return
    if isinstance(fig, (str, PathLike)):  # a saved PNG (the diagnose report's files)
        with open(fig, "rb") as f:
            png = f.read()
    else:
        _tidy_for_caption(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
        plt.close(fig)
        png = buf.getvalue()
    image = Image.open(io.BytesIO(png))
    dpi = float(image.info.get("dpi", (FIGURE_DPI,))[0]) or FIGURE_DPI
    width = round(image.size[0] * 100 / dpi)  # CSS px at the 100 dpi the figure sizes were chosen for
    data = base64.b64encode(png).decode("ascii")
    alt = caption.replace("\n", " ").replace("$", "")
    display(Markdown(f"```{{figure}} data:image/png;base64,{data}\n:name: {name}\n:width: {width}px\n"
                     f":class: study-figure\n:alt: {alt}\n\n{caption}\n```"))


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

# --------------------------------------------------------------------------------------------
# Moved here verbatim: the WiSE-FT sweep and Figure 5 (from helpers.chapters.wiseft) and the
# figures of ``diagnose`` (from helpers.chapters.diagnose), so that every figure lives in this module.


def sweep_figure(table: pd.DataFrame, series: dict[str, str], ylabel: str, title: str, scale: float = 1.0,
                 ref: float | None = None, paper: pd.DataFrame | None = None, profile: Profile | None = None):
    """One panel per pair, value against alpha, one line per ``series`` (legend label -> column).
    With ``paper`` (an ``entry`` column and the series' columns, in the run's units) the paper's
    values of the pair's two models are drawn as hollow markers at alpha = 0 and alpha = 1: the
    mixtures' endpoints are the pool entries (or, in the demo, the models they stand in for)."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    labels = list(dict.fromkeys(table["pair"])) if "pair" in table else []
    if not labels or not any(c in table for c in series.values()):
        fig, ax = plt.subplots(figsize=(6, 1.2))
        ax.text(0.5, 0.5, "no (zero-shot, finetuned) pair with these values in this slice", ha="center", va="center")
        ax.axis("off")
        fig.suptitle(title)
        return fig
    n = max(len(labels), 1)
    cols = min(n, 2)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False, sharex=True)
    for ax, label in zip(axes.flat, labels):
        sub = table[table["pair"] == label].sort_values("alpha")
        for (name, column), color in zip(series.items(), ("#1f77b4", "#ff7f0e", "#2ca02c")):
            if column in sub and sub[column].notna().any():
                ax.plot(sub["alpha"], scale * sub[column], marker="o", ms=4, label=name, color=color)
                if paper is not None and profile is not None and column in paper:
                    values = paper.set_index("entry")[column]
                    ends = [paper_id(profile.entry(sub["zeroshot"].iloc[0])), paper_id(profile.entry(sub["entry"].iloc[0]))]
                    ax.plot([0, 1], [scale * values.get(e, float("nan")) for e in ends], ls="", marker="o", ms=9,
                            mfc="none", mec=color, mew=1.6)
        if ref is not None:
            ax.axhline(ref, color="0.4", lw=0.8, ls="--")
        ax.set(title=label, xlabel="α (0: zero-shot, 1: finetuned)", ylabel=ylabel)
    for ax in list(axes.flat)[len(labels):]:
        ax.set_visible(False)
    handles, names = axes.flat[0].get_legend_handles_labels()
    if paper is not None:
        handles.append(Line2D([], [], ls="", marker="o", ms=8, mfc="none", mec="0.3", mew=1.4))
        names.append(PAPER_LABEL + ": α = 0 and 1 (Tables 1-5)")
    if handles:
        fig.legend(handles, names, loc="upper left", bbox_to_anchor=(1.0, 0.92), frameon=False, fontsize=10)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


#: Figure 5's regions of the Venn diagram of Figure 4 (fractions of C_fine), in the paper's order
#: and colours (:data:`helpers.chapters.wiseft.REGIONS` reads the names from here)
TRAJECTORY_REGIONS = {
    "zero-shot only": "#1f77b4",           # C_fine ∩ C_zero \ C_sup (blue in the paper)
    "zero-shot and supervised": "#2ca02c",  # C_fine ∩ C_zero ∩ C_sup (green)
    "supervised only": "#ff7f0e",           # C_fine ∩ C_sup \ C_zero
    "finetuned only": "#7f7f7f",            # C_fine \ (C_zero ∪ C_sup)
}


def trajectory_figure(table: pd.DataFrame):
    """Figure 5: per pair, the fraction of C_fine in each region against the finetuning epoch."""
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(table["pair"]))
    cols = min(len(labels), 2)
    rows = -(-len(labels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.4 * rows), squeeze=False)
    for ax in list(axes.flat)[len(labels):]:
        ax.set_visible(False)
    for ax, label in zip(axes.flat, labels):
        sub = table[table["pair"] == label]
        for k, (region, color) in enumerate(TRAJECTORY_REGIONS.items()):
            r = sub[sub["region"] == region].sort_values("epoch")
            # own marker and dash per region, the first drawn on top and each later one wider and
            # larger beneath it: equal shares (blue on green) stay visible as a line with a halo
            ax.plot(r["epoch"], 100 * r["fraction"], marker="osD^v"[k % 5], ms=4 + 2.5 * k, lw=1.2 + 1.2 * k,
                    color=color, label=region, ls=("-", "--", ":", "-.")[k % 4], zorder=10 - k, alpha=0.9)
        ax.set(title=label, xlabel="finetuning epoch (0: zero-shot)", ylabel="% of finetuned concepts")
        ax.set_xticks(sorted(sub["epoch"].unique()))
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper left", bbox_to_anchor=(1.0, 0.92), frameon=False, fontsize=10)
    fig.suptitle("Figure 5: overlap of the finetuned concepts with the zero-shot and supervised ones")
    fig.tight_layout()
    return fig


def save_figure(fig, path):
    """Write ``fig`` as a PNG at ``path`` atomically (temporary file, then rename); returns the path."""
    import os
    import tempfile
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp.png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


#: Label offsets tried around a point, in typographic points: nearest first, then further out.
_LABEL_OFFSETS = [(r * dx, r * dy) for r in (4, 9, 16, 26, 40)
                  for dx, dy in ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))]


def text_box(annotation, renderer):
    """Display box of an annotation's words only (not its leader line), at its current offset."""
    from matplotlib.text import Text

    annotation.update_positions(renderer)
    return Text.get_window_extent(annotation, renderer)


def label_points(fig, ax, x, y, labels, fontsize: float = 7) -> None:
    """Name each point without overprinting: a greedy label repel. Each label takes the first offset
    of :data:`_LABEL_OFFSETS` whose box overlaps no label placed before, no point and stays inside
    the axes; a label placed away from its point gets a thin leader line. Call it last, once the
    axes limits and scales are final."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.transforms import Bbox

    renderer = FigureCanvasAgg(fig).get_renderer()
    frame = ax.get_window_extent(renderer)
    px = ax.transData.transform(np.column_stack([x, y]))
    r = 4 * fig.dpi / 72  # marker half-width (s=40 is a ~6 pt marker), in pixels
    taken = [Bbox([[a - r, b - r], [a + r, b + r]]) for a, b in px]

    def place(i, dx, dy):
        far = max(abs(dx), abs(dy)) > 9
        return ax.annotate(labels[i], (x[i], y[i]), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                           ha="left" if dx > 0 else "right" if dx < 0 else "center",
                           va="bottom" if dy > 0 else "top" if dy < 0 else "center",
                           arrowprops=dict(arrowstyle="-", color="0.5", lw=0.6, shrinkA=0, shrinkB=3) if far else None)

    for i in np.argsort(-px[:, 1], kind="stable"):  # top down: crowded clusters fan out downwards
        for dx, dy in _LABEL_OFFSETS:
            text = place(i, dx, dy)
            box = text_box(text, renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(t) for t in taken):
                break
            text.remove()
        else:  # no free place: the nearest one
            text = place(i, *_LABEL_OFFSETS[0])
            box = text_box(text, renderer)
        taken.append(box)


def diagnose_figures(d, out) -> dict:
    """Per-image kurtosis with the pool's values marked; the pool's kurtosis against ER with this
    model's kurtosis as a vertical line and its interval as a band; with accuracies, the model
    among the OpenCLIP zoo (:func:`zoo_placement_figure`). Nothing is shown or left open in a
    notebook (the kurtosis figures are built without pyplot, the zoo figure is closed once saved)."""
    figs = {}
    if d.zoo is not None:
        import matplotlib.pyplot as plt

        zoo, testbed = d.zoo_tables
        fig = zoo_placement_figure(zoo, testbed, d.zoo["coefficients"]["slope"], d.zoo["coefficients"]["intercept"],
                                   d.zoo, d.label)
        figs["zoo_placement"] = save_figure(fig, out / "zoo_placement.png")
        plt.close(fig)
    if d.measured:
        figs.update(_kurtosis_figures(d, out))
    return figs


def _kurtosis_figures(d, out) -> dict:
    """The two kurtosis figures of :func:`diagnose_figures`, on matplotlib's Figure (no pyplot)."""
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    k = d.per_image_kurtosis[np.isfinite(d.per_image_kurtosis)]
    est, low, high = d.kurtosis
    pool = d.pool if not d.pool.empty and "kurtosis" in d.pool else None
    pool_k = None if pool is None else pool.dropna(subset=["kurtosis"])
    values = np.concatenate([k, [est], [] if pool_k is None else pool_k["kurtosis"].to_numpy()])
    log = values.min() > 0 and values.max() / values.min() > 10
    figs = {}

    fig = Figure(figsize=(9, 3.8))
    ax = fig.subplots()
    bins = np.geomspace(k.min(), k.max(), 30) if log and k.min() < k.max() else 30
    ax.hist(k, bins=bins, color="0.75", edgecolor="0.5", zorder=2)
    handles = [Line2D([], [], color="0.75", lw=6, label=f"this model, {len(k)} images")]
    if pool_k is not None and not pool_k.empty:
        for r in pool_k.itertuples():
            ax.axvline(r.kurtosis, color=FAMILY_COLORS.get(r.family, "0.3"), ls="--", lw=1.2)
        handles += [Line2D([], [], color=FAMILY_COLORS.get(f, "0.3"), ls="--",
                           label=f"pool model means: {FAMILIES.get(f, f)}")
                    for f in dict.fromkeys(pool_k["family"])]
    if np.isfinite(low):
        ax.axvspan(low, high, color="k", alpha=0.15, zorder=1)
    ax.axvline(est, color="k", lw=2, zorder=3)
    ax.axvline(3, color="0.4", ls=":", lw=1)
    handles += [Line2D([], [], color="k", lw=2, label=f"this model's mean {est:.2f} (band: 95 % interval)"),
                Line2D([], [], color="0.4", ls=":", label="Gaussian (3)")]
    if log:
        ax.set_xscale("log")
        plain_log_ticks(ax, "x")
    ax.set(xlabel="kurtosis of each image's activation vector, Eq. (1)", ylabel="images",
           title=f"Per-image kurtosis: {d.label}")
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    figs["kurtosis_distribution"] = save_figure(fig, out / "kurtosis_distribution.png")

    if pool_k is not None and not pool_k.empty:
        fig = Figure(figsize=(9, 4.5))
        ax = fig.subplots()
        for fam, g in pool_k.groupby("family", sort=False):
            ax.scatter(g["kurtosis"], 100 * g["er"], color=FAMILY_COLORS.get(fam, "0.3"), s=40,
                       label=FAMILIES.get(fam, fam), zorder=3)
        if np.isfinite(low):
            ax.axvspan(low, high, color="k", alpha=0.15, label="its 95 % interval")
        ax.axvline(est, color="k", lw=2, label=f"this model: {est:.2f}")
        ax.axvline(3, color="0.4", ls=":", lw=1, label="Gaussian (3)")
        if log:
            ax.set_xscale("log")
        plain_log_ticks(ax, "x")
        corr = d.correlations
        rho = corr[corr["indicator"] == "kurtosis"] if corr is not None and not corr.empty else None
        title = "Pool: kurtosis vs effective robustness"
        if rho is not None and not rho.empty and np.isfinite(rho["spearman"].iloc[0]):
            r = rho.iloc[0]
            title += f"\nSpearman rho = {r.spearman:.2f} [{r.low:.2f}, {r.high:.2f}], {int(r.models)} models"
        ax.set(xlabel="activation kurtosis, Eq. (1)", ylabel="effective robustness, Eq. (5) (%)", title=title)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        label_points(fig, ax, pool_k["kurtosis"].to_numpy(float), 100 * pool_k["er"].to_numpy(float),
                      pool_k["entry"].tolist())
        figs["kurtosis_vs_er"] = save_figure(fig, out / "kurtosis_vs_er.png")
    return figs
