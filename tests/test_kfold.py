"""--kfold, --fold, --mode=oof and --distill_from: one run per stratified fold in
{train_url}/folds/<i>/ (a train_url of its own), the out-of-fold probabilities gathered into
oof.csv (held against each fold's own package on the files) with the cross-validated accuracy,
folds run as separate jobs, and a distilled round whose batches carry the soft targets."""
import csv
import json
import logging

import numpy as np
import pytest
import tensorflow as tf

from inputs import oof, pipeline
from inputs.layouts import Sample
from tests.images import write
from tests.test_train_job import SMALL, digits_folder

K = 2


@pytest.fixture(scope="module")
def kfold_run(tmp_path_factory):
    """train.py --kfold=2 (one epoch per fold) on 60 digit images of 3 classes."""
    import train

    root = tmp_path_factory.mktemp("kfold")
    digits_folder(root / "data", count=60, broken=False)
    flags = [f"--data_url={root / 'data'}", f"--train_url={root / 'out'}",
             f"--local_data_root={root / 'cache'}", *SMALL, "--max_epochs=1",
             "--freeze_epochs=0", f"--kfold={K}"]
    assert train.main(flags) == 0
    return root, flags


def read_oof_rows(path):
    with open(path, encoding="utf-8") as f:
        return list(csv.reader(f))


def test_kfold_trains_one_package_per_fold_and_gathers_the_out_of_fold_probabilities(
        kfold_run):
    root, _ = kfold_run
    out = root / "out"
    names = json.loads((out / "labels.json").read_text())
    class_names = [names[str(i)] for i in range(len(names))]
    held_out = []
    for fold in range(K):
        folder = out / "folds" / str(fold)
        for part in ("model/saved_model.pb", "labels.json", "split.json", "run_config.json",
                     "evaluation/metrics.json", "training_log.csv", "oof.csv"):
            assert (folder / part).exists(), (fold, part)
        split = json.loads((folder / "split.json").read_text())
        files = [rel for rel, _ in split["val"]]
        assert {label for _, label in split["val"]} == {0, 1, 2}  # stratified
        assert not set(files) & {rel for rel, _ in split["train"]}
        held_out += files
        # The fold's rows of oof.csv are its own package's probabilities of those files.
        rows = read_oof_rows(folder / "oof.csv")[1:]
        assert sorted(r[0] for r in rows) == sorted(files)
        serve = tf.saved_model.load(str(folder / "model")).signatures["serving_default"]
        blobs = [(root / "data" / r[0]).read_bytes() for r in rows]
        np.testing.assert_allclose([[float(p) for p in r[2:]] for r in rows],
                                   serve(images=tf.constant(blobs))["probabilities"].numpy(),
                                   atol=2e-5)
    assert sorted(held_out) == sorted(f"img_{i}.jpg" for i in range(60))  # each image once

    rows = read_oof_rows(out / "oof.csv")
    assert rows[0] == ["file", "label", *class_names]
    assert [r[0] for r in rows[1:]] == sorted(held_out)
    metrics = json.loads((out / "metrics.json").read_text())
    per_fold = [json.loads((out / "folds" / str(i) / "evaluation" / "metrics.json").read_text())
                ["top1_accuracy"] for i in range(K)]
    assert metrics["cv_top1_accuracy"]["mean"] == pytest.approx(np.mean(per_fold))
    assert metrics["cv_top1_accuracy"]["sd"] == pytest.approx(np.std(per_fold, ddof=1))
    truth = [class_names.index(r[1]) for r in rows[1:]]
    predicted = np.array([[float(p) for p in r[2:]] for r in rows[1:]]).argmax(1)
    assert metrics["oof_top1_accuracy"] == pytest.approx(np.mean(predicted == truth))


def test_a_fold_run_alone_completes_the_set_and_mode_oof_gathers_it_again(kfold_run, caplog):
    import train

    root, flags = kfold_run
    out = root / "out"
    whole = (out / "oof.csv").read_bytes()
    (out / "folds" / "1" / "oof.csv").unlink()  # fold 1 as if its job had not ended
    (out / "oof.csv").unlink()
    caplog.clear()
    assert train.main(["--mode=oof", f"--train_url={out}"]) == 2
    assert "folds [1] of" in caplog.text and "are not done" in caplog.text

    caplog.clear()
    caplog.set_level(logging.INFO)
    assert train.main([*flags, "--fold=1"]) == 0  # finished training, kept package: no retrain
    assert "training had already finished" in caplog.text
    assert "the package this job wrote before, kept" in caplog.text
    assert (out / "oof.csv").read_bytes() == whole  # every fold done: gathered at once
    (out / "oof.csv").unlink()
    assert train.main(["--mode=oof", f"--train_url={out}"]) == 0
    assert (out / "oof.csv").read_bytes() == whole

    caplog.clear()
    assert train.main(flags) == 0  # the whole job again: every fold kept
    assert caplog.text.count("done before, kept") == K


def test_kfold_and_distillation_settings_that_cannot_work_are_one_line(kfold_run, tmp_path,
                                                                        caplog, monkeypatch,
                                                                        clean_storage_env):
    import train
    from evaluation import scores

    root, flags = kfold_run
    data = f"--data_url={root / 'data'}"
    common = [data, f"--local_data_root={root / 'cache'}", *SMALL, "--max_epochs=1",
              f"--train_url={tmp_path / 'out'}"]
    (tmp_path / "no_oof").mkdir()
    for extra, expected in [
            (["--kfold=1"], "use 2 or more folds"),
            (["--fold=1"], "needs --kfold"),
            (["--kfold=3", "--fold=3"], "folds are numbered 0..2"),
            (["--kfold=3", f"--val_data_url={root / 'data'}"], "leave out --val_data_url"),
            (["--kfold=40"], "no class has 40 images"),
            ([f"--train_url={root / 'out'}", "--kfold=4"], "holds 2 folds, not --kfold=4"),
            ([f"--distill_from={root / 'out'}", "--head=arcface"], "use --head=softmax"),
            ([f"--distill_from={root / 'out'}", "--distill_weight=1.5"], "in [0, 1]"),
            ([f"--distill_from={tmp_path / 'out'}"], "this job's own --train_url"),
            ([f"--distill_from={tmp_path / 'no_oof'}"], "oof.csv does not exist"),
            (["--mode=oof"], "holds no folds.json")]:
        caplog.clear()
        assert train.main([*common, *extra]) == 2, extra
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and expected in errors[0], (extra, errors)

    # Other data than the k-fold run's: its images have no out-of-fold probabilities.
    digits_folder(tmp_path / "other", count=40, broken=False)
    for i in range(40):
        (tmp_path / "other" / f"img_{i}.jpg").rename(tmp_path / "other" / f"new_{i}.jpg")
        text = (tmp_path / "other" / f"img_{i}.txt").read_text().replace("img_", "new_")
        (tmp_path / "other" / f"img_{i}.txt").unlink()
        (tmp_path / "other" / f"new_{i}.txt").write_text(text)
    caplog.clear()
    assert train.main([*common[1:-1], f"--data_url={tmp_path / 'other'}",
                       f"--train_url={tmp_path / 'other_out'}",
                       f"--distill_from={root / 'out'}"]) == 2
    assert "training images have no out-of-fold probabilities" in caplog.text

    # Out-of-fold probabilities too many to keep (as 50,000 classes would be), before training.
    monkeypatch.setattr(scores, "DENSE_VALUES", 50)  # 30 held-out images x 3 classes: 90
    caplog.clear()
    assert train.main([*common, "--kfold=2"]) == 2
    assert "per fold are too many to keep" in caplog.text
    assert not (tmp_path / "out" / "folds").exists()


def test_a_distilled_round_trains_on_the_mix_of_one_hot_and_out_of_fold(kfold_run, caplog):
    """The job end to end (then its package joins two fold models in an ensemble with crop
    views, the whole chain of the contest's system), then its batches: each image's target in
    the pipeline is w * one-hot + (1 - w) * its oof row (the images tell which sample they
    are)."""
    import train

    root, flags = kfold_run
    caplog.set_level(logging.INFO)
    out = root / "distilled"
    assert train.main([*flags[:1], f"--train_url={out}", *flags[2:-1],
                       f"--distill_from={root / 'out'}", "--distill_weight=0.3"]) == 0
    assert f"distilling from {root / 'out'}: out-of-fold probabilities of 60 images" \
        in caplog.text
    config = json.loads((out / "run_config.json").read_text())["config"]
    assert (config["data"]["distill_from"], config["feed"]["distill_weight"]) == (
        str(root / "out"), 0.3)
    folds = root / "out" / "folds"
    assert train.main(["--mode=ensemble", f"--members={folds / '0'},{folds / '1'},{out}",
                       "--tta=crops", f"--train_url={root / 'ensemble'}",
                       f"--test_data_url={root / 'data'}",
                       f"--local_data_root={root / 'cache'}"]) == 0  # checked, replies too
    description = json.loads((root / "ensemble" / "model" / "ensemble.json").read_text())
    assert len(description["members"]) == 3 and description["views"] == 6
    assert (root / "ensemble" / "evaluation" / "metrics.json").exists()

    # A distilled k-fold round: each fold trains on its own images' soft targets.
    caplog.clear()
    assert train.main([*flags[:1], f"--train_url={root / 'distilled_kfold'}", *flags[2:],
                       f"--distill_from={root / 'out'}", "--export_model=false"]) == 0
    assert caplog.text.count("distilling from") == 1
    assert (root / "distilled_kfold" / "oof.csv").exists()
    assert len(read_oof_rows(root / "distilled_kfold" / "oof.csv")) == 61

    # The pipeline: images of one flat grey level each (level = 10 * index), no augmentation.
    samples = []
    for i in range(6):
        path = root / "flat" / f"{i}.png"
        write(path, _flat_png(10 * i))
        samples.append(Sample(f"{i}.png", str(path), i % 3))
    soft = {s.rel: np.random.RandomState(i).dirichlet(np.ones(3)).astype(np.float32)
            for i, s in enumerate(samples)}
    targets = oof.targets(samples, soft, 0.3, 3)
    ds = pipeline.train_dataset(samples, 3, 4, 16, "stretch", "none", None, seed=1,
                                targets=targets)
    seen = set()
    for images, labels in ds.take(6):
        for image, label in zip(images.numpy(), labels.numpy()):
            index = int(round(image.mean() / 10))
            seen.add(index)
            want = 0.3 * np.eye(3)[samples[index].label] + 0.7 * soft[samples[index].rel]
            np.testing.assert_allclose(label, want, atol=1e-6)
    assert len(seen) >= 4  # most samples drawn, each with its own target
    np.testing.assert_allclose(targets.sum(1), 1.0, atol=1e-6)


def _flat_png(level):
    from PIL import Image

    from tests.images import encode

    return encode(Image.new("RGB", (20, 20), (level, level, level)), "PNG")


def test_oof_files_of_other_classes_or_shapes_are_refused(tmp_path):
    from errors import UserError

    text = oof.to_text(["a.jpg"], [0], np.array([[0.75, 0.25]]), ["x", "y"])
    write(tmp_path / "run" / "oof.csv", text.encode())
    files, labels, probabilities = oof.read(str(tmp_path / "run" / "oof.csv"), ["y", "x"])
    assert (files, labels) == (["a.jpg"], ["x"])
    np.testing.assert_allclose(probabilities, [[0.25, 0.75]])  # put in the asked order
    with pytest.raises(UserError, match="names other classes"):
        oof.read(str(tmp_path / "run" / "oof.csv"), ["x", "z"])
    write(tmp_path / "bad" / "oof.csv", b"name,score\na.jpg,1\n")
    with pytest.raises(UserError, match="is not an oof.csv"):
        oof.read(str(tmp_path / "bad" / "oof.csv"), ["x", "y"])
