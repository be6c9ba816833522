"""The package map's table "paper quantity -> function" (``helpers.__doc__``, shown by the forking
chapter) names only functions that exist, and covers every quantity the paper computes."""
import importlib

import helpers


def _resolve(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ModuleNotFoundError(dotted)


def test_every_function_of_the_map_exists_and_is_callable():
    table = helpers.quantity_map()
    assert len(table) >= 16
    for target in table["function"]:
        assert callable(_resolve(target)), target


def test_the_map_covers_the_papers_equations_and_measures():
    quantities = " ".join(helpers.quantity_map()["quantity"])
    for needed in ("top-1", "zero-shot head", "h = f_v(x)", "Eq. (1)", "Eq. (2)", "Eq. (3)", "Eq. (4)",
                   "Eq. (5)", "AP", "CKA", "pruning", "WiSE-FT"):
        assert needed in quantities, needed


def test_forking_chapter_shows_the_map():
    from conftest import REPO

    assert "helpers.quantity_map()" in (REPO / "notebooks" / "10_forking.md").read_text()
