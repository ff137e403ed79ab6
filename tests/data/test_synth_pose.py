"""Tests for pydeform.data.synth_pose.

The written files are read back with plain csv/json (not the writer's code); the renderer is
checked against an independent computation: a rigid motion of one forearm must move its
texture by the same motion.
"""
import csv
import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from pydeform.data import synth_pose as sp

SIZE = (128, 64)
NAME_RE = re.compile(r"^(\d{4})_c[1-6]s1_\d{6}_00\.png$")


def read_annotations(path: Path) -> dict[str, tuple[list[int], list[int]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter=":"))
    assert rows[0] == ["name", "keypoints_y", "keypoints_x"]
    out = {}
    for row in rows[1:]:
        assert len(row) == 3, row
        name = row[0].strip()
        assert name not in out
        out[name] = (json.loads(row[1]), json.loads(row[2]))
    return out


def read_pairs(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["from", "to"]
    assert all(len(r) == 2 for r in rows[1:])
    return [(a, b) for a, b in rows[1:]]


def pid(name: str) -> str:
    return NAME_RE.match(name).group(1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    info = sp.write_pose_pairs(root, size=SIZE, identities=20, seed=3, images_per_identity=4,
                               max_pairs_per_identity=8, progress=False)
    return root, info


def test_files_and_annotation_format(dataset):
    root, info = dataset
    h, w = SIZE
    for split in ("train", "test"):
        ann = read_annotations(root / f"market-annotation-{split}.csv")
        img_dir = root / "market-dataset" / split
        assert set(ann) == {p.name for p in img_dir.iterdir()}
        assert len(ann) == info.num_images[split]
        for name, (ys, xs) in ann.items():
            assert NAME_RE.match(name), name
            assert len(ys) == len(xs) == 18
            for y, x in zip(ys, xs):
                assert type(y) is int and type(x) is int
                assert (y == -1) == (x == -1)
                assert y == -1 or (0 <= y < h and 0 <= x < w)
        with Image.open(img_dir / name) as im:
            assert im.format == "PNG" and im.mode == "RGB" and im.size == (w, h)


def test_split_by_identity(dataset):
    root, info = dataset
    ids = {sp_: {pid(n) for n in read_annotations(root / f"market-annotation-{sp_}.csv")}
           for sp_ in ("train", "test")}
    assert not ids["train"] & ids["test"]
    assert ids["train"] | ids["test"] == {f"{i:04d}" for i in range(1, 21)}
    assert len(ids["test"]) == 4 == info.num_identities["test"]  # 20 * 0.2


def test_pairs_reference_same_identity_files(dataset):
    root, info = dataset
    for split in ("train", "test"):
        names = set(read_annotations(root / f"market-annotation-{split}.csv"))
        pairs = read_pairs(root / f"market-pairs-{split}.csv")
        assert len(pairs) == info.num_pairs[split] == len(set(pairs))
        per_id: dict[str, int] = {}
        for a, b in pairs:
            assert a in names and b in names and a != b
            assert pid(a) == pid(b)
            per_id[pid(a)] = per_id.get(pid(a), 0) + 1
        # 4 images -> 12 ordered pairs, capped at 8
        assert set(per_id.values()) == {8}
        assert len(per_id) == len({pid(n) for n in names})


def test_all_pairs_below_cap(tmp_path):
    sp.write_pose_pairs(tmp_path, identities=2, images_per_identity=3, progress=False, name="tiny")
    pairs = read_pairs(tmp_path / "tiny-pairs-train.csv")
    names = sorted(read_annotations(tmp_path / "tiny-annotation-train.csv"))
    assert sorted(pairs) == sorted((a, b) for a in names for b in names if a != b)


def test_left_right_and_missing_statistics(dataset):
    root, _ = dataset
    ann = {}
    for split in ("train", "test"):
        ann.update(read_annotations(root / f"market-annotation-{split}.csv"))
    kps = np.array([[ys, xs] for ys, xs in ann.values()])  # (N, 2, 18)
    present = kps[:, 0] >= 0
    # person's right on the image left: Rsho/Lsho, Rhip/Lhip, Reye/Leye
    for r, l in ((2, 5), (8, 11), (15, 14)):
        both = present[:, r] & present[:, l]
        assert both.sum() > len(kps) // 2
        assert (kps[both, 1, r] < kps[both, 1, l]).all()
    # body joints are below the nose, the neck between the shoulders
    ok = present[:, 0] & present[:, 8]
    assert (kps[ok, 0, 0] < kps[ok, 0, 8]).all()
    assert present.mean() > 0.85
    assert 0.1 < present.all(1).mean() < 0.95  # some complete, some with missing joints
    assert (~present[:, 14:]).any()  # dropped face joints
    assert (~present[:, :14]).any()  # missing body joints (out of frame or dropped)


def test_determinism(tmp_path):
    def write(d, seed):
        sp.write_pose_pairs(d, size=(64, 32), identities=3, seed=seed, images_per_identity=3,
                            progress=False)
        return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

    a, b, c = write(tmp_path / "a", 7), write(tmp_path / "b", 7), write(tmp_path / "c", 8)
    assert len(a) == 2 * 2 + 9
    assert a == b
    assert a["market-annotation-train.csv"] != c["market-annotation-train.csv"]
    imgs_a = [v for k, v in a.items() if k.endswith(".png")]
    imgs_c = [v for k, v in c.items() if k.endswith(".png")]
    assert not set(imgs_a) & set(imgs_c)


def test_shared_background(tmp_path):
    """With shared_background every image of a person has one backdrop: the pixels that no
    figure covers are equal across them; by default each image has its own background."""
    def agreement(shared):
        out = tmp_path / str(shared)
        sp.write_pose_pairs(out, size=(64, 32), identities=3, seed=5, images_per_identity=3, progress=False,
                            shared_background=shared)
        images = {}
        for path in sorted((out / "market-dataset").rglob("*.png")):
            images.setdefault(pid(path.name), []).append(np.asarray(Image.open(path)))
        assert len(images) == 3 and all(len(v) == 3 for v in images.values())
        return [np.all([np.all(im == v[0], axis=-1) for im in v[1:]], axis=0).mean() for v in images.values()]

    assert min(agreement(True)) > 0.3  # the backdrop, outside all three figures
    assert max(agreement(False)) < 0.05


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"size": (16, 8)}, "size"),
        ({"size": (128,)}, "size"),
        ({"size": (128.0, 64)}, "size"),
        ({"size": "128by64"}, "size"),
        ({"identities": 1}, "identities"),
        ({"identities": 2.5}, "identities"),
        ({"seed": -1}, "seed"),
        ({"images_per_identity": 1}, "images_per_identity"),
        ({"max_pairs_per_identity": 0}, "max_pairs_per_identity"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"name": "a/b"}, "name"),
    ],
)
def test_validation(tmp_path, kwargs, arg):
    with pytest.raises(ValueError, match=f"^{arg} "):
        sp.write_pose_pairs(tmp_path, progress=False, **kwargs)
    assert not any(tmp_path.iterdir())  # nothing written before validation


def test_parse_size_and_rng_validation():
    assert sp.parse_size("128x64") == (128, 64)
    assert sp.parse_size(" 256X256 ") == (256, 256)
    with pytest.raises(ValueError, match="size"):
        sp.parse_size("128")
    with pytest.raises(ValueError, match="rng"):
        sp.sample_pose(np.random.default_rng(0).random(3))


def bilinear(img: np.ndarray, yx: np.ndarray) -> np.ndarray:
    """Sample (H, W, C) float image at float (N, 2) row/col positions."""
    return np.stack([ndimage.map_coordinates(img[..., c], yx.T, order=1) for c in range(img.shape[-1])], -1)


def striped_identity(period: float) -> sp.Identity:
    return dataclasses.replace(
        sp.sample_identity(np.random.default_rng(0)),
        long_sleeves=True, shoulders=1.0, girth=1.2,
        shirt=sp.Pattern("checks", (0.9, 0.2, 0.1), (0.1, 0.3, 0.9), angle=0.3, period=period, phase=0.1),
    )


def forearm_motion(ident, pose_a, pose_b, size=SIZE):
    """Render both poses; check only the right wrist moved, rigidly about the right elbow.

    Returns (img_a, img_b, forearm mask a, forearm mask b, elbow (y, x), phi) where
    rotating pose B's forearm by -phi about the elbow gives pose A's.
    """
    bg = sp.sample_background(np.random.default_rng(1), size)
    img_a, lab_a = sp.render_person(ident, pose_a, size, bg)
    img_b, lab_b = sp.render_person(ident, pose_b, size, bg)
    ja, jb = sp.pose_joints(ident, pose_a), sp.pose_joints(ident, pose_b)
    moved = np.arange(18) == 4  # Rwri
    np.testing.assert_allclose(ja[~moved], jb[~moved], atol=1e-9)
    elbow = ja[3]
    va, vb = ja[4] - elbow, jb[4] - elbow
    assert np.linalg.norm(va) == pytest.approx(np.linalg.norm(vb))
    phi = math.atan2(vb[0], vb[1]) - math.atan2(va[0], va[1])

    fore_a, fore_b = lab_a == 8, lab_b == 8
    for m in (fore_a, fore_b):  # the whole forearm in frame, away from the border
        ys, xs = np.nonzero(m)
        assert m.sum() > 60
        assert ys.min() > 1 and xs.min() > 1 and ys.max() < size[0] - 2 and xs.max() < size[1] - 2
    # Everything away from the two forearm footprints is unchanged, bit for bit.
    near = ndimage.binary_dilation(fore_a | fore_b, iterations=2)
    assert np.array_equal(img_a[~near], img_b[~near])
    assert np.array_equal(lab_a[~near], lab_b[~near])
    assert (lab_a[~near] >= 0).sum() > 500  # ... and that includes most of the figure
    return img_a.astype(float), img_b.astype(float), fore_a, fore_b, elbow, phi


def rotate_back(pb: np.ndarray, elbow: np.ndarray, phi: float) -> np.ndarray:
    """Rotate (N, 2) (y, x) points by -phi about the elbow."""
    c, s = math.cos(phi), math.sin(phi)
    rot_inv = np.array([[c, -s], [s, c]])  # acts on (y, x) vectors
    return (pb - elbow) @ rot_inv.T + elbow


def mapped_errors(img_a, img_b, fore_a, fore_b, elbow, phi):
    """|B(p) - A(R^-1 p)| over interior forearm pixels p of B whose preimage is interior in A."""
    pb = np.argwhere(ndimage.binary_erosion(fore_b, iterations=1)).astype(float)
    qa = rotate_back(pb, elbow, phi)
    # every pixel that gets a bilinear weight must be interior to forearm A
    a_core = ndimage.binary_erosion(fore_a, iterations=1)
    y0, x0 = np.floor(qa[:, 0]).astype(int), np.floor(qa[:, 1]).astype(int)
    fy, fx = qa[:, 0] - y0, qa[:, 1] - x0
    inside = np.ones(len(qa), bool)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy = np.clip(y0 + dy, 0, a_core.shape[0] - 1)
            xx = np.clip(x0 + dx, 0, a_core.shape[1] - 1)
            inside &= a_core[yy, xx] | (wy * wx < 1e-6)
    pb, qa = pb[inside], qa[inside]
    b_vals = img_b[pb[:, 0].astype(int), pb[:, 1].astype(int)]
    return np.abs(bilinear(img_a, qa) - b_vals), b_vals, inside.mean()


def test_texture_moves_rigidly_with_forearm():
    ident = striped_identity(period=0.4)
    pose_a = sp.Pose(x=32.0, y=60.0, scale=40.0, shoulder=(0.2, 0.15), elbow=(-0.05, 0.0))
    pose_b = dataclasses.replace(pose_a, elbow=(-0.6, 0.0))
    img_a, img_b, fore_a, fore_b, elbow, phi = forearm_motion(ident, pose_a, pose_b)
    assert abs(phi) == pytest.approx(0.55)
    # The rotation found from the joints maps wrist B onto wrist A.
    ja, jb = sp.pose_joints(ident, pose_a), sp.pose_joints(ident, pose_b)
    np.testing.assert_allclose(rotate_back(jb[4:5], elbow, phi)[0], ja[4], atol=1e-9)

    err, b_vals, coverage = mapped_errors(img_a, img_b, fore_a, fore_b, elbow, phi)
    assert coverage > 0.6 and len(err) > 100
    assert b_vals.std(0).max() > 40  # the sleeve is patterned, so the check is not vacuous
    # Only bilinear interpolation error of A at non-integer positions remains.
    assert np.median(err) < 2 and err.mean() < 6
    # Control: a wrong angle (texture not carried by the limb's motion) does not match.
    for wrong in (phi - 0.3, phi + 0.3):
        err_w, _, _ = mapped_errors(img_a, img_b, fore_a, fore_b, elbow, wrong)
        assert err_w.mean() > 3 * err.mean()


def test_quarter_turn_of_forearm_is_exact():
    # Elbow on a pixel centre + a 90 degree turn map pixel centres onto pixel centres, so
    # the texture must reappear exactly (up to uint8 rounding), fine checks included.
    ident = striped_identity(period=0.15)
    pose_a = sp.Pose(x=32.0, y=60.0, scale=50.0, shoulder=(0.0, 0.5), elbow=(0.0, 0.0))
    pose_b = dataclasses.replace(pose_a, elbow=(-math.pi / 2, 0.0))
    img_a, img_b, fore_a, fore_b, elbow, phi = forearm_motion(ident, pose_a, pose_b)
    np.testing.assert_allclose(elbow, np.round(elbow), atol=1e-9)
    assert abs(phi) == pytest.approx(math.pi / 2)
    err, b_vals, coverage = mapped_errors(img_a, img_b, fore_a, fore_b, elbow, phi)
    assert coverage > 0.95 and len(err) > 100
    assert b_vals.std(0).max() > 40
    assert err.max() <= 1  # headroom for uint8 rounding only


def test_keypoints_land_on_figure():
    rng = np.random.default_rng(5)
    hits, differs, counted = 0, 0, 0
    for _ in range(40):
        ident, pose = sp.sample_identity(rng), sp.sample_pose(rng, SIZE)
        bg = sp.sample_background(rng, SIZE)
        img, lab = sp.render_person(ident, pose, SIZE, bg)
        kp = sp.pose_keypoints(ident, pose, SIZE)
        exact = sp.pose_joints(ident, pose)
        vis = kp[:, 0] >= 0
        np.testing.assert_array_equal(kp[vis], np.floor(exact[vis] + 0.5))
        y, x = kp[vis, 0], kp[vis, 1]
        counted += int(vis.sum())
        hits += int((lab[y, x] >= 0).sum())
        differs += int((img[y, x] != bg[y, x]).any(-1).sum())
    assert counted > 40 * 14
    assert hits == counted
    assert differs >= 0.99 * counted


def test_render_parts_and_background():
    ident = sp.sample_identity(np.random.default_rng(2))
    pose = sp.Pose(x=32.0, y=58.0, scale=30.0)
    bg = sp.sample_background(np.random.default_rng(3), SIZE)
    img, lab = sp.render_person(ident, pose, SIZE, bg)
    assert img.shape == (*SIZE, 3) and img.dtype == np.uint8 and lab.dtype == np.int8
    assert set(np.unique(lab)) == set(range(-1, 10))
    far = ~ndimage.binary_dilation(lab >= 0, iterations=2)
    assert far.mean() > 0.5 and np.array_equal(img[far], bg[far])
    # the person's right side is drawn on the image left
    cols = {k: np.nonzero(lab == k)[1].mean() for k in range(10)}
    assert cols[6] < cols[0] < cols[7] and cols[2] < cols[3] and cols[8] < cols[9]
    with pytest.raises(ValueError, match="background"):
        sp.render_person(ident, pose, SIZE, bg[:, :10])


def test_non_empty_folder_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "set"
    kwargs = dict(size=(64, 32), identities=3, images_per_identity=2, progress=False)
    sp.write_pose_pairs(out, seed=1, **kwargs)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(FileExistsError, match="not empty.*overwrite"):
        sp.write_pose_pairs(out, seed=2, **kwargs)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # untouched
    # Overwrite: a stale image of an earlier, larger set is gone, other files stay.
    stale = out / "market-dataset" / "train" / "9999_c1s1_000001_00.png"
    stale.write_bytes(b"old")
    (out / "notes.txt").write_text("mine")
    sp.write_pose_pairs(out, seed=2, overwrite=True, **kwargs)
    assert not stale.exists() and (out / "notes.txt").read_text() == "mine"
    fresh = tmp_path / "fresh"
    sp.write_pose_pairs(fresh, seed=2, **kwargs)
    for path in fresh.rglob("*"):
        if path.is_file():
            assert (out / path.relative_to(fresh)).read_bytes() == path.read_bytes()
    assert {p.relative_to(out) for p in out.rglob("*.png")} == {
        p.relative_to(fresh) for p in fresh.rglob("*.png")}
    (out / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        sp.write_pose_pairs(out / "file", **kwargs)


def test_huge_size_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"^size must be at most 4096x4096, got 100000x64"):
        sp.write_pose_pairs(out, size=(100000, 64), progress=False)
    assert not out.exists()


def test_cli_overwrite_and_size(tmp_path, capsys):
    from pydeform.cli import main

    out = tmp_path / "set"
    argv = ["synth", "pose-pairs", "--out", str(out), "--size", "64x32", "--identities", "2",
            "--images-per-identity", "2", "--no-progress"]
    assert main(argv) == 0
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and "not empty" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0
    with pytest.raises(SystemExit):
        main(["synth", "pose-pairs", "--out", str(tmp_path / "huge"), "--size", "99999x99999"])
    assert "at most 4096x4096" in capsys.readouterr().err and not (tmp_path / "huge").exists()
