"""Synthetic ID-card scenes: reproducible, varied, and labelled in YOLO format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from producers import idcard_scenes
from producers.idcard_scenes import (
    CATEGORY,
    FRAME_SIZES,
    generate_scene,
    main,
    render_card,
    scene_rng,
    write_dataset,
)


def test_same_seed_same_scene_and_streams_are_independent() -> None:
    a = generate_scene(scene_rng(3, "train", 5))
    b = generate_scene(scene_rng(3, "train", 5))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes)
    others = [scene_rng(3, "train", 6), scene_rng(3, "val", 5), scene_rng(4, "train", 5)]
    for rng in others:
        assert not np.array_equal(generate_scene(rng, size=(320, 240)).image, generate_scene(
            scene_rng(3, "train", 5), size=(320, 240)).image)


def test_scenes_vary_in_card_count_size_and_brightness() -> None:
    scenes = [generate_scene(scene_rng(0, "train", i)) for i in range(30)]
    counts = [len(s.boxes) for s in scenes]
    assert 0 in counts and max(counts) >= 2 and counts.count(1) >= 10
    assert len({s.image.shape for s in scenes}) >= 3
    assert {(s.image.shape[1], s.image.shape[0]) for s in scenes} <= set(FRAME_SIZES)
    means = [s.image.mean() for s in scenes]
    assert max(means) - min(means) > 60


def test_boxes_are_inside_the_frame_and_cover_a_card() -> None:
    for i in range(12):
        scene = generate_scene(scene_rng(1, "val", i), n_cards=2)
        h, w = scene.image.shape[:2]
        assert scene.image.dtype == np.uint8 and scene.image.shape[2] == 3
        for x1, y1, x2, y2 in scene.boxes:
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            assert min(x2 - x1, y2 - y1) >= 20  # cards are at least 18% of the short side wide
        if len(scene.boxes) == 2:  # cards never overlap
            (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = scene.boxes
            inter = max(0, min(ax2, bx2) - max(ax1, bx1)) * max(0, min(ay2, by2) - max(ay1, by1))
            assert inter < 0.5 * min((ax2 - ax1) * (ay2 - ay1), (bx2 - bx1) * (by2 - by1))


def test_box_is_the_tight_box_of_the_card_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    # On a black background with no lighting or noise, every non-black pixel belongs to a card.
    monkeypatch.setattr(idcard_scenes, "_background", lambda rng, w, h: np.zeros((h, w, 3), np.uint8))
    monkeypatch.setattr(idcard_scenes, "_light_and_camera", lambda rng, img: img)
    for seed in range(6):
        scene = generate_scene(seed, size=(320, 240), n_cards=1)
        rows, cols = np.nonzero(scene.image.max(axis=2) > 0)
        x1, y1, x2, y2 = scene.boxes[0]
        assert abs(cols.min() - x1) <= 1 and abs(cols.max() + 1 - x2) <= 1
        assert abs(rows.min() - y1) <= 1 and abs(rows.max() + 1 - y2) <= 1


def test_render_card_has_id1_shape_and_rounded_corners() -> None:
    card = render_card(np.random.default_rng(0), width=428)
    assert card.shape == (270, 428, 4)
    assert card[0, 0, 3] == 0 and card[135, 214, 3] == 255
    with pytest.raises(ValueError, match="width"):
        render_card(np.random.default_rng(0), width=10)


def test_yolo_labels_match_boxes() -> None:
    scene = generate_scene(4, size=(640, 480), n_cards=2)
    rows = [line.split() for line in scene.yolo_labels().splitlines()]
    assert len(rows) == len(scene.boxes) > 0
    for row, (x1, y1, x2, y2) in zip(rows, scene.boxes, strict=True):
        cls, cx, cy, bw, bh = row[0], *map(float, row[1:])
        assert cls == "0"
        assert cx == pytest.approx((x1 + x2) / 2 / 640, abs=1e-6) and bh == pytest.approx((y2 - y1) / 480, abs=1e-6)
        assert all(0 < v <= 1 for v in (cx, cy, bw, bh))
    assert generate_scene(4, size=(200, 100), n_cards=0).yolo_labels() == ""


def test_write_dataset_and_command(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path), "--train", "3", "--val", "2", "--seed", "9"]) == 0
    assert sorted(p.name for p in (tmp_path / "images" / "train").iterdir()) == [
        f"scene_9_train_{i:05d}.jpg" for i in range(3)
    ]
    assert len(list((tmp_path / "labels" / "val").glob("*.txt"))) == 2
    yaml = (tmp_path / "data.yaml").read_text()
    assert f"path: {tmp_path.resolve()}" in yaml and f"0: {CATEGORY}" in yaml and "val: images/val" in yaml
    expected = generate_scene(scene_rng(9, "val", 1))
    assert (tmp_path / "labels" / "val" / "scene_9_val_00001.txt").read_text() == expected.yolo_labels()
    with Image.open(tmp_path / "images" / "val" / "scene_9_val_00001.jpg") as im:
        assert im.size == (expected.image.shape[1], expected.image.shape[0])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: scene_rng(0, "test", 0), "split"),
        (lambda: scene_rng(-1, "train", 0), ">= 0"),
        (lambda: generate_scene(0, size=(32, 32)), "at least 64x64"),
        (lambda: generate_scene(0, n_cards=9), "n_cards"),
        (lambda: write_dataset(Path("unused"), -1, 0, 0), "n_train"),
    ],
)
def test_bad_parameters_raise(call, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=message):
        call()
