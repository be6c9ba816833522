"""Published sizes of the study's datasets (the datasets' own papers and downloads, cited in
book/methods.md, "Facts the study relies on"): what
``clip-study plan`` compares a profile's folders with, and what it assumes for a folder not there."""
from __future__ import annotations

import ast
from pathlib import Path

import pandas as pd

#: Images per dataset as distributed. ObjectNet: the images of its 113 classes that map to
#: ImageNet (of 50,000 in 313 classes), the ones the testbed scores.
IMAGES = {
    "imagenet": 50_000,
    "imagenet-train": 1_281_167,
    "imagenet-v2": 10_000,
    "imagenet-r": 30_000,
    "imagenet-sketch": 50_889,
    "objectnet": 18_574,
    "imagenet-a": 7_500,
    "broden": 63_305,
}
#: Classes per dataset (Broden: concepts of label.csv).
CLASSES = {
    "imagenet": 1000, "imagenet-train": 1000, "imagenet-v2": 1000, "imagenet-r": 200,
    "imagenet-sketch": 1000, "objectnet": 113, "imagenet-a": 200, "broden": 1197,
}
#: Relative slack on the image count of a dataset whose size is approximate (ObjectNet's mapped
#: subset is quoted as "about 18,500" and depends on the mapping files' version).
SLACK = {"objectnet": 0.02}


# --- Published accuracy tables, vendored byte for byte under helpers/reference/ (sources, commits
# and licences in helpers/reference/SOURCES.md): OpenCLIP's zero-shot results and model profile, and
# the ImageNet testbed's top-1 table with its model-type labels. Each loader refuses a file whose
# header differs from the one read, naming the column and the file. -----------------------------
REFERENCE_DIR = Path(__file__).resolve().parent.parent / "reference"
#: OpenCLIP's zero-shot results (mlfoundations/open_clip, docs/openclip_results.csv): fractions.
OPENCLIP_RESULTS = REFERENCE_DIR / "openclip_results.csv"
#: OpenCLIP's model sizes and FLOPs (docs/model_profile.csv of the same commit).
OPENCLIP_PROFILE = REFERENCE_DIR / "openclip_model_profile.csv"
#: The ImageNet testbed's top-1 table (modestyachts/imagenet-testbed, robustness_top1s.csv): percent.
TESTBED_TOP1S = REFERENCE_DIR / "testbed_robustness_top1s.csv"
#: The testbed's own model-type labels (plotting/model_types.py, renamed .txt so nothing imports it).
TESTBED_MODEL_TYPES = REFERENCE_DIR / "testbed_model_types.py.txt"

#: Study dataset name -> column of OpenCLIP's results table.
OPENCLIP_COLUMNS = {"imagenet": "ImageNet 1k", "imagenet-v2": "ImageNet v2", "imagenet-r": "ImageNet-R",
                    "imagenet-sketch": "ImageNet Sketch", "objectnet": "ObjectNet", "imagenet-a": "ImageNet-A"}
#: Study dataset name -> column of the testbed's table (the columns the paper's Eq. 5 baseline uses).
TESTBED_COLUMNS = {"imagenet": "val", "imagenet-v2": "imagenetv2-matched-frequency-format-val",
                   "imagenet-r": "imagenet-r", "imagenet-sketch": "imagenet-sketch",
                   "objectnet": "objectnet-1.0-beta", "imagenet-a": "imagenet-a"}

#: The full header of each table as read (2026-12-07): a file with another header is refused.
EXPECTED_COLUMNS = {
    "openclip_results": (
        "name", "pretrained", "params (M)", "FLOPs (B)", "Average perf. on 38 datasets", "ImageNet 1k",
        "Caltech-101", "CIFAR-10", "CIFAR-100", "CLEVR Counts", "CLEVR Distance", "Country211",
        "Describable Textures", "EuroSAT", "FGVC Aircraft", "Food-101", "GTSRB", "ImageNet Sketch",
        "ImageNet v2", "ImageNet-A", "ImageNet-O", "ImageNet-R", "KITTI Vehicle Distance", "MNIST",
        "ObjectNet", "Oxford Flowers-102", "Oxford-IIIT Pet", "Pascal VOC 2007", "PatchCamelyon",
        "Rendered SST2", "RESISC45", "Stanford Cars", "STL-10", "SUN397", "SVHN", "Flickr", "MSCOCO",
        "WinoGAViL", "iWildCam", "Camelyon17", "FMoW", "Dollar Street", "GeoDE"),
    "openclip_model_profile": (
        "model", "image_size", "image_width", "text_width", "embed_dim", "mparams", "image_mparams",
        "text_mparams", "gflops", "image_gflops", "text_gflops"),
    # 214 columns: the testbed's evaluation settings, ImageNet-C as corruption x severity x storage.
    "testbed_top1s": (
        "model", "greyscale", "imagenet-a",
        *(f"imagenet-c.{c}.{s}_{m}" for c in (
            "brightness", "contrast", "defocus_blur", "elastic_transform", "fog", "frost", "gaussian_blur",
            "gaussian_noise", "glass_blur", "impulse_noise", "jpeg_compression", "motion_blur", "pixelate",
            "saturate", "shot_noise", "snow", "spatter", "speckle_noise", "zoom_blur")
          for s in range(1, 6) for m in ("in-memory", "on-disk")
          if not (c == "glass_blur" and m == "in-memory")),  # glass blur exists on disk only
        "imagenet-r", "imagenet-sketch", "imagenet-vid-robust_pm0", "imagenet-vid-robust_pm10",
        "imagenetv2-matched-frequency", "imagenetv2-matched-frequency-format-val",
        "imagenetv2-matched-frequency-format-val_subsampled_class_1_8", "imagenetv2-threshold-0.7-format-val",
        "imagenetv2-threshold0.7", "imagenetv2-top-images-format-val", "imagenetv2-topimages",
        "objectnet-1.0-beta", "pgd.l2.eps0.1", "pgd.l2.eps0.5", "pgd.linf.eps0.5", "pgd.linf.eps2",
        "stylized_imagenet", "val", "val-on-imagenet-a-classes", "val-on-imagenet-r-classes",
        "val-on-objectnet-classes", "val-on-vid-robust-classes", "val-on-ytbb-robust-classes",
        "val_subsampled_class_1_8", "ytbb-robust_pm0", "ytbb-robust_pm10"),
}

#: The testbed's label for models trained with more than ImageNet-1k (model_types.py).
MORE_DATA = "MORE_DATA"


class PublishedTableError(ValueError):
    """A published table whose header is not the one the study was written against."""


def check_columns(path: Path, columns, expected) -> None:
    """Refuse a table whose header differs from ``expected``, naming the file and every missing
    and unexpected column (an upstream rename shows as one of each)."""
    got, want = list(columns), list(expected)
    missing = [c for c in want if c not in got]
    unexpected = [c for c in got if c not in want]
    if missing or unexpected:
        parts = ([f"missing column(s) {', '.join(repr(c) for c in missing)}"] if missing else []) + \
                ([f"unexpected column(s) {', '.join(repr(c) for c in unexpected)}"] if unexpected else [])
        raise PublishedTableError(f"{path}: {'; '.join(parts)} (expected the {len(want)}-column header of the "
                                  "version read on 2026-12-07; see helpers/reference/SOURCES.md)")


def _read_checked(path, kind: str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such published table ({kind})")
    df = pd.read_csv(path)
    check_columns(path, df.columns, EXPECTED_COLUMNS[kind])
    return df


def openclip_results(path=None) -> pd.DataFrame:
    """OpenCLIP's published zero-shot results, as in the file: one row per (name, pretrained),
    accuracies as fractions. Refuses a file whose header differs from :data:`EXPECTED_COLUMNS`."""
    return _read_checked(path or OPENCLIP_RESULTS, "openclip_results")


def openclip_model_profile(path=None) -> pd.DataFrame:
    """OpenCLIP's model profile (parameters in millions, GFLOPs at the model's image size)."""
    return _read_checked(path or OPENCLIP_PROFILE, "openclip_model_profile")


def testbed_top1s(path=None) -> pd.DataFrame:
    """The ImageNet testbed's top-1 table as in the file: one row per model, accuracies in percent."""
    return _read_checked(path or TESTBED_TOP1S, "testbed_top1s")


def testbed_model_types(path=None) -> dict[str, str]:
    """Model name -> the testbed's own type label (``STANDARD``, ``MORE_DATA``, ``LOW_ACCURACY_CNN``,
    ...), read from its ``model_types.py`` without running it: the dict literal ``model_types_map``
    and the ``for i in range(n)`` loops that add the low-accuracy checkpoints."""
    path = Path(path or TESTBED_MODEL_TYPES)
    tree = ast.parse(path.read_text(), filename=str(path))
    out: dict[str, str] = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                and any(isinstance(t, ast.Name) and t.id == "model_types_map" for t in node.targets)):
            for k, v in zip(node.value.keys, node.value.values):
                out[ast.literal_eval(k)] = v.attr
        elif isinstance(node, ast.For) and isinstance(node.iter, ast.Call) and len(node.body) == 1:
            (stmt,) = node.body
            n = ast.literal_eval(node.iter.args[0])
            fmt = stmt.targets[0].slice  # an f-string model_types_map[f"..._{i}_..."]
            for i in range(n):
                name = "".join(str(i) if isinstance(p, ast.FormattedValue) else p.value for p in fmt.values)
                out[name] = stmt.value.attr
    if not out:
        raise PublishedTableError(f"{path}: no model_types_map found (the testbed's plotting/model_types.py)")
    return out


def testbed_accuracies(path=None, types_path=None) -> pd.DataFrame:
    """Testbed models with all six accuracies of the paper, as fractions under the study's dataset
    names, with the testbed's type label and ``imagenet_only`` (every type but ``MORE_DATA``).

    Rows lacking one of the six accuracies (9 of 338) are left out. A model the type list does not
    know is refused: the exclusion rule could not be applied to it.
    """
    raw = testbed_top1s(path)
    types = testbed_model_types(types_path)
    cols = list(TESTBED_COLUMNS.values())
    df = raw.dropna(subset=cols)[["model", *cols]].rename(columns={v: k for k, v in TESTBED_COLUMNS.items()})
    unknown = sorted(set(df["model"]) - set(types))
    if unknown:
        raise PublishedTableError(f"{path or TESTBED_TOP1S}: model(s) {', '.join(unknown)} have no type in "
                                  f"{types_path or TESTBED_MODEL_TYPES}")
    for k in TESTBED_COLUMNS:
        df[k] = df[k] / 100
    df.insert(1, "type", df["model"].map(types))
    df["imagenet_only"] = df["type"] != MORE_DATA
    return df.reset_index(drop=True)


#: Training-data family of an OpenCLIP ``pretrained`` tag: the first prefix that matches, in order
#: (so ``laion400m`` before ``laion``). Sources: OpenCLIP's pretrained-model docs and the papers
#: named in book/methods.md.
DATA_FAMILIES = (
    ("openai", "OpenAI"), ("yfcc15m", "YFCC-15M"), ("cc12m", "CC-12M"),
    ("laion400m", "LAION-400M"), ("laion2b", "LAION-2B"), ("laion_aesthetic", "LAION-2B"),
    ("laion5b", "LAION-5B"), ("frozen_laion5b", "LAION-5B"),
    ("mscoco_finetuned_laion2b", "LAION-2B + MSCOCO fine-tune"),
    ("datacomp", "DataComp"), ("commonpool", "CommonPool (unfiltered / baselines)"),
    ("dfn", "DFN"), ("metaclip", "MetaCLIP"), ("webli", "WebLI (SigLIP)"), ("merged2b", "Merged-2B (EVA)"),
)
#: Tags that name no dataset: the family comes from the model name.
DATA_FAMILIES_BY_MODEL = (("nllb-clip", "NLLB-CLIP (LAION-COCO, translated)"),)


def data_family(name: str, pretrained: str) -> str:
    """The training-data family of an OpenCLIP (model, tag) pair (:data:`DATA_FAMILIES`); an
    unknown tag is refused, so a newer table cannot be coloured silently wrong."""
    # the longest matching prefix wins (mscoco_finetuned_laion2b is not laion2b's family)
    best = sorted(((len(p), f) for p, f in DATA_FAMILIES if pretrained.startswith(p)), reverse=True)
    if best:
        return best[0][1]
    for prefix, fam in DATA_FAMILIES_BY_MODEL:
        if name.startswith(prefix):
            return fam
    raise PublishedTableError(f"OpenCLIP pair ({name}, {pretrained}): pretrained tag {pretrained!r} has no "
                              "training-data family (helpers.paper.published.DATA_FAMILIES)")


QUICKGELU = "-quickgelu"


def openclip_accuracies(path=None, profile_path=None) -> pd.DataFrame:
    """One row per OpenCLIP model with all six accuracies: ``name``, ``pretrained``, ``base`` (the
    name without ``-quickgelu``), ``family`` (training data), the six accuracies (fractions, study
    names), ``params_m`` and ``gflops`` (model_profile.csv, by model name), and
    ``imagenet_plain_gelu``: the ImageNet accuracy of the dropped plain-GELU row, where there is one.

    Where a tag is listed both as ``X-quickgelu`` and as ``X`` (QuickGELU-trained weights, once with
    the matching activation and once with plain GELU), only the ``-quickgelu`` row is kept: one model,
    one row.
    """
    raw = openclip_results(path)
    prof = openclip_model_profile(profile_path).set_index("model")
    cols = list(OPENCLIP_COLUMNS.values())
    df = raw.dropna(subset=cols)[["name", "pretrained", *cols]].rename(
        columns={v: k for k, v in OPENCLIP_COLUMNS.items()})
    df.insert(2, "base", df["name"].str.removesuffix(QUICKGELU))
    df["quickgelu"] = df["name"].str.endswith(QUICKGELU)
    both = df.groupby(["base", "pretrained"])["quickgelu"].transform("any")
    plain = df[both & ~df["quickgelu"]].set_index(["base", "pretrained"])["imagenet"]
    df = df[~both | df["quickgelu"]].copy()
    df["imagenet_plain_gelu"] = [plain.get((b, t), float("nan")) for b, t in zip(df["base"], df["pretrained"])]
    dup = df[df.duplicated(["base", "pretrained"], keep=False)]
    if not dup.empty:
        raise PublishedTableError(f"{path or OPENCLIP_RESULTS}: more than one row for "
                                  f"{sorted(set(zip(dup.base, dup.pretrained)))}")
    df.insert(3, "family", [data_family(n, t) for n, t in zip(df["name"], df["pretrained"])])
    df["params_m"] = df["name"].map(prof["mparams"])
    df["gflops"] = df["name"].map(prof["gflops"])
    return df.drop(columns="quickgelu").reset_index(drop=True)
