"""The training loop right on the paths that used to train silently otherwise: the unfreeze
(a fresh optimizer, its own warm-up), the schedule under another steps-per-epoch, early
stopping with a cosine head, best-weights files without the optimizer, top-5 with ties.
(Resume on two devices: tests/test_train_job.py.)"""
import csv
import logging

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from evaluation.metrics import classification_metrics
from models import backbones, build, losses
from tests.test_train_job import SMALL, digits_folder, run_train
from training import optim, phases
from training.loop import Loop, StepConfig, _sums


def test_the_unfreeze_starts_a_fresh_optimizer_and_its_own_warm_up(caplog):
    """After 40 head-only steps, the backbone's first step moves each weight by about the
    learning rate, as a new Adam's first step does (|m_hat / sqrt(v_hat)| = 1); with the step
    count of the frozen phase and zero moments it moved about 0.6x here, 2-4x after 500
    steps. The rate then warms up again from 0 over the phase's first epoch."""
    caplog.set_level(logging.INFO, logger="training")
    model, backbone = build.build_classifier("mobilenetv3small", 4, 32)
    stages = build.backbone_stages(backbone)
    plan = phases.plan(1, 4)
    rate = 1e-3
    optimizer = keras.optimizers.Adam(rate)
    optimizer.build(model.trainable_variables)
    loop = Loop(tf.distribute.get_strategy(), model, optimizer,
                losses.make_loss(reduction=None), StepConfig(global_batch=8))
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    labels = np.eye(4, dtype="float32")[rng.integers(0, 4, 8)]
    batches = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())

    assert phases.begin_epoch(0, 0, plan, stages, backbone, model, optimizer, rate)
    for _ in range(40):
        loop.train_step(batches)
    assert phases.begin_epoch(1, 0, plan, stages, backbone, model, optimizer, rate)
    loop.retrace()
    assert int(optimizer.iterations.numpy()) == 0 and "optimizer starts afresh" in caplog.text
    kernels = [v for v in backbone.trainable_weights if v.path.endswith("kernel")]
    before = [v.numpy().copy() for v in kernels]
    loop.train_step(batches)
    moved = np.concatenate([np.abs(v.numpy() - b).ravel() for v, b in zip(kernels, before)])
    moved = moved[moved > 0]
    assert 0.9 < np.median(moved) / rate < 1.1, np.median(moved) / rate

    schedule = optim.phased_schedule("cosine", rate, 10, phases.spans(plan), warmup_epochs=1)
    optimizer = keras.optimizers.Adam(schedule)
    optimizer.build(model.trainable_variables)
    phases.begin_epoch(0, 0, plan, stages, backbone, model, optimizer, schedule)
    optimizer.iterations.assign(10)  # the head-only epoch's ten steps
    phases.begin_epoch(1, 0, plan, stages, backbone, model, optimizer, schedule)
    assert optim.current_learning_rate(optimizer) == 0.0  # warm-up from 0 again
    optimizer.iterations.assign(10)
    np.testing.assert_allclose(optim.current_learning_rate(optimizer), rate, rtol=1e-6)


@pytest.mark.parametrize("name, epochs, options, tolerance", [
    ("cosine", 6, {}, {"rtol": 1e-6}),
    ("sgdr", 8, {"restart_epochs": 2, "restart_mult": 2}, {"rtol": 1e-5, "atol": 1e-9}),
])
def test_the_schedule_follows_epoch_progress_whatever_the_steps_per_epoch(name, epochs, options,
                                                                          tolerance):
    """A job resumed with twice the global batch (half the steps per epoch) gets, at each
    point of each epoch, the rate the uninterrupted job had there: cosine, and SGDR's
    restarts."""
    def rates(steps_per_epoch, resume_at, restored_step):
        schedule = optim.phased_schedule(name, 1e-2, steps_per_epoch,
                                         phases.spans(phases.plan(0, epochs)),
                                         warmup_epochs=1, **options)
        found = []
        for epoch in range(resume_at, epochs):
            step = restored_step + (epoch - resume_at) * steps_per_epoch
            schedule.start_epoch(epoch, step)
            found += [float(schedule(step + round(steps_per_epoch * f))) for f in (0, 0.4, 0.8)]
        return found

    uninterrupted = rates(10, 3, 30)  # steps 30.. of a 10-steps-per-epoch run
    resumed = rates(5, 3, 30)             # the optimizer restored at step 30, now 5 per epoch
    np.testing.assert_allclose(resumed, uninterrupted, **tolerance)
    assert uninterrupted[-1] > 0


def test_random_weights_skip_the_head_only_phase(caplog):
    caplog.set_level(logging.INFO, logger="training")
    assert phases.head_only_epochs(2, pretrained=True) == 2
    assert phases.head_only_epochs(2, pretrained=False) == 0
    assert "nothing to protect" in caplog.text
    assert phases.spans(phases.plan(0, 5)) == [(0, 5)]
    assert phases.spans(phases.plan(2, 5)) == [(0, 2), (2, 5)]
    assert phases.plan(2, 5, unfreeze_every=1, stage_count=5, pretrained=False) == [
        phases.Phase(0, 5, None)]
    assert "--unfreeze_every=1 has nothing to protect" in caplog.text


def test_the_staged_plan_adds_one_stage_every_n_epochs_and_is_cut_at_the_end():
    Phase = phases.Phase
    assert phases.plan(1, 10, unfreeze_every=2, stage_count=5) == [
        Phase(0, 1, 0), Phase(1, 3, 1), Phase(3, 5, 2), Phase(5, 7, 3), Phase(7, 9, 4),
        Phase(9, 10, None)]
    assert phases.plan(1, 4, unfreeze_every=2, stage_count=5) == [
        Phase(0, 1, 0), Phase(1, 3, 1), Phase(3, 4, 2)]
    assert phases.plan(0, 3, unfreeze_every=1, stage_count=2) == [Phase(0, 1, 1),
                                                                 Phase(1, 3, None)]
    assert phases.plan(1, 3, unfreeze_every=1, stage_count=1) == [Phase(0, 1, 0),
                                                                 Phase(1, 3, None)]


@pytest.mark.parametrize("name, firsts", [
    ("resnet50", ["input_layer", "pool1_pool", "conv3_block1_1_conv", "conv4_block1_1_conv",
                  "conv5_block1_1_conv"]),
    ("efficientnetb0", ["input_layer", "block2a_dwconv", "block3a_dwconv", "block4a_dwconv",
                        "block6a_dwconv"])])
def test_backbone_stages_begin_where_the_feature_map_shrinks(name, firsts):
    """ResNet50's five stages are its stem, conv2 (from the max-pool), conv3, conv4, conv5;
    EfficientNet's weightless input stage (Normalization holds statistics only) joins its
    stem; the stages together are every layer once, in order."""
    _, backbone = build.build_classifier(name, 4, 32)
    stages = build.backbone_stages(backbone)
    assert [stage[0].name.rstrip("_0123456789") if stage[0].name.startswith("input_layer")
            else stage[0].name for stage in stages] == firsts
    assert [layer for stage in stages for layer in stage] == backbone.layers
    if name == "efficientnetb0":
        assert "stem_conv" in [layer.name for layer in stages[0]]


def test_staged_unfreeze_trains_only_the_top_stages_and_resumes_in_its_phase(caplog):
    """--freeze_epochs=1 --unfreeze_every=2 on MobileNetV3Small (5 stages): after each epoch,
    exactly the head and the phase's top stages have changed, and the frozen stages' every
    variable (BatchNorm's moving statistics too) is as it was; each phase starts a fresh
    optimizer. A job resumed in the middle of a phase trains that phase's stages with the
    optimizer it restored; resumed at a phase's start, with a fresh one."""
    caplog.set_level(logging.INFO, logger="training")
    model, backbone = build.build_classifier("mobilenetv3small", 4, 32)
    stages = build.backbone_stages(backbone)
    assert len(stages) == 5
    plan = phases.plan(1, 6, unfreeze_every=2, stage_count=len(stages))
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    loop = Loop(tf.distribute.get_strategy(), model, optimizer,
                losses.make_loss(reduction=None), StepConfig(global_batch=8))
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    labels = np.eye(4, dtype="float32")[rng.integers(0, 4, 8)]
    batches = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())

    def snapshot():
        return [[v.numpy().copy() for layer in stage for v in layer.weights] for stage in stages]

    def changed(before):
        return [any(not np.array_equal(a, b) for a, b in zip(old, new))
                for old, new in zip(before, snapshot())]

    head = model.get_layer("probabilities").kernel
    for epoch, moving, steps_before in [(0, 0, 0), (1, 1, 0), (2, 1, 2), (3, 2, 0)]:
        if phases.begin_epoch(epoch, 0, plan, stages, backbone, model, optimizer, 1e-3):
            loop.retrace()
        assert int(optimizer.iterations.numpy()) == steps_before, epoch
        before, head_before = snapshot(), head.numpy().copy()
        for _ in range(2):
            loop.train_step(batches)
        assert changed(before) == [False] * (5 - moving) + [True] * moving, epoch
        assert not np.array_equal(head.numpy(), head_before)
    assert "stage 5 of 5 unfreezes" in caplog.text and "stage 4 of 5 unfreezes" in caplog.text

    backbone.trainable = True  # a fresh process: every layer trainable, the optimizer restored
    optimizer.iterations.assign(7)
    assert phases.begin_epoch(2, 2, plan, stages, backbone, model, optimizer, 1e-3)
    assert int(optimizer.iterations.numpy()) == 7  # mid-phase: the restored optimizer goes on
    assert [layer.trainable for stage in stages for layer in stage[-1:]] == [False] * 4 + [True]
    backbone.trainable = True
    assert phases.begin_epoch(3, 3, plan, stages, backbone, model, optimizer, 1e-3)
    assert int(optimizer.iterations.numpy()) == 0
    assert [layer.trainable for stage in stages for layer in stage[-1:]] == [False] * 3 + [True] * 2


def test_top5_breaks_ties_as_metrics_json_does():
    """Six classes scored alike: the stable ranking puts classes 0-4 in the top 5, so an
    image of class 5 is a miss in the logged top-5 as in metrics.json (in_top_k counted it)."""
    probabilities = np.full((2, 6), 1 / 6, "float32")
    truth = np.array([5, 0])
    sums = _sums(tf.constant(probabilities), tf.one_hot(truth, 6), tf.zeros(2))
    metrics = classification_metrics(truth, probabilities, [str(i) for i in range(6)])
    assert float(sums[2]) / 2 == metrics["top5_accuracy"] == 0.5


def test_early_stopping_stops_a_cosine_head_and_best_weights_hold_no_optimizer(tmp_path):
    """--head=arcface trains a model of its own (the cosines); EarlyStopping watches the
    classifier. At learning rate 0 with the backbone frozen nothing changes, so patience 1
    stops after epoch 2 of 5. The best weights file holds the model's weights, no optimizer
    state, and loads into a new classifier."""
    weights_file = tmp_path / "mnv3.weights.h5"
    backbones.build("mobilenetv3small", 32).save_weights(str(weights_file))
    out = tmp_path / "out"
    proc = run_train(f"--data_url={digits_folder(tmp_path / 'data', count=45, broken=False)}",
                     f"--train_url={out}", f"--local_data_root={tmp_path / 'cache'}", *SMALL,
                     f"--pretrained_weights={weights_file}", "--head=arcface",
                     "--learning_rate=0", "--max_epochs=5", "--freeze_epochs=5",
                     "--early_stop_patience=1", "--export_model=false")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "early stopping after epoch 2" in proc.stdout
    rows = list(csv.DictReader(open(out / "training_log.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1"]

    best = sorted((out / "weights").glob("*.weights.h5"))[0]
    with h5py.File(best) as f:
        assert "optimizer" not in f and "layers" in f
    model, _ = build.build_classifier("mobilenetv3small", 3, 32, head="arcface")
    model.load_weights(str(best))


def test_weight_decay_reaches_every_optimizer_but_not_biases_and_batchnorm():
    """One update with zero gradients: only the decay moves the weights. Kernels shrink by
    lr x wd (the optimizer's default, or the flag), biases and BatchNorm's gamma and beta do
    not; Adam's default stays none, as before, and Ranger's is none too."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4),
                              keras.layers.BatchNormalization()])
    start = [np.full(v.shape, 0.5, "float32") for v in model.trainable_variables]
    for name, flag, decay in (("adamw", None, 0.05), ("sgd", None, 5e-4), ("adam", None, 0.0),
                              ("adam", 0.01, 0.01), ("ranger", None, 0.0), ("ranger", 0.01, 0.01)):
        for variable, value in zip(model.trainable_variables, start):
            variable.assign(value)
        optimizer = optim.make_optimizer(name, 0.1, flag)
        optimizer.build(model.trainable_variables)
        optimizer.apply_gradients([(tf.zeros(v.shape), v) for v in model.trainable_variables])
        after = {v.name: v.numpy() for v in model.trainable_variables}
        np.testing.assert_allclose(after["kernel"], 0.5 * (1 - 0.1 * decay), rtol=1e-6)
        for kept in ("bias", "gamma", "beta"):
            np.testing.assert_array_equal(after[kept], 0.5)


def test_several_steps_per_call_train_as_single_steps_do():
    """--steps_per_execution=3 (three steps in one compiled call, the sums read once): the
    same weights, optimizer step count and summed loss / hits / images as three single steps
    over the same batches, and run_steps reads back every image's sums across calls of
    unequal length (7 steps = 3 + 3 + 1)."""
    from training.loop import run_steps

    rng = np.random.default_rng(1)
    batches = [(rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32"),
                np.eye(4, dtype="float32")[rng.integers(0, 4, 8)]) for _ in range(7)]

    def trained(per_call):
        keras.utils.set_random_seed(3)
        model, _ = build.build_classifier("mobilenetv3small", 4, 32, dropout=0.0)
        optimizer = keras.optimizers.Adam(1e-3)
        optimizer.build(model.trainable_variables)
        loop = Loop(tf.distribute.get_strategy(), model, optimizer,
                    losses.make_loss(reduction=None),
                    StepConfig(global_batch=8, steps_per_execution=per_call))
        data = iter(tf.data.Dataset.from_tensor_slices(
            (np.stack([b[0] for b in batches]), np.stack([b[1] for b in batches]))))
        if per_call == 1:
            totals = np.sum([[float(v) for v in loop.train_step(data)[:4]]
                             for _ in batches], axis=0)
            reads = None
        else:
            reads = []
            totals = run_steps(loop, data, len(batches), lambda n, t: reads.append(n))
        return model, optimizer, totals, reads

    single, single_opt, single_totals, _ = trained(1)
    several, several_opt, several_totals, reads = trained(3)
    assert int(several_opt.iterations.numpy()) == int(single_opt.iterations.numpy()) == 7
    assert reads == [7] and several_totals[3] == single_totals[3] == 56  # every image once
    np.testing.assert_allclose(several_totals, single_totals, rtol=1e-4)
    for a, b in zip(several.weights, single.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)


def test_validation_gap_is_metrics_json_gap_over_the_whole_set():
    """--monitor=val_gap: the loop gathers every validation image's top confidence and
    whether it is right, batch by batch, and its GAP is evaluation's over the whole set
    (not a mean of per-batch GAPs, which differs here)."""
    from evaluation.metrics import global_average_precision

    rng = np.random.default_rng(1)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    x = rng.normal(size=(10, 4)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 10)]
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    loop = Loop(tf.distribute.get_strategy(), model, optimizer,
                losses.make_loss(reduction=None), StepConfig(global_batch=4))
    val = loop.evaluate(tf.data.Dataset.from_tensor_slices((x, y)).batch(4))
    probabilities = model.predict(x, verbose=0)
    expected = global_average_precision(y.argmax(1), probabilities)
    assert val["gap"] == pytest.approx(expected, abs=1e-6)
    per_batch = np.mean([global_average_precision(y[i:i + 4].argmax(1), probabilities[i:i + 4])
                         for i in range(0, 10, 4)])
    assert abs(per_batch - expected) > 1e-3
