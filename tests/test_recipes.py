"""The contest recipes as flags, each against its maths: focal loss against its formula,
SGDR's warm-up and restarts (resumed under another batch: tests/test_training_paths.py),
gradient centralization's projection, --monitor's choice of the best weights and its
direction, --ema's averages in validation and the best weights, Ranger against a numpy
Ranger; then all of them in one train.py job. (GC, EMA and Ranger on two replicas and under
loss scaling: tests/test_distributed.py; Ranger resumed: tests/test_checkpoints.py.)"""
import csv
import os

import keras
import numpy as np
import pytest

import config
import flags
from models import losses, run_weights
from tests.test_train_job import SMALL, digits_folder, run_train
from training import checkpoints, optim
from training.loop import centralize


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_focal_loss_is_its_formula_with_alpha_one(smoothing):
    """-(sum over classes of t (1 - p)^gamma log p), t the smoothed target; gamma 0 is the
    plain crossentropy. Keras' own default (alpha 0.25) would be a quarter of this."""
    labels = np.eye(4, dtype="float32")[[0, 3, 1]]
    probabilities = np.array([[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.2, 0.3],
                              [0.05, 0.9, 0.03, 0.02]], "float32")
    target = labels * (1 - smoothing) + smoothing / 4
    for gamma in (0.0, 2.0):
        focal = losses.make_loss("focal", smoothing, reduction=None, focal_gamma=gamma)
        expected = -(target * (1 - probabilities) ** gamma * np.log(probabilities)).sum(1)
        np.testing.assert_allclose(focal(labels, probabilities), expected, rtol=1e-5)
    plain = losses.make_loss("categorical_crossentropy", smoothing, reduction=None)
    np.testing.assert_allclose(losses.make_loss("focal", smoothing, reduction=None,
                                                focal_gamma=0.0)(labels, probabilities),
                               plain(labels, probabilities), rtol=1e-5)
    with pytest.raises(Exception, match="for --head=softmax"):
        losses.make_loss("focal", head="arcface")


def test_sgdr_warms_up_from_zero_then_restarts_in_growing_cycles():
    """10 steps per epoch, 1 warm-up epoch, cycles of 2 epochs then 4 (restart_mult 2): 0 at
    the start, the peak after the warm-up and at each restart, near 0 just before one."""
    peak = 0.1
    schedule = optim.make_schedule("sgdr", peak, 10, 12, warmup_epochs=1, restart_epochs=2,
                                   restart_mult=2)

    def rate(step):
        return float(schedule(step))

    assert rate(0) == 0.0 and rate(5) == pytest.approx(peak / 2)
    for restart in (10, 30, 70):  # warm-up end; + 2 epochs; + 4 more
        assert rate(restart) == pytest.approx(peak, rel=1e-5)
        assert rate(restart - 1) < peak * 0.05 or restart == 10
    assert rate(20) == pytest.approx(peak / 2, rel=1e-4)  # half-way through the first cycle
    assert rate(50) == pytest.approx(peak / 2, rel=1e-4)  # and through the second, twice long
    with pytest.raises(Exception, match="--restart_epochs"):
        optim.make_schedule("sgdr", peak, 10, 12, restart_epochs=0)


def test_gradient_centralization_projects_kernels_and_leaves_vectors():
    rng = np.random.default_rng(0)
    conv, dense, bias = (rng.normal(size=s).astype("float32") for s in
                         [(3, 3, 4, 8), (5, 6), (6,)])
    for kernel in (conv, dense):
        centred = centralize(keras.ops.convert_to_tensor(kernel)).numpy()
        axes = tuple(range(kernel.ndim - 1))
        np.testing.assert_allclose(centred.mean(axis=axes), 0, atol=1e-6)
        np.testing.assert_allclose(centred, kernel - kernel.mean(axis=axes, keepdims=True),
                                   atol=1e-6)
        again = centralize(keras.ops.convert_to_tensor(centred)).numpy()
        np.testing.assert_allclose(again, centred, atol=1e-6)  # a projection
    np.testing.assert_array_equal(centralize(keras.ops.convert_to_tensor(bias)).numpy(), bias)


def test_monitor_val_loss_keeps_the_lowest_losses_and_stops_on_them(tmp_path):
    """--monitor=val_loss: the best files are the lowest losses (named so, ranked so by
    evaluation too), and early stopping and plateau watch the loss, going down."""
    from tests.test_checkpoints import tiny
    from training import job

    model, _ = tiny(2)
    best = checkpoints.BestWeights(str(tmp_path), None, 2, True, monitor="val_loss")
    best.set_model(model)
    for epoch, loss in enumerate([0.9, 12.5, 0.4, 0.7, 0.5]):
        best.on_epoch_end(epoch, {"val_loss": loss, "val_accuracy": 0.5})
    assert sorted(os.listdir(tmp_path)) == ["epoch_003-val_loss_0.4000.weights.h5",
                                            "epoch_005-val_loss_0.5000.weights.h5"]
    assert os.path.basename(best.best()) == "epoch_003-val_loss_0.4000.weights.h5"
    assert run_weights.ranked(str(tmp_path))[0].startswith("epoch_003")

    parsed, _ = flags.parse_args(["--data_url=d", "--monitor=val_loss",
                                  "--lr_schedule=plateau", "--early_stop_patience=2"])
    fit = config.from_flags(parsed, {}).fit
    watching = {type(c).__name__: c for c in job._callbacks(fit, best, job.RemoteSync(
        str(tmp_path), str(tmp_path), True), 0)}
    for name in ("EarlyStopping", "ReduceLROnPlateau"):
        assert watching[name].monitor == "val_loss"
        assert watching[name].mode == "min"  # lower is better


def rows_of(out):
    with open(out / "training_log.csv") as f:
        return list(csv.DictReader(f))


def test_the_recipe_flags_train_together_in_one_job(tmp_path, clean_storage_env):
    """Focal loss, SGDR, gradient centralization, --ema, --backbone_lr_mult, RandAugment, the
    P x K sampler and --monitor=val_gap together through train.py: the weights files are named by the
    monitor, and the last epoch runs at the rate SGDR gives it. Their resume is checked where it could fail: SGDR
    resumed with another batch (tests/test_training_paths.py), EMA's averages in the checkpoint
    (tests/test_checkpoints.py), EMA and GC on two replicas (tests/test_distributed.py);
    a train.py resume costs another 25 s."""
    data = digits_folder(tmp_path / "data", count=60, broken=False)
    out = tmp_path / "out"
    recipe = ["--loss=focal", "--focal_gamma=2", "--lr_schedule=sgdr", "--restart_epochs=1",
              "--restart_mult=4", "--warmup_epochs=0", "--grad_centralization=true",
              "--monitor=val_gap", "--ema=0.9", "--freeze_epochs=0",
              "--backbone_lr_mult=0.5", "--randaugment_ops=1", "--export_model=false",
              "--early_stop_patience=0", "--sampler=pk", "--pk_images=2"]
    common = [f"--data_url={data}", f"--train_url={out}",
              f"--local_data_root={tmp_path / 'cache'}", *SMALL, *recipe]
    proc = run_train(*common, "--max_epochs=3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "epoch 3/3 " in proc.stdout
    assert "use the weights' moving average (--ema=0.9" in proc.stdout
    assert "the backbone trains at 0.5 x the learning rate" in proc.stdout
    assert "sampler=pk: each batch 4 classes x 2 images" in proc.stdout
    names = os.listdir(out / "weights")
    assert names and all("-val_gap_" in n for n in names), names
    assert "val_gap" in rows_of(out)[0]
    rows = rows_of(out)
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    # 48 train images, batch 8: 6 steps an epoch; cycles of 1 epoch, then 4: the rate after
    # epoch 3's last step (step 18) is half-way down the second cycle (steps 6-29).
    schedule = optim.make_schedule("sgdr", 1e-3, 6, 3, restart_epochs=1, restart_mult=4)
    assert float(rows[2]["learning_rate"]) == pytest.approx(float(schedule(18)), rel=1e-4)
    assert float(rows[2]["learning_rate"]) == pytest.approx(5e-4, rel=1e-3)


def test_ema_is_what_validation_and_the_best_weights_see_and_training_goes_on_raw(tmp_path):
    """--ema through run_epochs: the validation numbers and the best-weights file are the
    averages', with BatchNorm statistics recomputed for them (the mean of the batches'
    statistics); after the epoch the model trains on from its own weights and statistics
    (not the averages), which is also what the checkpoint saves."""
    import tensorflow as tf

    from training.loop import Loop, StepConfig, run_epochs

    def classifier():
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(8),
                                 keras.layers.BatchNormalization(momentum=0.5),
                                 keras.layers.Dense(3, activation="softmax")])

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 32)]
    model = classifier()
    optimizer = optim.make_optimizer("sgd", 0.5, 0.0, 0.0, ema=0.5)
    optimizer.build(model.trainable_variables)
    loop = Loop(tf.distribute.get_strategy(), model, optimizer,
                losses.make_loss(reduction=None), StepConfig(global_batch=8))
    train = iter(tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat())
    val = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    best = checkpoints.BestWeights(str(tmp_path), None, 1, True)
    averaged = optim.AveragedWeights(optimizer, model, lambda: [x[:16], x[16:]])
    seen = {}

    def after_epoch(epoch, logs):  # where train() saves the checkpoint
        seen["at_checkpoint"] = [w.copy() for w in model.get_weights()]
        seen["averages"] = optimizer._model_variables_moving_average[0].numpy()

    history = run_epochs(loop, train, val, 4, 0, 1, keras.callbacks.CallbackList(
        [best], model=model), after_epoch, averaged=averaged)
    trained = model.get_weights()
    assert not np.allclose(trained[0], seen["averages"], atol=1e-4)
    for at_checkpoint, now in zip(seen["at_checkpoint"], trained):  # weights and statistics
        np.testing.assert_array_equal(at_checkpoint, now)
    saved = classifier()
    saved.load_weights(best.best())
    kernel, bias, _, _, mean, variance = saved.get_weights()[:6]
    np.testing.assert_allclose(kernel, seen["averages"], atol=1e-6)
    features = [half @ kernel + bias for half in (x[:16], x[16:])]
    np.testing.assert_allclose(mean, np.mean([f.mean(0) for f in features], 0), atol=1e-5)
    np.testing.assert_allclose(variance, np.mean([f.var(0) for f in features], 0), rtol=1e-4)
    assert not np.allclose(mean, trained[4], atol=1e-3)  # not the trained statistics
    probabilities = saved.predict(x, verbose=0)  # validation scored the averages
    accuracy = float(np.mean(probabilities.argmax(1) == y.argmax(1)))
    assert history[0]["val_accuracy"] == pytest.approx(accuracy)


def ranger_reference(weights, gradients, lr, wd, beta_1=0.95, beta_2=0.999, eps=1e-5, k=6,
                     alpha=0.5, threshold=5.0, ema=0.5):
    """Ranger in float64 from the papers: RAdam's Algorithm 2 (Liu et al. 2019; epsilon
    added to sqrt(v_t) as in its code), decoupled weight decay first, Lookahead's Algorithm 1
    (Zhang et al. 2019) around it, Keras' EMA of the weights after each step. -> weights,
    averages and (rectified, synced) after each step."""
    w = np.asarray(weights, np.float64)
    slow, m, v, average, trace = w.copy(), 0.0, 0.0, None, []
    rho_inf = 2 / (1 - beta_2) - 1
    for t, g in enumerate(gradients, start=1):
        m = beta_1 * m + (1 - beta_1) * g
        v = beta_2 * v + (1 - beta_2) * g * g
        m_hat = m / (1 - beta_1 ** t)
        rho = rho_inf - 2 * t * beta_2 ** t / (1 - beta_2 ** t)
        w = w - lr * wd * w
        if rho > threshold:
            r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            w = w - lr * r * m_hat * np.sqrt(1 - beta_2 ** t) / (np.sqrt(v) + eps)
        else:
            w = w - lr * m_hat
        if t % k == 0:
            slow = slow + alpha * (w - slow)
            w = slow.copy()
        average = w.copy() if average is None else ema * average + (1 - ema) * w
        trace.append((w.copy(), average.copy(), rho > threshold, t % k == 0))
    return trace


def test_ranger_is_radam_inside_lookahead_and_reset_state_starts_it_again():
    """--optimizer=ranger over 12 steps against ranger_reference: momentum steps while rho_t
    <= 5 (steps 1-5), rectified Adam after, Lookahead syncs at steps 6 and 12, the kernel
    decayed and the bias not, --ema's average of the synced weights. After reset_state the
    next 7 steps are a new Ranger's from the weights it had (the slow weights taken again)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    start = {"kernel": rng.normal(size=(2, 3)), "bias": rng.normal(size=3)}
    grads = {n: rng.normal(size=(19, *w.shape)) for n, w in start.items()}
    variables = {n: keras.Variable(w.astype("float32"), name=n) for n, w in start.items()}
    optimizer = optim.make_optimizer("ranger", 0.1, weight_decay=0.2, ema=0.5)
    optimizer.build(list(variables.values()))
    assert {v.path.split("/")[-1] for v in optimizer.variables} >= {"kernel_slow", "bias_slow"}
    step = tf.function(lambda g: optimizer.apply_gradients(zip(g, variables.values())))
    for first, count in ((0, 12), (12, 7)):
        if first:
            optim.reset_state(optimizer)
        trace = {n: ranger_reference(variables[n].numpy(), grads[n][first:first + count], 0.1,
                                     0.2 if n == "kernel" else 0.0) for n in start}
        switches = [(rectified, synced) for _, _, rectified, synced in trace["kernel"]]
        for t in range(count):
            step([tf.constant(grads[n][first + t], tf.float32) for n in variables])
            for n, variable in variables.items():
                expected, average, _, _ = trace[n][t]
                np.testing.assert_allclose(variable.numpy(), expected, rtol=2e-5, atol=2e-6,
                                           err_msg=f"{n} after step {first + t + 1}")
                moving = optimizer._model_variables_moving_average[list(variables).index(n)]
                np.testing.assert_allclose(moving.numpy(), average, rtol=2e-5, atol=2e-6)
        assert [r for r, _ in switches] == [False] * 5 + [True] * (count - 5)
        assert [t + 1 for t, (_, s) in enumerate(switches) if s] == [6, 12][:count // 6]
    assert int(optimizer.iterations.numpy()) == 7


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_backbone_lr_mult_is_the_same_optimizer_at_the_lower_rate(name):
    """--backbone_lr_mult=0.1 on one of two kernels: after 8 steps (past Ranger's
    rectification and its first Lookahead sync, SGD's momentum built up) that kernel is where
    the same optimizer at a tenth of the rate takes it, decoupled weight decay (0.2) included,
    and the other where the optimizer at the full rate does."""
    import tensorflow as tf

    rng = np.random.default_rng(1)
    start = {"backbone_kernel": rng.normal(size=(3, 2)), "head_kernel": rng.normal(size=(2, 4))}
    grads = {n: rng.normal(size=(8, *w.shape)).astype("float32") for n, w in start.items()}

    def run(names, rate, multiplier=1.0):
        variables = [keras.Variable(start[n].astype("float32"), name=n) for n in names]
        optimizer = optim.make_optimizer(name, rate, weight_decay=0.2)
        optimizer.build(variables)
        optim.scale_learning_rates(optimizer, variables[:1] if len(names) > 1 else [],
                                   multiplier)
        step = tf.function(lambda g: optimizer.apply_gradients(zip(g, variables)))
        for t in range(8):
            step([tf.constant(grads[n][t]) for n in names])
        return {n: v.numpy() for n, v in zip(names, variables)}

    together = run(["backbone_kernel", "head_kernel"], 0.05, multiplier=0.1)
    alone_slow = run(["backbone_kernel"], 0.005)["backbone_kernel"]
    alone_full = run(["head_kernel"], 0.05)["head_kernel"]
    np.testing.assert_allclose(together["backbone_kernel"], alone_slow, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(together["head_kernel"], alone_full, rtol=1e-5, atol=1e-6)
    moved = np.abs(together["backbone_kernel"] - start["backbone_kernel"]).max()
    full = np.abs(run(["backbone_kernel"], 0.05)["backbone_kernel"]
                  - start["backbone_kernel"]).max()
    assert 0 < moved < 0.3 * full  # it really moved, and far less than at the full rate
    with pytest.raises(Exception, match="--backbone_lr_mult=0"):
        optim.scale_learning_rates(optim.make_optimizer(name, 0.1), [], 0.0)


def test_staged_unfreeze_through_train_py_and_its_resume(tmp_path):
    """--pretrained_weights (a MobileNetV3Small backbone saved by Keras 3) with
    --freeze_epochs=1 --unfreeze_every=1: the head alone, then stage 5 of 5 with a fresh
    optimizer; the job resumed for one more epoch goes on with stage 4 (its phase begins at
    the resumed epoch: a fresh optimizer again), and the log of epochs runs on from where it
    stopped."""
    from models import backbones

    weights_file = tmp_path / "mnv3.weights.h5"
    backbones.build("mobilenetv3small", 32).save_weights(str(weights_file))
    data = digits_folder(tmp_path / "data", count=48, broken=False)
    out = tmp_path / "out"
    common = [f"--data_url={data}", f"--train_url={out}", f"--local_data_root={tmp_path / 'c'}",
              *SMALL, f"--pretrained_weights={weights_file}", "--freeze_epochs=1",
              "--unfreeze_every=1", "--export_model=false", "--early_stop_patience=0"]
    proc = run_train(*common, "--max_epochs=2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = proc.stdout
    assert log.index("phase: head only") < log.index("stage 5 of 5 unfreezes"), log
    assert "the head and the backbone's top 1 of 5 stages" in log

    proc = run_train(*common, "--max_epochs=3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "stage 4 of 5 unfreezes: the optimizer starts afresh" in proc.stdout, proc.stdout
    assert "top 2 of 5 stages" in proc.stdout and "phase: head only" not in proc.stdout
    rows = list(csv.DictReader(open(out / "training_log.csv")))
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
