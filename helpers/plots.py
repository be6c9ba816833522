"""The one figure and table style every chapter uses.

Conventions: one colour family per model family (the paper's Figure 1 colours: robust zero-shot
blue, fine-tuned green, supervised orange, ImageNet-Captions red), a distinct shade and marker per
model within its family, models and backbones in the paper's order (Table 1: RN50 before RN101),
legends outside the data, plain tick labels on log axes, and the paper's value drawn as a hollow
marker beside this run's filled one. Tables: no index, one decimal, a dash for a missing value.
"""
from __future__ import annotations

import colorsys

from helpers.paper.compare import backbone_order
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
                         "legend.frameon": False, "legend.fontsize": 8, "figure.dpi": 100,
                         "savefig.bbox": "tight"})


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
    kw = {"title": title, "frameon": False, "fontsize": 8, "title_fontsize": 8}
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
    return fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 0.95), frameon=False, fontsize=8,
                      ncol=1 if len(handles) <= 18 else 2)


def _paper_handle():
    from matplotlib.lines import Line2D

    return Line2D([], [], ls="", marker="o", ms=8, mfc="none", mec="0.3", mew=1.4, label=PAPER_LABEL)


def _stand_in_note(run) -> str:
    return " (untrained stand-ins)" if "stand_in" in run and run["stand_in"].any() else ""


def _with_counterparts(run, profile):
    """``run`` with the paper entry each row is compared with and whether it is a stand-in."""
    from helpers.paper.compare import counterparts, in_paper_order

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
                ax.plot([x + 0.28], [scale * p], ls="", marker=marker, ms=ms + 1, mfc="none", mec=color, mew=1.4, zorder=3)
            x += 1
        ticks.append((start + x - 1) / 2)
        tick_labels.append(b)
        x += 0.8
    if ref is not None:
        ax.axhline(ref, color="0.3", ls="--", lw=1, label=ref_label or None, zorder=1)
    if log:
        ax.set_yscale("log")
        plain_log_ticks(ax)
    ax.set_xticks(ticks, tick_labels, rotation=25 if len(order) > 2 else 0, ha="right" if len(order) > 2 else "center")
    ax.set_xlim(-0.7, x - 0.5)
    ax.set(xlabel="backbone", ylabel=ylabel, title=title)
    handles, labels = ax.get_legend_handles_labels()
    if paper_map:
        handles.append(_paper_handle())
        labels.append(PAPER_LABEL)
    legend_outside(ax, handles, labels, title="this run" + _stand_in_note(df), where="below" if many else "right",
                   ncol=4 if many else None)
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

    from helpers.metrics import logit

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

    from helpers.metrics import logit

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

    from helpers.paper.compare import in_paper_order

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

    from helpers.paper.compare import in_paper_order

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

    from helpers.paper.compare import in_paper_order

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

    fig, axes = plt.subplots(1, len(panels), figsize=(2.9 * len(panels) + 0.5, 3.6), squeeze=False)
    x = np.arange(len(table))
    for ax, (column, name) in zip(axes[0], panels.items()):
        ax.bar(x - 0.2, table[f"{column} paper"], width=0.4, color="0.65")
        ax.bar(x + 0.2, table[f"{column} run"], width=0.4, color=[FAMILY_COLORS.get(f, "0.3") for f in table["family"]])
        ax.set_xticks(x, table["paper model"], rotation=25, ha="right", fontsize=8)
        ax.set(title=name)
    handles = [Patch(color="0.65", label="paper")] + [Patch(color=FAMILY_COLORS[f], label=f"this run: {FAMILIES[f]}")
                                                      for f in FAMILY_ORDER if f in set(table["family"])]
    _figure_legend(fig, handles, [h.get_label() for h in handles])
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def table(df, caption: str | None = None, decimals: int = 1, formats: dict | None = None):
    """A results table as the book shows it: no index column, ``decimals`` decimals for floats
    (percentages with one), integers as integers, a dash for a missing value, string headers."""
    from pandas.api.types import is_float_dtype

    df = df.reset_index(drop=True).copy()
    df.columns = [str(c) for c in df.columns]
    fmt = {}
    for c in df.columns:
        if formats and c in formats:
            fmt[c] = formats[c]
        elif is_float_dtype(df[c]):
            df[c] = df[c].round(decimals) + 0.0  # what rounds to zero prints 0.0, not -0.0
            fmt[c] = "{:.%df}" % decimals
    styler = df.style.format(fmt, na_rep="–").hide(axis="index")
    if caption:
        styler = styler.set_caption(caption)
    return styler


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
