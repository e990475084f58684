"""train.py as ModelArts runs it: a subprocess with --key=value flags, obs:// URLs on the moto
S3 server, a weights file on OBS, a restart after SIGTERM, and the demo's learning."""
import collections
import csv
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time

import h5py
import numpy as np

import obs_utils
from tests.images import broken_files, digit_image, encode, write_garbage_layout
from tests.servers import ROOT
from version import VERSION

SMALL = ["--backbone=mobilenetv3small", "--input_size=32", "--batch_size=8", "--augment=light",
         "--flip=none"]


def run_train(*flags, timeout=600):
    return subprocess.run([sys.executable, "train.py", *flags], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=timeout)


def digits_folder(root, count=60, size=28, broken=True):
    items = []
    for i in range(count):
        image, label = digit_image(i, size)
        items.append((f"img_{i}.jpg", encode(image), label % 3))  # 3 classes: quick to learn
    if broken:
        items += [(name, data, 0) for name, (data, _) in broken_files(size).items()
                  if name != "huge.png"]
    write_garbage_layout(root, items, {"0": "其他垃圾/烟蒂", "1": "可回收物/易拉罐",
                                       "2": "厨余垃圾/菜叶"})
    return root


def test_end_to_end_over_obs_with_weights_from_obs(bucket, tmp_path):
    from keras.src.legacy.saving import legacy_h5_format

    from models import backbones
    obs_utils.copy_tree(str(digits_folder(tmp_path / "data")), f"obs://{bucket}/train_data/")
    source = backbones.build("mobilenetv3small", 32)
    with h5py.File(tmp_path / "mnv3.h5", "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    obs_utils.copy(str(tmp_path / "mnv3.h5"), f"obs://{bucket}/weights/mnv3_notop.h5")

    flags = [f"--data_url=obs://{bucket}/train_data/", f"--train_url=s3://{bucket}/out/",
             f"--pretrained_weights=obs://{bucket}/weights/mnv3_notop.h5",
             f"--local_data_root={tmp_path / 'cache'}", *SMALL, "--max_epochs=2",
             "--freeze_epochs=1", "--tta=flip", "--num_gpus=1", "--task_index=0"]
    proc = run_train(*flags)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "ignoring flags this job does not know (the platform adds some): --num_gpus=1 " \
           "--task_index=0" in out
    assert "loaded 86/86 weight layers of mobilenetv3small" in out
    assert "NO PRETRAINED WEIGHTS" not in out
    assert "truncated or corrupt image" in out and "not an image" in out
    assert "phase: head only" in out and "phase: every layer trainable" in out
    assert re.search(r"epoch 2/2 +loss [\d.]+ +acc [\d.]+ +val_loss", out)

    names = set(obs_utils.listdir(f"obs://{bucket}/out", recursive=True))
    assert {"labels.json", "run_config.json", "screening_report.json", "split.json",
            "training_log.csv", "checkpoints/checkpoint"} <= names, names
    assert any(n.startswith("checkpoints/ckpt-2") for n in names)
    assert any(n.startswith("weights/epoch_") and n.endswith(".weights.h5") for n in names)
    assert any(n.startswith("tensorboard/validation/events.out.tfevents") for n in names)
    rows = list(csv.DictReader(obs_utils.read_text(
        f"obs://{bucket}/out/training_log.csv").splitlines()))
    assert [r["epoch"] for r in rows] == ["0", "1"] and "val_accuracy" in rows[0]
    config = json.loads(obs_utils.read_text(f"obs://{bucket}/out/run_config.json"))
    assert config["flags"]["backbone"] == "mobilenetv3small"  # as typed
    assert config["config"]["model"]["backbone"] == "mobilenetv3small"  # as handed down
    assert config["config"]["fit"]["freeze_epochs"] == 1
    assert config["config"]["export"]["tta"] == "flip"  # validated and served with the mirror
    assert config["config"]["feed"]["augmentation"]["flip"] == "none"  # the demo preset
    assert config["ignored_flags"] == flags[-2:]
    assert config["versions"]["modelarts-classifier"] == VERSION
    assert {"evaluation/metrics.json", "evaluation/metric.json", "evaluation/per_class.csv",
            "evaluation/confusion_matrix.png", "evaluation/training_curves.png",
            "model/saved_model.pb", "model/config.json", "model/customize_service.py",
            "model/labels.json", "model/serving/check.py"} <= names, names
    package = json.loads(obs_utils.read_text(f"obs://{bucket}/out/model/config.json"))
    metrics = json.loads(obs_utils.read_text(f"obs://{bucket}/out/evaluation/metrics.json"))
    assert package["metrics"]["accuracy"] == round(metrics["top1_accuracy"], 4)

    # Evaluating a weights file on OBS brings its run's settings and labels along.
    import train

    best = sorted(n for n in names if n.startswith("weights/"))[-1]
    assert train.main(["--mode=eval", f"--eval_model=obs://{bucket}/out/{best}",
                       f"--test_data_url=obs://{bucket}/train_data/",
                       f"--train_url=obs://{bucket}/test/",
                       f"--local_data_root={tmp_path / 'cache'}"]) == 0
    assert obs_utils.exists(f"obs://{bucket}/test/evaluation/metrics.json")

    # The same job started again (a ModelArts restart) finds its work done, and its package.
    again = run_train(*flags[:-2])
    assert again.returncode == 0, again.stdout + again.stderr
    assert "split: reusing" in again.stdout and "already finished in" in again.stdout
    assert "the package this job wrote before, kept" in again.stdout


def test_a_job_killed_mid_epoch_resumes_at_the_next_epoch(tmp_path, clean_storage_env):
    """A fold of a k-fold run (--kfold=2 --fold=0, as a ModelArts job of its own), killed in
    its second epoch and resumed: the fold continues where it stopped."""
    digits_folder(tmp_path / "data", count=150, broken=False)
    out = tmp_path / "out" / "folds" / "0"  # the fold's own train_url
    flags = [f"--data_url={tmp_path / 'data'}", f"--train_url={tmp_path / 'out'}",
             f"--local_data_root={tmp_path / 'cache'}", *SMALL, "--max_epochs=3",
             "--freeze_epochs=0", "--early_stop_patience=0", "--export_model=false",
             "--kfold=2", "--fold=0"]
    proc = subprocess.Popen([sys.executable, "train.py", *flags], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    # The index is written last in a save: once it exists, epoch 1 is safely saved.
    while not (out / "checkpoints" / "checkpoint").exists():
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # ModelArts stops a job this way; now in epoch 2
    first = proc.communicate(timeout=60)[0]
    assert proc.returncode != 0 and "epoch 1/3" in first and "epoch 3/3" not in first

    # Resumed on two devices (ModelArts restarts jobs on other GPU counts): the global batch
    # doubles, the steps per epoch halve, and the learning rate still follows the
    # uninterrupted run's curve (warm-up to 1e-3 in epoch 1, cosine to 0 at the end), which a
    # schedule over the optimizer's restored step count would not (0 from epoch 2 on).
    second = subprocess.run([sys.executable, "tests/train_two_devices.py", *flags], cwd=ROOT,
                            env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    steps = 75 // 8  # fold 0 trains on the other fold's 75 images, batch 8
    assert f"1 epoch already done, optimizer at step {steps}" in second.stdout
    assert "MirroredStrategy over 2 devices" in second.stdout
    assert "batch 8 x 2 replicas, 4 steps per epoch" in second.stdout
    assert "folds [0] of 2 trained; [1] still to run" in second.stdout
    assert "epoch 1/3 " not in second.stdout
    assert "epoch 2/3 " in second.stdout and "epoch 3/3 " in second.stdout
    rows = list(csv.DictReader(open(out / "training_log.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    rates = [float(r["learning_rate"]) for r in rows]
    assert np.allclose(rates, [1e-3, 5e-4, 0.0], rtol=1e-5, atol=1e-9), rates


def test_save_steps_resumes_within_an_epoch_where_the_data_stream_left_off(
        tmp_path, clean_storage_env, monkeypatch, caplog):
    """--save_steps=3 with CutMix on: a job stopped right after its checkpoint at step 3 of
    epoch 2 (of 6 steps) resumes there, on the batches the uninterrupted job drew next, with
    its optimizer: both end with the same epoch sums in training_log.csv and the same
    weights. A stream drawn anew, or skipped by the wrong count, would not."""
    import train
    from training import checkpoints

    digits_folder(tmp_path / "data", count=60, broken=False)
    flags = [f"--data_url={tmp_path / 'data'}", f"--local_data_root={tmp_path / 'cache'}",
             *SMALL, "--max_epochs=2", "--freeze_epochs=0", "--early_stop_patience=0",
             "--export_model=false", "--save_steps=3", "--deterministic=true",
             "--cutmix_prob=0.5", "--val_ratio=0.2"]
    assert train.main([*flags, f"--train_url={tmp_path / 'whole'}"]) == 0

    saved, save = [], checkpoints.StepState.save

    def save_then_stop(self, position):  # the job is stopped right after this save
        save(self, position)
        saved.append((position.epochs_done, position.steps_done, position.stream_steps))
        if len(saved) == 2:
            raise RuntimeError("stopped")

    monkeypatch.setattr(checkpoints.StepState, "save", save_then_stop)
    out = tmp_path / "cut"
    assert train.main([*flags, f"--train_url={out}"]) == 1
    assert saved == [(0, 3, 3), (1, 3, 9)]
    assert (out / "step_checkpoints" / "position-1000003.json").is_file()
    monkeypatch.setattr(checkpoints.StepState, "save", save)
    caplog.clear()
    caplog.set_level(logging.INFO)
    assert train.main([*flags, f"--train_url={out}"]) == 0
    assert "1 epoch already done" in caplog.text
    assert "resuming within epoch 2" in caplog.text and "3 of 6 steps already done" in caplog.text

    def log_rows(run):
        return [{k: float(v) for k, v in row.items() if k in ("loss", "accuracy",
                                                             "val_loss", "learning_rate")}
                for row in csv.DictReader(open(tmp_path / run / "training_log.csv"))]
    whole, cut = log_rows("whole"), log_rows("cut")
    assert len(whole) == len(cut) == 2
    for a, b in zip(whole, cut):
        assert all(abs(a[k] - b[k]) < 1e-5 for k in a), (a, b)

    def weights(run):
        """{file: its arrays} of the run's best weights files."""
        found = {}
        for name in sorted(os.listdir(tmp_path / run / "weights")):
            with h5py.File(tmp_path / run / "weights" / name) as f:
                found[name] = []
                f.visititems(lambda _, item: found[name].append(item[()])
                             if isinstance(item, h5py.Dataset) else None)
        return found
    whole, cut = weights("whole"), weights("cut")
    assert whole.keys() == cut.keys() and whole
    for name in whole:
        for a, b in zip(whole[name], cut[name]):
            np.testing.assert_allclose(a, b, atol=1e-5, err_msg=name)


def test_level_heads_train_beside_the_classes_and_stay_out_of_the_package(tmp_path,
                                                                          clean_storage_env,
                                                                          caplog):
    """--label_levels_sep=/ --level_weights=0.5 on digits named "category/item" (two of the
    three items under one category): an auxiliary head of the 2 categories trains (its weights
    move, and are in the checkpoint), the package serves the 3 items alone with the category
    in each reply, and evaluation reports both levels. A weight count that does not match
    the levels is one line before training."""
    import tensorflow as tf

    import customize_service
    import train

    digits_folder(tmp_path / "data", count=60, broken=False)
    rule = tmp_path / "data" / "garbage_classify_rule.json"
    rule.write_text(json.dumps({"0": "可回收物/易拉罐", "1": "可回收物/纸箱", "2": "厨余垃圾/菜叶"},
                               ensure_ascii=False), encoding="utf-8")
    flags = [f"--data_url={tmp_path / 'data'}", f"--local_data_root={tmp_path / 'cache'}",
             *SMALL, "--max_epochs=2", "--freeze_epochs=0", "--label_levels_sep=/"]
    caplog.set_level(logging.INFO)
    assert train.main([*flags, "--level_weights=0.5,0.5", f"--train_url={tmp_path / 'x'}"]) == 2
    assert "2 weight(s) for 1 coarser level(s)" in caplog.text
    out = tmp_path / "out"
    assert train.main([*flags, "--level_weights=0.5", f"--train_url={out}"]) == 0
    assert "auxiliary heads of 2 classes on the coarser levels, weighted 0.5" in caplog.text
    checkpoint = tf.train.latest_checkpoint(str(out / "checkpoints"))
    kernels = [name for name, _ in tf.train.list_variables(checkpoint)
               if name.startswith("levels/0/") and "kernel" in name and "OPTIMIZER" not in name]
    assert kernels, tf.train.list_variables(checkpoint)[:20]
    after = [tf.train.load_checkpoint(str(out / "checkpoints" / f"ckpt-{epoch}")).get_tensor(
        kernels[0]) for epoch in (1, 2)]
    assert after[0].shape[-1] == 2 and np.abs(after[1] - after[0]).max() > 1e-4  # it trains
    metrics = json.load(open(out / "evaluation" / "metrics.json", encoding="utf-8"))
    assert metrics["classes"] == 3 and metrics["levels"][0]["classes"] == 2
    service = customize_service.ImageClassifierService("model", str(out / "model"),
                                                       background=False)
    assert service.signature.structured_outputs["probabilities"].shape[-1] == 3
    image = next((tmp_path / "data").glob("*.jpg"))
    reply = service.inference({"images": {"a.jpg": io.BytesIO(image.read_bytes())}})
    assert reply["levels"][0] in ("可回收物", "厨余垃圾")


def test_demo_recipe_learns_the_digits_and_leaves_a_valid_package(demo_run):
    """The README's main command on the built-in data: held-out accuracy >= 0.95, reports,
    and a model package that passes the check."""
    top1 = float(re.search(r"best weights on validation: top-1 ([\d.]+)",
                           demo_run.stdout).group(1))
    assert top1 >= 0.95, demo_run.stdout
    # It says how long is left, then what to do next with a demo image that exists; and
    # TensorFlow's start-up banner stays out of its output.
    assert re.search(r"epoch 1/8 .* elapsed \d+s, about \S+ left", demo_run.stdout)
    assert re.search(r"epoch 8/8 .* elapsed \S+, done", demo_run.stdout)
    assert f"serve it with: python customize_service.py --model_dir {demo_run.out / 'model'}" \
        in demo_run.stdout
    image = re.search(r"once served, ask it: curl -F images=@(\S+) http://127.0.0.1:8080/",
                      demo_run.stdout).group(1)
    assert os.path.isfile(image)
    assert "absl::InitializeLog" not in demo_run.stdout + demo_run.stderr
    best_epoch = max(csv.DictReader(open(demo_run.out / "training_log.csv")),
                     key=lambda r: float(r["val_accuracy"]))
    assert abs(float(best_epoch["val_accuracy"]) - top1) < 1e-4  # the best weights evaluated
    metrics = json.load(open(demo_run.out / "evaluation" / "metrics.json"))
    assert metrics["top1_accuracy"] == json.load(open(
        demo_run.out / "evaluation" / "metric.json"))["total_metric"]["total_metric_values"][
        "accuracy"]
    assert len(list(csv.DictReader(open(demo_run.out / "evaluation" / "predictions.csv")))) \
        == metrics["images"] == len(json.load(open(demo_run.out / "split.json"))["val"])
    check = subprocess.run([sys.executable, "customize_service.py",
                            f"--check={demo_run.out / 'model'}"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "OK, a valid ModelArts model package" in check.stdout, \
        check.stdout + check.stderr


def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, clean_storage_env, caplog):
    """Each case through train.main (as the process would run it), and one as a real process,
    so the exit code and the absence of a traceback are seen where the user sees them."""
    import train

    empty = tmp_path / "only_text"
    empty.mkdir()
    (empty / "readme.md").write_text("no images here")
    digits_folder(tmp_path / "few", count=30, broken=False)
    (tmp_path / "used" / "model").mkdir(parents=True)
    (tmp_path / "used" / "model" / "saved_model.pb").write_bytes(b"a user's model")
    common = [f"--train_url={tmp_path / 'out'}", f"--local_data_root={tmp_path / 'cache'}"]
    for flags, expected in (
            ([f"--data_url={empty}"], "cannot tell how the data"),
            ([f"--data_url={tmp_path / 'missing'}"], "no such local folder"),
            (["--data_url=obs://"], "names no bucket"),
            ([f"--data_url={tmp_path / 'few'}", "--loss=binary_crossentropy"],
             "binary_crossentropy is refused"),
            ([f"--data_url={tmp_path / 'few'}", "--input_size=16"], "too small for resnet50"),
            ([f"--data_url={tmp_path / 'few'}", f"--pretrained_weights={tmp_path}/no.h5"],
             "no such file"),
            ([f"--data_url={tmp_path / 'few'}", f"--train_url={tmp_path / 'used'}"],
             "already holds a model package; pass --overwrite_model=true"),
            (["--mode=eval", f"--test_data_url={tmp_path / 'few'}"], "needs --eval_model"),
            (["--mode=predict", f"--eval_model={tmp_path / 'few'}",
              f"--test_data_url={tmp_path / 'few'}"], "holds neither a model package")):
        caplog.clear()
        own = [c for c in common if c.split("=")[0] not in {f.split("=")[0] for f in flags}]
        assert train.main([*flags, *own]) == 2, flags
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and expected in errors[0], (flags, errors)

    args, unknown = train.parse_args(["--batch=64", "--max_epoch=3"])  # no abbreviations
    assert (args.batch_size, args.max_epochs, unknown) == (32, 8, ["--batch=64", "--max_epoch=3"])
    proc = run_train(f"--data_url={tmp_path / 'few'}", "--batch_size=0", *common)
    assert proc.returncode == 2 and "expected a whole number >= 1" in proc.stderr
    proc = run_train(f"--data_url={tmp_path / 'few'}", "--balance=everything", *common)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    proc = run_train(f"--data_url={empty}", *common)
    assert proc.returncode == 2 and "cannot tell how the data" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_a_bug_keeps_its_traceback_and_exits_1(tmp_path, clean_storage_env, caplog,
                                              monkeypatch):
    """A ValueError from our own code (or TensorFlow's) is no user error: the log keeps its
    traceback, then one summary line, and the exit status is 1, not 2."""
    import train
    from inputs import prepare

    def broken(*args, **kwargs):
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr(prepare, "prepare", broken)
    folder = digits_folder(tmp_path / "few", count=30, broken=False)
    assert train.main([f"--data_url={folder}", f"--train_url={tmp_path / 'out'}",
                       f"--local_data_root={tmp_path / 'cache'}", *SMALL]) == 1
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert errors[0].exc_info is not None and "in broken" in caplog.text  # the traceback
    assert "unexpected ValueError (an internal invariant broke)" in errors[-1].getMessage()


def test_oversampling_lifts_the_minority_classes_of_a_20_to_1_set(tmp_path, clean_storage_env):
    """Digits 0 and 1 with 120 images each, 2 and 3 with 6: on a balanced held-out set, the
    minority classes' recall under --balance=oversample must beat --balance=none's (mean of
    2 seeds) after 2 epochs, in which --balance=none meets them a dozen times each. (Left to
    train 4 epochs, --balance=none learns the digits anyway: its minority recall ranged
    0.10-0.98 between seeds and CPUs, and CI once saw it beat oversample, 0.98 to 0.86. After
    2 epochs, in 5 runs: none 0.06-0.36, oversample 0.64-0.92.)"""
    from tests.images import write

    wanted = {0: 120, 1: 120, 2: 6, 3: 6}
    taken = {d: 0 for d in wanted}
    val_taken = {d: 0 for d in wanted}
    i = 0
    while any(taken[d] < n for d, n in wanted.items()) or min(val_taken.values()) < 25:
        image, digit = digit_image(i, 28)
        i += 1
        if digit not in wanted:
            continue
        if taken[digit] < wanted[digit]:
            write(tmp_path / "train" / str(digit) / f"{i}.png", encode(image, "PNG"))
            taken[digit] += 1
        elif val_taken[digit] < 25:
            write(tmp_path / "val" / str(digit) / f"{i}.png", encode(image, "PNG"))
            val_taken[digit] += 1
    minority_recall = {"none": [], "oversample": []}
    for policy in minority_recall:
        for seed in (1, 2):
            out = tmp_path / f"{policy}_{seed}"
            proc = run_train(f"--data_url={tmp_path / 'train'}",
                             f"--val_data_url={tmp_path / 'val'}", f"--train_url={out}",
                             f"--balance={policy}", f"--local_data_root={tmp_path / 'cache'}",
                             *SMALL, "--max_epochs=2", "--freeze_epochs=0", f"--seed={seed}",
                             "--early_stop_patience=0",
                             "--export_model=false")  # metrics.json is the evaluation's
            assert proc.returncode == 0, proc.stdout + proc.stderr
            metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
            recall = {c["name"]: c["recall"] for c in metrics["per_class"]}
            assert {c["support"] for c in metrics["per_class"]} == {25}  # a balanced set
            minority_recall[policy].append((recall["2"] + recall["3"]) / 2)
    print("minority-class recall by balance policy, seeds 1 and 2:", minority_recall)
    assert np.mean(minority_recall["oversample"]) > np.mean(minority_recall["none"]), \
        minority_recall


def test_the_package_plan_refuses_keeps_or_rewrites(tmp_path):
    """Decided before training: a package in train_url is refused, unless asked to replace it,
    or unless this same job had finished (kept; written again if its upload was cut short)."""
    import pytest

    import train
    from export import package
    from tests.test_checkpoints import tiny
    from training import checkpoints

    run = tmp_path / "run"
    flags = ["--data_url=data", f"--train_url={run}", "--max_epochs=3"]
    args = train.configure(train.parse_args(flags)[0])
    assert train.package_plan(args) == (False, False)
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text("{}")
    with pytest.raises(package.PackageError, match="--overwrite_model=true"):
        train.package_plan(args)

    model, optimizer = tiny(2)
    checkpoints.ResumeState(model, optimizer, str(run), str(run), True).save(3)
    assert train.package_plan(args) == (False, True)  # cut short
    (run / "model" / "saved_model.pb").write_bytes(b"the package's last file")
    assert train.package_plan(args) == (True, False)
    args = train.configure(train.parse_args([*flags, "--overwrite_model=true"])[0])
    assert train.package_plan(args) == (False, True)


def test_staged_training_class_limits_then_init_from_with_a_frozen_backbone(tmp_path):
    """The AliProducts stages through train.py. First --min_images_per_class=5
    --max_train_per_class=8 on classes of 4, 16 and 16 images: the job trains and exports a
    two-class package (its labels.json and the served probabilities), lists the class left
    out, and trains on 8 images a class. Then --init_from that run on all three classes with
    --freeze_backbone=true: its backbone loads, the classifier is new (the class sets
    differ), and after the run the backbone's every weight is still the first run's."""
    from inputs import label_map
    from tests.test_inputs_data import write_counts

    data = write_counts(tmp_path / "data", [4, 16, 16])
    out = tmp_path / "out"
    proc = run_train(f"--data_url={data}", f"--train_url={out}",
                     f"--local_data_root={tmp_path / 'cache'}", *SMALL, "--max_epochs=1",
                     "--min_images_per_class=5", "--max_train_per_class=8")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 classes left out (4 images: c0 (4)), 2 classes train" in proc.stdout
    assert "--max_train_per_class=8 left out" in proc.stdout
    saved = json.loads((out / "split.json").read_text())
    assert collections.Counter(label for _, label in saved["train"]) == {0: 8, 1: 8}
    assert label_map.load(str(out / "model" / "labels.json")) == ["c1", "c2"]
    import tensorflow as tf

    served = tf.saved_model.load(str(out / "model")).signatures["serving_default"]
    image = (data / "c1" / "000.png").read_bytes()
    assert served(images=tf.constant([image]))["probabilities"].shape == (1, 2)

    second = tmp_path / "second"
    proc = run_train(f"--data_url={data}", f"--train_url={second}",
                     f"--local_data_root={tmp_path / 'cache'}", *SMALL, "--max_epochs=2",
                     f"--init_from={out}", "--freeze_backbone=true", "--export_model=false")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "a new classifier: this job has 3 classes, the earlier run 2 (2 shared)" in \
        proc.stdout
    assert f"weight layers of mobilenetv3small from {out / 'weights'}" in proc.stdout
    assert "--freeze_backbone: the head alone trains, for all 2 epochs" in proc.stdout
    from models import weight_files

    def backbone_arrays(run):
        best = sorted((run / "weights").iterdir())[-1]
        return weight_files.read(str(best)).scopes["MobileNetV3Small"]

    first, after = backbone_arrays(out), backbone_arrays(second)
    assert first.keys() == after.keys() and len(first) > 50
    for name in first:
        for a, b in zip(first[name].arrays, after[name].arrays):
            np.testing.assert_array_equal(a, b)
