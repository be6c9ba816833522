"""The fixture writers: deterministic, in the layouts the demo profile expects, idempotent, and
images a small model can learn, with shifts that are harder than ImageNet."""
import json

import numpy as np
import pytest
import torch

from helpers.demo import fixtures
from helpers.config import load_profile
from helpers.data import open_broden, open_dataset
from helpers.data.classes import imagenet_a_wnids, imagenet_r_wnids

SIZE = (64, 48)  # small images keep the demo tree quick to write here; the default is 256 x 192


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "demo"
    fixtures.write_demo_data(root, seed=0, size=SIZE)
    return root


def test_demo_layout_is_where_the_demo_profile_looks():
    profile = load_profile("demo")
    data_root = profile.paths["data_root"]
    assert {k: p.relative_to(data_root).as_posix() for k, p in profile.datasets.items()} == fixtures.DEMO_LAYOUT


def test_demo_classes_exist_in_every_shift():
    mapped = {w for _, wnids in fixtures.OBJECTNET_CLASSES.values() for w in wnids}
    for w in fixtures.DEMO_CLASSES:
        assert w in imagenet_r_wnids() and w in imagenet_a_wnids() and w in mapped


def test_writers_are_deterministic_from_the_seed(tmp_path):
    def write(name, seed):
        root = fixtures.write_imagenet_a(tmp_path / name, classes=fixtures.DEMO_CLASSES[:2], per_class=2,
                                         size=(32, 24), seed=seed)
        return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    assert write("a", 0) == write("b", 0)
    assert write("c", 1) != write("a", 0)


def test_demo_tree_opens_with_every_loader(demo):
    for name, rel in fixtures.DEMO_LAYOUT.items():
        if name == "broden":
            continue
        ds = open_dataset(name, demo / rel)
        assert len(np.unique(ds.labels)) == 8, name
        assert len(ds) == (80 if name == "imagenet-train" else 64), name
        assert ds.load_image(0).size == ((SIZE[0] - 4, SIZE[1] - 4) if name == "objectnet" else SIZE)
    assert open_dataset("objectnet", demo / "objectnet-1.0").excluded_folders == ["coaster", "squeegee"]
    broden = open_broden(demo / "broden1_224")
    assert len(broden) == 120 and len(broden.concepts) == 30
    assert set(broden.concepts.category) == set(fixtures.BRODEN_CATEGORIES)
    selection, report = broden.balanced_sets(min_positives=4)
    dropped = report[report.per_side == 0]
    assert dropped.number.tolist() == [fixtures.BRODEN_RARE]
    kept = np.flatnonzero(selection.any(0))
    assert len(kept) == 29 and (selection[:, kept].sum(0) >= 8).all()


def test_demo_write_is_idempotent_and_redoes_an_interrupted_write(demo, monkeypatch):
    marker = demo / fixtures.DEMO_MARKER
    probe = demo / "imagenet" / "val" / fixtures.DEMO_CLASSES[0] / "ILSVRC2012_val_00000001.JPEG"
    before = {p: p.stat().st_mtime_ns for p in demo.rglob("*")}
    # a complete tree with the same arguments: no writer runs and no file is touched
    with monkeypatch.context() as m:
        for name in ("write_imagenet", "write_imagenet_v2", "write_imagenet_r", "write_imagenet_sketch",
                     "write_imagenet_a", "write_objectnet", "write_broden", "_write_marker"):
            m.setattr(fixtures, name, lambda *a, _name=name, **k: pytest.fail(f"{_name} ran on a complete tree"))
        fixtures.write_demo_data(demo, seed=0, size=SIZE)
    assert {p: p.stat().st_mtime_ns for p in demo.rglob("*")} == before
    # An interrupted write leaves the marker incomplete (and stray files): the next call redoes it.
    state = json.loads(marker.read_text())
    marker.write_text(json.dumps({**state, "complete": False}))
    stray = demo / "imagenet" / "val" / fixtures.DEMO_CLASSES[0] / "half-written.JPEG"
    stray.write_bytes(b"")
    fixtures.write_demo_data(demo, seed=0, size=SIZE)
    assert json.loads(marker.read_text())["complete"] and not stray.exists() and probe.exists()


def test_demo_write_refuses_a_tree_it_did_not_write(tmp_path):
    (tmp_path / "imagenet" / "val").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="holds imagenet but no .demo-data.json"):
        fixtures.write_demo_data(tmp_path, size=SIZE)


def test_images_are_learnable_and_the_shifts_are_harder(demo):
    def thumbs(name):
        ds = open_dataset(name, demo / fixtures.DEMO_LAYOUT[name])
        x = np.stack([np.asarray(ds.load_image(i).resize((16, 12))) for i in range(len(ds))])
        y = [ds.label_space.groups[k][0] for k in ds.labels]  # ImageNet index of the class
        return torch.tensor(x.reshape(len(ds), -1) / 255.0, dtype=torch.float32), y

    x, y = thumbs("imagenet-train")
    classes = sorted(set(y))
    target = torch.tensor([classes.index(c) for c in y])
    mu, sd = x.mean(0), x.std(0) + 1e-3
    torch.manual_seed(0)
    head = torch.nn.Linear(x.shape[1], len(classes))
    opt = torch.optim.Adam(head.parameters(), lr=0.01)
    losses = []
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(head((x - mu) / sd), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]

    def acc(name):
        xs, ys = thumbs(name)
        pred = head((xs - mu) / sd).argmax(1).numpy()
        return float(np.mean(pred == np.array([classes.index(c) for c in ys])))

    val = acc("imagenet")
    assert val > 0.4  # chance is 1/8
    assert acc("imagenet-sketch") < val and acc("objectnet") < val
