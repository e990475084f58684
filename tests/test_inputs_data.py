"""Layouts, screening and split on real image files (digits) and deliberately broken ones."""
import collections
import json
import os

import pytest

from errors import UserError
from inputs import label_map, layouts, screening, split
from tests.images import broken_files, digit_image, encode, write, write_garbage_layout

NAMES = ["零", "一", "二"]  # class names, Chinese on purpose


def digit_items(count=30, per_class_limit=None):
    """[(file name, JPEG bytes, label)] of digits 0..2, some with Chinese file names."""
    items, i = [], 0
    while len(items) < count:
        image, label = digit_image(i)
        i += 1
        if label > 2:
            continue
        name = f"图片_{i}.jpg" if i % 5 == 0 else f"img_{i}.jpg"
        items.append((name, encode(image), label))
    return items


def as_set(index):
    return sorted((os.path.basename(s.rel), index.class_names[s.label]) for s in index.samples)


def test_three_layouts_parse_to_the_same_index(tmp_path):
    items = digit_items()
    write_garbage_layout(tmp_path / "garbage", items, {str(i): n for i, n in enumerate(NAMES)})
    for name, data, label in items:
        write(tmp_path / "folders" / NAMES[label] / name, data)
        write(tmp_path / "csv" / "images" / name, data)
        write(tmp_path / "jsonl" / "images" / name, data)
    (tmp_path / "csv" / "train.csv").write_text(
        "image,label\n" + "".join(f"images/{n},{NAMES[lab]}\n" for n, _, lab in items),
        encoding="utf-8")
    (tmp_path / "jsonl" / "list.jsonl").write_text("".join(
        json.dumps({"path": f"images/{n}", "label": lab}, ensure_ascii=False) + "\n"
        for n, _, lab in items), encoding="utf-8")
    write(tmp_path / "jsonl" / "garbage_classify_rule.json",
          json.dumps({str(i): n for i, n in enumerate(NAMES)}).encode())

    indexes = {kind: layouts.read_index(str(tmp_path / kind))
               for kind in ("garbage", "folders", "csv", "jsonl")}
    assert [ix.layout for ix in indexes.values()] == ["garbage", "folders", "manifest",
                                                      "manifest"]
    expected = sorted((n, NAMES[lab]) for n, _, lab in items)
    for kind, index in indexes.items():
        assert index.problems == [], (kind, index.problems)
        # ids come from the rule file where there is one, else from the sorted class names
        assert index.class_names == (NAMES if kind in ("garbage", "jsonl") else sorted(NAMES))
        assert as_set(index) == expected, kind


def test_label_problems_are_named_with_file_and_line(tmp_path):
    items = digit_items(9)
    write_garbage_layout(tmp_path, items, {"0": "零", "1": "一", "2": "二", "3": "空"})
    (tmp_path / "img_missing.txt").write_text("img_missing.jpg, 1\n")
    write(tmp_path / "nolabel.jpg", items[0][1])
    (tmp_path / "bad1.txt").write_text("first line is fine? no comma here\n")
    write(tmp_path / "bad2.jpg", items[1][1])
    (tmp_path / "bad2.txt").write_text("\nbad2.jpg, abc\n")
    write(tmp_path / "bad3.jpg", items[2][1])
    (tmp_path / "bad3.txt").write_text("bad3.jpg, 7\n")
    index = layouts.read_index(str(tmp_path))
    found = {(p.reason, p.file, p.line) for p in index.problems}
    assert ("label file's image is missing", "img_missing.txt", 1) in found
    assert ("unparsable label line", "bad1.txt", 1) in found
    assert ("label is not a class id", "bad2.txt", 2) in found
    assert ("label out of range", "bad3.txt", 1) in found
    assert ("image has no label", "nolabel.jpg", None) in found
    assert ("image has no label", "bad2.jpg", None) in found
    empty = [p for p in index.problems if p.reason == "class has no images"]
    assert [p.detail for p in empty] == ["class 3 (空)"]
    assert len(index.samples) == 9


def test_layout_errors_are_clear(tmp_path):
    (tmp_path / "notes.md").write_text("nothing here")
    with pytest.raises(layouts.LayoutError, match="--data_format"):
        layouts.read_index(str(tmp_path))
    with pytest.raises(layouts.LayoutError, match="not found"):
        layouts.read_index(str(tmp_path / "missing"))


def test_screening_names_every_broken_file_and_keeps_the_rest(tmp_path):
    items = digit_items(12)
    broken = broken_files()
    items += [(name, data, 1) for name, (data, _reason) in broken.items()]
    same = items[0]
    items.append(("dup_same.jpg", same[1], same[2]))           # a duplicate, same label
    items.append(("dup_other.jpg", items[3][1], (items[3][2] + 1) % 3))  # conflicting label
    write_garbage_layout(tmp_path / "data", items)
    index = layouts.read_index(str(tmp_path / "data"))
    usable, problems = screening.screen(index, str(tmp_path / "converted"))

    reasons = {p.file: p.reason for p in problems}
    for name, (_data, reason) in broken.items():
        assert reasons.get(name) == reason, name
    assert sorted([reasons.get("dup_same.jpg"), reasons.get(same[0])], key=str) == [
        None, "duplicate image"]  # one copy kept
    assert reasons["dup_other.jpg"] == reasons[items[3][0]] == "duplicate with conflicting labels"
    names = {s.rel for s in usable}
    assert {"alpha.png", "deep16.png", "gray.jpg", "cmyk.jpg", "anim.gif", "photo.webp",
            "scan.tiff"} <= names
    assert not names & {"truncated.jpg", "text.jpg", "empty.jpg", "huge.png", "tiny.png",
                        "dup_other.jpg", items[3][0]}
    assert len(names & {"dup_same.jpg", same[0]}) == 1
    tiff = next(s for s in usable if s.rel == "scan.tiff")
    assert tiff.path.startswith(str(tmp_path / "converted")) and tiff.path.endswith(".png")

    report = screening.summarize(index, usable, problems)
    assert report["usable_images"] == len(usable)
    assert report["problem_counts"]["duplicate image"] == 1
    assert sum(report["class_counts"].values()) == len(usable)
    screening.check_enough(usable, index.class_names, "report.json")
    with pytest.raises(screening.DataError, match="too little usable data"):
        screening.check_enough(usable[:3], index.class_names, "report.json")


def test_label_levels_split_class_names_and_refuse_uneven_ones():
    names = ["其他垃圾/烟蒂", "可回收物/易拉罐", "其他垃圾/快餐盒", "可回收物/充电宝"]
    [level] = label_map.levels(names, "/")
    assert (level.depth, level.names, level.of_class) == (1, ["其他垃圾", "可回收物"],
                                                          [0, 1, 0, 1])
    three = label_map.levels(["a/x/1", "a/y/2", "b/x/3"], "/")
    assert [(lv.names, lv.of_class) for lv in three] == [(["a", "b"], [0, 0, 1]),
                                                         (["a/x", "a/y", "b/x"], [0, 1, 2])]
    assert label_map.levels(names, "") == []
    for bad in (["a/x", "b"], ["a/x", "b/y/z"], ["a/x", "/y"]):
        with pytest.raises(UserError, match="does not split into the 2 non-empty levels"):
            label_map.levels(bad, "/")


def test_label_map_round_trip(tmp_path):
    label_map.save(str(tmp_path / "labels.json"), ["其他垃圾/一次性快餐盒", "可回收物/易拉罐"])
    assert label_map.load(str(tmp_path / "labels.json")) == ["其他垃圾/一次性快餐盒",
                                                             "可回收物/易拉罐"]
    (tmp_path / "gap.json").write_text('{"0": "a", "2": "b"}')
    with pytest.raises(ValueError, match="without gaps"):
        label_map.load(str(tmp_path / "gap.json"))


def make_samples(counts):
    return [layouts.Sample(f"c{label}/img_{i}.jpg", f"/x/c{label}/img_{i}.jpg", label)
            for label, n in enumerate(counts) for i in range(n)]


def test_split_is_stratified_stable_and_leak_free():
    samples = make_samples([50, 30, 20, 1])
    train, val = split.stratified_split(samples, 0.2, seed=7)
    again_train, again_val = split.stratified_split(samples, 0.2, seed=7)
    other_train, _ = split.stratified_split(samples, 0.2, seed=8)
    assert [s.rel for s in train] == [s.rel for s in again_train]
    assert [s.rel for s in val] == [s.rel for s in again_val]
    assert [s.rel for s in train] != [s.rel for s in other_train]
    assert not {s.rel for s in train} & {s.rel for s in val}
    assert len(train) + len(val) == len(samples)
    per_class = collections.Counter(s.label for s in val)
    assert per_class == {0: 10, 1: 6, 2: 4}  # 20 % of each; the single image stays in train
    assert any(s.label == 3 for s in train)


def test_a_split_file_that_is_not_ours_and_no_validation_images_are_clear_errors(tmp_path):
    from inputs import prepare

    (tmp_path / "split.json").write_text('{"train": [["a.jpg"]]}')
    with pytest.raises(ValueError, match="is not a split this job wrote"):
        split.load_or_make(str(tmp_path / "split.json"), make_samples([3, 3]), 0.2, seed=1)
    for label in range(10):  # ten classes of one image each: nothing can be held out
        image, _ = digit_image(label)
        write(tmp_path / "one_each" / f"c{label}" / "x.jpg", encode(image.rotate(label * 9)))
    with pytest.raises(screening.DataError, match="no validation images"):
        prepare.prepare(str(tmp_path / "one_each"), str(tmp_path / "out"),
                        str(tmp_path / "cache"))


def test_split_is_saved_and_reused(tmp_path):
    url = str(tmp_path / "out" / "split.json")
    samples = make_samples([10, 10])
    train, val = split.load_or_make(url, samples, 0.2, seed=1)
    newcomer = layouts.Sample("c0/new.jpg", "/x/c0/new.jpg", 0)
    train2, val2 = split.load_or_make(url, samples[1:] + [newcomer], 0.5, seed=99)
    assert [s.rel for s in val2] == [s.rel for s in val if s.rel != samples[0].rel]
    assert "c0/new.jpg" in {s.rel for s in train2}
    relabelled = [layouts.Sample(s.rel, s.path, 1 - s.label) for s in samples]
    with pytest.raises(ValueError, match="had label"):
        split.load_or_make(url, relabelled, 0.2, seed=1)


def test_explicit_validation_set_is_mapped_onto_training_ids_by_name(tmp_path, caplog):
    from inputs import prepare

    items = digit_items(24)
    for name, data, label in items:
        write(tmp_path / "train" / NAMES[label] / name, data)
    # The validation folder lacks class 零, so its own sorted ids differ from training's.
    for name, data, label in items[:12]:
        if label != 0:
            write(tmp_path / "val" / NAMES[label] / ("v_" + name), data)
    data = prepare.prepare(str(tmp_path / "train"), str(tmp_path / "out"),
                           str(tmp_path / "cache"), val_dir=str(tmp_path / "val"))
    # the validation images are copies of training ones: those leave training, said so
    copies = {d for n, d, label in items[:12] if label != 0}
    assert len(data.train) == len(items) - len(copies) and len(copies) >= 5
    assert "exact copies of validation images" in caplog.text
    kept = prepare.prepare(str(tmp_path / "train"), str(tmp_path / "out"),
                           str(tmp_path / "cache"), val_dir=str(tmp_path / "val"),
                           drop_val_copies=False)
    assert len(kept.train) == len(items)
    assert data.class_names == sorted(NAMES)
    assert data.val and all(data.class_names[s.label] == s.rel.split("/")[0] for s in data.val)
    assert (tmp_path / "out" / "screening_report_val.json").exists()
    assert not (tmp_path / "out" / "split.json").exists()

    write(tmp_path / "val2" / "三" / "x.jpg", items[0][1])
    write(tmp_path / "val2" / "一" / "y.jpg", items[1][1])
    with pytest.raises(ValueError, match="classes the training data lacks"):
        prepare.prepare(str(tmp_path / "train"), str(tmp_path / "out"),
                        str(tmp_path / "cache"), val_dir=str(tmp_path / "val2"))


def write_counts(root, counts):
    """Class folders c0, c1, ... with counts[c] distinct digit images each (PNG)."""
    i = 0
    for label, count in enumerate(counts):
        for k in range(count):
            image, _ = digit_image(i)
            i += 1
            write(root / f"c{label}" / f"{k:03d}.png", encode(image, "PNG"))
    return root


def test_class_count_limits_train_on_the_classes_in_range_and_list_the_others(tmp_path, caplog):
    """--min_images_per_class=5 --max_images_per_class=10 on classes of 3, 6, 9 and 14 images:
    the model's classes are c1 and c2 (ids 0 and 1, in labels.json too), and
    class_counts.json and the log name the two left out with their counts and why. Limits
    that leave fewer than two classes are one clear error."""
    from inputs import class_counts, prepare

    data_dir = write_counts(tmp_path / "data", [3, 6, 9, 14])
    out = tmp_path / "out"
    data = prepare.prepare(str(data_dir), str(out), str(tmp_path / "cache"),
                           min_images_per_class=5, max_images_per_class=10)
    assert data.class_names == ["c1", "c2"]
    assert len(data.train) + len(data.val) == 15
    assert all(s.rel.startswith(data.class_names[s.label] + "/") for s in data.train + data.val)
    assert label_map.load(str(out / label_map.FILE_NAME)) == ["c1", "c2"]
    report = json.loads((out / class_counts.FILE_NAME).read_text())
    assert report["left_out"] == [{"class": "c0", "images": 3, "reason": "fewer than 5"},
                                  {"class": "c3", "images": 14, "reason": "more than 10"}]
    assert "2 classes left out (17 images: c0 (3), c3 (14))" in caplog.text
    with pytest.raises(screening.DataError, match="widen --min_images_per_class"):
        prepare.prepare(str(data_dir), str(tmp_path / "out2"), str(tmp_path / "cache"),
                        min_images_per_class=10)


def test_max_train_per_class_caps_big_classes_and_the_split_keeps_what_it_left_out(tmp_path):
    """--max_train_per_class=5 on classes of 5 and 20 images: class c1 trains on 5 of its
    16 non-validation images, drawn with the seed; split.json lists the 11 left out, so the
    job run again leaves out the same ones, and a new image of c1 stays out (c1 is at the
    cap) while one of c0 joins. Another cap on the same train_url is refused; another seed
    draws other images."""
    from inputs import prepare

    data_dir = write_counts(tmp_path / "data", [5, 20])
    out, cache = tmp_path / "out", str(tmp_path / "cache")
    data = prepare.prepare(str(data_dir), str(out), cache, max_train_per_class=5, seed=3)
    per_class = collections.Counter(s.label for s in data.train)
    assert per_class == {0: 4, 1: 5} and len(data.val) == 5
    saved = json.loads((out / split.FILE_NAME).read_text())
    assert saved["max_train_per_class"] == 5 and len(saved["left_out"]) == 11
    assert {rel for rel, _ in saved["left_out"]}.isdisjoint(s.rel for s in data.train)

    image, _ = digit_image(900)
    write(data_dir / "c1" / "new.png", encode(image, "PNG"))
    image, _ = digit_image(901)
    write(data_dir / "c0" / "new.png", encode(image, "PNG"))
    again = prepare.prepare(str(data_dir), str(out), cache, max_train_per_class=5, seed=3)
    assert {s.rel for s in again.train} == {s.rel for s in data.train} | {"c0/new.png"}
    assert [s.rel for s in again.val] == [s.rel for s in data.val]
    with pytest.raises(ValueError, match="made with --max_train_per_class=5, this job asks"):
        prepare.prepare(str(data_dir), str(out), cache, max_train_per_class=6, seed=3)
    other = prepare.prepare(str(data_dir), str(tmp_path / "out3"), cache,
                            max_train_per_class=5, seed=4)
    assert {s.rel for s in other.train if s.label == 1} != {s.rel for s in data.train
                                                            if s.label == 1}
