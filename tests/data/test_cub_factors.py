"""The CUB layout reader, FineGAN's preprocessing and the synthetic factor set."""
import numpy as np
import pytest
import torch
from PIL import Image

from pydeform.cli import main
from pydeform.data.cub import CUBObjects, augment, read_cub
from pydeform.data.synth_factors import SHAPE_FAMILY, TEXTURE_FAMILY, read_factors, write_factors


@pytest.fixture(scope="module")
def factors(tmp_path_factory):
    root = tmp_path_factory.mktemp("factors") / "set"
    write_factors(root, count=30, size=64, seed=3, progress=False)
    return root


def test_factor_set_consistent(factors):
    rows = read_factors(factors)
    records = read_cub(factors)
    assert len(rows) == len(records) == 30
    assert sum(r.train for r in records) == 24
    for row, record in zip(rows, records):
        assert TEXTURE_FAMILY[row["texture"]] == SHAPE_FAMILY[row["shape"]] == row["family"]
        mask = np.asarray(Image.open(factors / "masks" / row["name"])) > 0
        ys, xs = np.nonzero(mask)
        assert record.box == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        assert record.path == row["name"]
    # deterministic for a seed
    again = factors.parent / "again"
    write_factors(again, count=30, size=64, seed=3, progress=False)
    assert (again / "factors.csv").read_text() == (factors / "factors.csv").read_text()
    assert (again / "images" / "00007.png").read_bytes() == (factors / "images" / "00007.png").read_bytes()
    with pytest.raises(ValueError, match="not empty"):
        write_factors(again, count=30, size=64, progress=False)


def test_background_tie_rate(tmp_path):
    write_factors(tmp_path / "s", count=300, size=32, seed=1, bg_tie=0.6, progress=False)
    rows = read_factors(tmp_path / "s")
    tied = np.mean([r["background"] == r["texture"] for r in rows])
    assert 0.5 < tied < 0.72  # 0.6 + 0.4 / 20 = 0.62 expected


def test_cli_synth_factors(tmp_path, capsys):
    assert main(["synth", "factors", "--out", str(tmp_path / "f"), "--count", "5", "--size", "32", "--no-progress"]) == 0
    assert "wrote 4 + 1 images" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["synth", "factors", "--out", str(tmp_path / "g"), "--count", "1"])


def _write(root, images, boxes, split=None):
    root.mkdir(parents=True, exist_ok=True)
    (root / "images.txt").write_text(images)
    (root / "bounding_boxes.txt").write_text(boxes)
    if split is not None:
        (root / "train_test_split.txt").write_text(split)


def test_reader_errors_name_file_and_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="images.txt"):
        read_cub(tmp_path / "none")
    _write(tmp_path / "a", "1 a.png\n2 b.png extra\n", "1 0 0 1 1\n")
    with pytest.raises(ValueError, match=r"images.txt, line 2: expected 2 fields"):
        read_cub(tmp_path / "a")
    _write(tmp_path / "b", "1 a.png\n", "1 0 0 x 1\n")
    with pytest.raises(ValueError, match=r"bounding_boxes.txt, line 1: the box"):
        read_cub(tmp_path / "b")
    _write(tmp_path / "c", "1 a.png\n2 b.png\n", "1 0 0 1 1\n")
    with pytest.raises(ValueError, match=r"no box for id 2 \(images.txt, line 2\)"):
        read_cub(tmp_path / "c")
    _write(tmp_path / "d", "1 a.png\n", "1 0 0 1 1\n", "1 2\n")
    with pytest.raises(ValueError, match=r"train_test_split.txt, line 1"):
        read_cub(tmp_path / "d")
    _write(tmp_path / "e", "x a.png\n", "1 0 0 1 1\n")
    with pytest.raises(ValueError, match=r"images.txt, line 1: the id 'x'"):
        read_cub(tmp_path / "e")
    _write(tmp_path / "f", "1 a.png\n1 a.png\n", "1 0 0 1 1\n")
    with pytest.raises(ValueError, match="appears twice"):
        read_cub(tmp_path / "f")
    _write(tmp_path / "g", "1 missing.png\n", "1 0 0 1 1\n")
    with pytest.raises(OSError, match="missing.png"):
        CUBObjects(tmp_path / "g", "all")[0]
    _write(tmp_path / "h", "1 a.png\n", "1 3 3 0 5\n")
    with pytest.raises(ValueError, match=r"bounding_boxes.txt, line 1: the box size 0.0 x 5.0 is not positive"):
        read_cub(tmp_path / "h")
    # A box too small to crop, or outside the image: the error names the file and the id.
    for name, box in (("i", "1 60 30 1 1"), ("j", "1 500 10 20 20")):
        _write(tmp_path / name, "1 a.png\n", box + "\n")
        (tmp_path / name / "images").mkdir()
        Image.new("RGB", (64, 48)).save(tmp_path / name / "images" / "a.png")
        with pytest.raises(ValueError, match=r"a.png \(images.txt id 1\): the box .* 64x48 image"):
            CUBObjects(tmp_path / name, "all")[0]
    # A byte-order mark at the start of a file (Windows editors) is not part of the first id.
    _write(tmp_path / "k", "\ufeff1 a.png\n", "\ufeff1 0 0 4 4\n")
    assert read_cub(tmp_path / "k")[0].id == 1
    with pytest.raises(ValueError, match="split"):
        CUBObjects(tmp_path / "g", "val")


def test_preprocessing_by_hand(tmp_path):
    # a 200x100 (w x h) image, box x=40, y=20, w=30, h=40: r = int(0.75 * 40) = 30, centre (55, 40),
    # object crop [25, 10, 85, 70]; scene: scale 149 / 100, centre crop of the 298-wide image at x 74
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (100, 200, 3), dtype=np.uint8)
    _write(tmp_path / "h", "1 a.png\n", "1 40 20 30 40\n")
    (tmp_path / "h" / "images").mkdir()
    Image.fromarray(pixels).save(tmp_path / "h" / "images" / "a.png")
    item = CUBObjects(tmp_path / "h", "train")[0]
    expected = Image.fromarray(pixels).crop((25, 10, 85, 70)).resize((152, 152), Image.BILINEAR)
    torch.testing.assert_close(item["object"], torch.from_numpy(np.asarray(expected, np.float32)).permute(2, 0, 1) / 127.5 - 1)
    scale = 149 / 100
    ox = (298 - 149) // 2
    torch.testing.assert_close(item["box"], torch.tensor([40 * scale - ox, 20 * scale, 70 * scale - ox, 60 * scale]))
    assert item["scene"].shape == (3, 149, 149)

    batch = {k: v[None] if torch.is_tensor(v) else v for k, v in item.items()}
    gen = torch.Generator().manual_seed(5)
    obj, scene, box = augment(batch, gen)
    gen = torch.Generator().manual_seed(5)
    ox_, oy_ = torch.randint(0, 25, (1,), generator=gen).item(), torch.randint(0, 25, (1,), generator=gen).item()
    sx, sy = torch.randint(0, 23, (1,), generator=gen).item(), torch.randint(0, 23, (1,), generator=gen).item()
    fo, fs = torch.randint(0, 2, (1,), generator=gen).item(), torch.randint(0, 2, (1,), generator=gen).item()
    o = item["object"][:, oy_ : oy_ + 128, ox_ : ox_ + 128]
    torch.testing.assert_close(obj[0], o.flip(-1) if fo else o)
    s = item["scene"][:, sy : sy + 126, sx : sx + 126]
    torch.testing.assert_close(scene[0], s.flip(-1) if fs == 0 else s)
    x1, y1, x2, y2 = item["box"].tolist()
    x1, x2 = min(max(0, x1 - sx), 126), max(min(126, x2 - sx), 0)
    y1, y2 = min(max(0, y1 - sy), 126), max(min(126, y2 - sy), 0)
    if fs == 0:
        x1, x2 = 126 - x2, 126 - x1
    torch.testing.assert_close(box[0], torch.tensor([y1, x1, y2, x2]))
