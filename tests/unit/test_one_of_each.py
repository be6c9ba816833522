"""One of each: kurtosis with its interval and Eq. (4) with its NaN rule are one function each,
checked against oracles written out here; no helpers module reaches into another's private names;
``clip-study`` is the one command line (no ``python -m`` mains)."""
from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from helpers.engine.probing import unique_concepts_at
from helpers.config import REPO_ROOT
from helpers.metrics import kurtosis_interval

HELPERS = REPO_ROOT / "helpers"


def _oracle_interval(values: np.ndarray, n_boot: int, seed: int, level: float = 0.95):
    """Percentile bootstrap of the mean, one resample at a time, with the same index draws."""
    idx = np.random.default_rng(seed).integers(0, values.size, size=(n_boot, values.size))
    means = np.array([np.mean(values[i]) for i in idx])
    return np.quantile(means, [(1 - level) / 2, (1 + level) / 2])


def test_kurtosis_interval_against_scipy_and_a_bootstrap_written_out():
    rng = np.random.default_rng(3)
    h = rng.standard_t(df=4, size=(60, 48)) + rng.normal(size=(60, 1))
    per_image, ci = kurtosis_interval(h, n_boot=300, seed=7)
    expected = np.array([scipy.stats.kurtosis(row, fisher=False, bias=True) for row in h])
    np.testing.assert_allclose(per_image, expected, rtol=1e-12)
    assert ci.estimate == pytest.approx(expected.mean(), rel=1e-12)
    low, high = _oracle_interval(per_image, 300, 7)
    assert (ci.low, ci.high) == pytest.approx((low, high), rel=1e-12)
    assert (ci.level, ci.n_boot) == (0.95, 300)


def test_kurtosis_interval_leaves_constant_vectors_out():
    rng = np.random.default_rng(4)
    h = rng.normal(size=(30, 16))
    h[[2, 11]] = 5.0  # constant vectors: no kurtosis
    per_image, ci = kurtosis_interval(h, n_boot=200, seed=1)
    assert np.isnan(per_image[[2, 11]]).all() and np.isfinite(np.delete(per_image, [2, 11])).all()
    kept = np.delete(per_image, [2, 11])
    assert ci.estimate == pytest.approx(kept.mean(), rel=1e-12)
    assert (ci.low, ci.high) == pytest.approx(tuple(_oracle_interval(kept, 200, 1)), rel=1e-12)


def test_kurtosis_interval_of_one_usable_image_has_no_bounds_and_all_constant_raises():
    h = np.array([[1.0, 2.0, 3.0, 10.0], [4.0, 4.0, 4.0, 4.0]])
    per_image, ci = kurtosis_interval(h, n_boot=50, level=0.9)
    assert ci.estimate == pytest.approx(scipy.stats.kurtosis(h[0], fisher=False, bias=True))
    assert math.isnan(ci.low) and math.isnan(ci.high) and (ci.level, ci.n_boot) == (0.9, 50)
    with pytest.raises(ValueError) as refused:
        kurtosis_interval(np.ones((3, 4)))
    assert str(refused.value) == "every activation vector in h is constant: kurtosis is undefined"


def test_kurtosis_interval_of_two_usable_images_is_a_bootstrap_and_its_defaults_are_1000_draws_seed_0():
    h = np.array([[1.0, 2.0, 3.0, 10.0], [4.0, 4.0, 4.0, 4.0], [0.0, 5.0, 1.0, 1.0]])
    per_image, ci = kurtosis_interval(h, n_boot=400, seed=3, level=0.8)
    kept = per_image[[0, 2]]
    assert (ci.low, ci.high) == pytest.approx(tuple(_oracle_interval(kept, 400, 3, level=0.8)), rel=1e-12)
    assert ci.low < ci.high and (ci.level, ci.n_boot) == (0.8, 400)
    rng = np.random.default_rng(5)
    h = rng.standard_t(df=5, size=(25, 12))
    _, default = kurtosis_interval(h)
    per_image, _ = kurtosis_interval(h, n_boot=7)
    low, high = _oracle_interval(per_image, 1000, 0)
    assert (default.low, default.high, default.level, default.n_boot) == pytest.approx((low, high, 0.95, 1000), rel=1e-12)


def test_unique_concepts_at_counts_concepts_some_direction_encodes_and_never_a_nan_column():
    ap = np.array([[0.95, 0.20, np.nan, 0.89, 0.90],
                   [0.10, 0.91, np.nan, 0.40, np.nan],
                   [0.30, 0.99, np.nan, 0.88, 0.10]])
    # by hand: columns 0 (0.95), 1 (0.91, 0.99) and 4 (0.90) reach 0.9; column 2 has no balanced set
    assert unique_concepts_at(ap, 0.9) == 3
    assert unique_concepts_at(ap, 0.885) == 4  # column 3 joins (0.89)
    assert unique_concepts_at(ap, 0.999) == 0


def _modules():
    for path in sorted(HELPERS.rglob("*.py")):
        yield path, ast.parse(path.read_text())


#: Known and owned elsewhere; delete the line once the notebook namespace helper is public.
ALLOWED_PRIVATE = {("helpers/study/__init__.py", "provenance._kernel_namespace")}


def test_no_helpers_module_uses_another_modules_private_names():
    found = set()
    for path, tree in _modules():
        rel = path.relative_to(REPO_ROOT).as_posix()
        aliases = set()
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("helpers"):
                for a in n.names:
                    if a.name.startswith("_") and not a.name.startswith("__"):
                        found.add((rel, f"{n.module}.{a.name}"))
                    aliases.add(a.asname or a.name)
            elif isinstance(n, ast.Import):
                aliases |= {a.asname or a.name.split(".")[0] for a in n.names if a.name.startswith("helpers")}
        for n in ast.walk(tree):
            if (isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__")
                    and isinstance(n.value, ast.Name) and n.value.id in aliases):
                found.add((rel, f"{n.value.id}.{n.attr}"))
    assert found - ALLOWED_PRIVATE == set()


def test_clip_study_is_the_one_command_line():
    mains = []
    for path, tree in _modules():
        for n in tree.body:
            if (isinstance(n, ast.If) and isinstance(n.test, ast.Compare) and isinstance(n.test.left, ast.Name)
                    and n.test.left.id == "__name__"):
                mains.append(path.relative_to(REPO_ROOT).as_posix())
    # cli: ``clip-study`` itself (``python -m helpers.workflow.cli`` under torchrun); runner: the child
    # process entry point the runner starts, not a command line for people
    assert mains == ["helpers/workflow/cli.py", "helpers/workflow/runner.py"]
