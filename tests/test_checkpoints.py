"""Resume state: what a restarted job finds, in what order it is uploaded, and the clear error
when train_url holds another model's checkpoint."""
import os

import keras
import numpy as np
import pytest

import obs_utils
from training import checkpoints, optim


def tiny(units, ema=0.0, optimizer="adam"):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(units)])
    lr_mult = optimizer == "adamw_lr_mult"  # --optimizer=adamw --backbone_lr_mult=0.1 (kernel)
    if lr_mult:
        optimizer = "adamw"
    if optimizer == "adam":
        optimizer = keras.optimizers.Adam(use_ema=ema > 0, ema_momentum=ema or 0.99)
    else:
        optimizer = optim.make_optimizer(optimizer, 1e-3, 0.1, ema=ema)
    optimizer.build(model.trainable_variables)
    if lr_mult:
        optim.scale_learning_rates(optimizer, model.trainable_variables[:1], 0.1)
    return model, optimizer


def _steps(model, optimizer, gradients):
    for step in gradients:
        optimizer.apply_gradients(zip(step, model.trainable_variables))


@pytest.mark.parametrize("name", ["adam", "ranger", "adamw_lr_mult"])
def test_resume_reads_train_url_and_uploads_the_index_last(bucket, tmp_path, monkeypatch, name):
    """...and a resumed optimizer goes on exactly as the saved one: Ranger, saved in the middle
    of its Lookahead cycle (step 3 of 6), needs its slow weights back at the sync;
    --backbone_lr_mult, set again from the flags as train.py does, goes on at its rate."""
    train_url = f"obs://{bucket}/job"
    model, optimizer = tiny(2, ema=0.9, optimizer=name)
    assert any("average" in v.path for v in optimizer.variables)  # --ema's averages are too
    rng = np.random.default_rng(0)
    gradients = [[rng.normal(size=v.shape).astype("float32") for v in model.trainable_variables]
                 for _ in range(7)]
    # Moments, averages (Ranger's slow weights), step count and rate a restore must bring back.
    _steps(model, optimizer, gradients[:3])
    optimizer.learning_rate.assign(0.0123)
    state = checkpoints.ResumeState(model, optimizer, str(tmp_path / "chief"), train_url, True)
    assert state.restore() == 0
    sent = []
    real_copy = obs_utils.copy
    monkeypatch.setattr(obs_utils, "copy", lambda s, d, *a: (sent.append(d), real_copy(s, d))[1])
    for epoch in (1, 2, 3):
        state.save(epoch)
    assert sent[-1].endswith("/checkpoints/checkpoint")  # each save ends with the index
    names = obs_utils.listdir(f"{train_url}/checkpoints")
    assert "checkpoint" in names and not any(n.startswith("ckpt-1.") for n in names)

    # Another machine (an empty cache) and another worker both resume at epoch 3.
    resumed_runs = []
    for folder, chief in (("fresh", True), ("worker-1", False)):
        other, other_opt = tiny(2, ema=0.9, optimizer=name)
        resumed = checkpoints.ResumeState(other, other_opt, str(tmp_path / folder), train_url,
                                          chief)
        assert resumed.restore() == 3
        for mine, theirs in zip(model.weights + optimizer.variables,
                                other.weights + other_opt.variables):
            np.testing.assert_array_equal(theirs.numpy(), mine.numpy(), err_msg=mine.path)
        assert int(other_opt.iterations.numpy()) == 3
        np.testing.assert_allclose(float(other_opt.learning_rate.numpy()), 0.0123)
        resumed_runs.append((other, other_opt))
    assert not os.path.exists(tmp_path / "worker-1" / "checkpoints" / "ckpt-4.index")
    for run in [(model, optimizer)] + resumed_runs[:1]:  # 4 more steps, past Ranger's sync
        _steps(*run, gradients[3:])
    other, other_opt = resumed_runs[0]
    for mine, theirs in zip(model.weights + optimizer.variables,
                            other.weights + other_opt.variables):
        np.testing.assert_array_equal(theirs.numpy(), mine.numpy(), err_msg=mine.path)

    wrong, wrong_opt = tiny(5, optimizer=name)
    with pytest.raises(ValueError, match="made by another model"):
        checkpoints.ResumeState(wrong, wrong_opt, str(tmp_path / "x"), train_url, True).restore()


def test_patience_counters_survive_a_restart(bucket, tmp_path):
    """ReduceLROnPlateau and EarlyStopping resume with the wait and best they had, so a
    restarted job lowers the rate and stops when the uninterrupted one would."""
    train_url = f"obs://{bucket}/job"
    model, optimizer = tiny(2)
    model.optimizer = optimizer  # what ReduceLROnPlateau reads, as training/job.py sets it
    state = checkpoints.ResumeState(model, optimizer, str(tmp_path / "a"), train_url, True)
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_accuracy", mode="max", patience=5)
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=9)
    for callback in (plateau, stop):
        callback.set_model(model)
        callback.on_train_begin()
    for epoch, accuracy in enumerate([0.5, 0.8, 0.7, 0.6]):
        for callback in (plateau, stop):
            callback.on_epoch_end(epoch, {"val_accuracy": accuracy})
        state.save(epoch + 1, [plateau, stop])
    assert (plateau.wait, stop.wait, stop.best) == (2, 2, 0.8)
    names = obs_utils.listdir(f"{train_url}/checkpoints")
    assert sorted(n for n in names if n.startswith("callbacks-")) == ["callbacks-3.json",
                                                                       "callbacks-4.json"]

    other, other_opt = tiny(2)
    resumed = checkpoints.ResumeState(other, other_opt, str(tmp_path / "b"), train_url, True)
    done = resumed.restore()
    again = [keras.callbacks.ReduceLROnPlateau(monitor="val_accuracy", mode="max", patience=5),
             keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=9)]
    for callback in again:
        callback.set_model(other)
        callback.on_train_begin()  # resets the counters, as a new run does
    resumed.restore_callbacks(again, done)
    assert (again[0].wait, again[0].best, again[1].wait, again[1].best) == (2, 0.8, 2, 0.8)


def test_a_finished_or_early_stopped_job_is_known_from_train_url_alone(tmp_path):
    train_url = str(tmp_path / "job")
    model, optimizer = tiny(2)
    state = checkpoints.ResumeState(model, optimizer, train_url, train_url, True)
    state.save(1)
    assert not checkpoints.job_finished(train_url, max_epochs=5)
    state.save(2, stopped_early=True)  # EarlyStopping ended it after epoch 2
    assert checkpoints.job_finished(train_url, max_epochs=5)
    assert not checkpoints.job_finished(str(tmp_path / "other"), max_epochs=5)


def test_weights_of_an_earlier_run_never_compete(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "epoch_009-val_acc_0.9900.weights.h5").write_bytes(b"an earlier run's")
    model, _ = tiny(2)
    best = checkpoints.BestWeights(str(folder), None, 2, True, earlier_run=True)
    best.set_model(model)
    assert best.best() is None
    best.on_epoch_end(0, {"val_accuracy": 0.5})
    assert best.best().endswith("epoch_001-val_acc_0.5000.weights.h5")
    assert (folder / "epoch_009-val_acc_0.9900.weights.h5").exists()  # left where it was


def test_a_checkpoint_file_damaged_on_obs_is_sent_again(bucket, tmp_path):
    """A ckpt file of the same name but other bytes on OBS (an earlier attempt at that epoch,
    or a damaged upload) is replaced at the next save, not trusted for its name; a resume
    on a fresh machine then gets the real checkpoint."""
    train_url = f"obs://{bucket}/job"
    model, optimizer = tiny(2)
    state = checkpoints.ResumeState(model, optimizer, str(tmp_path / "chief"), train_url, True)
    state.save(1)
    data = next(n for n in obs_utils.listdir(f"{train_url}/checkpoints")
                if n.startswith("ckpt-1.data"))
    good = obs_utils.read_bytes(f"{train_url}/checkpoints/{data}")
    obs_utils.write_bytes(f"{train_url}/checkpoints/{data}", good[: len(good) // 2])
    state.save(2)
    assert obs_utils.read_bytes(f"{train_url}/checkpoints/{data}") == good

    other, other_opt = tiny(2)
    resumed = checkpoints.ResumeState(other, other_opt, str(tmp_path / "fresh"), train_url, True)
    assert resumed.restore() == 2
    np.testing.assert_array_equal(other.get_weights()[0], model.get_weights()[0])


def test_a_step_checkpoint_resumes_only_its_epoch_and_recounts_on_another_batch(bucket,
                                                                                 tmp_path):
    """--save_steps through OBS: the step checkpoint of epoch 2 restores the model and gives
    its position to a job resuming epoch 2; for one resuming epoch 3 (its epoch checkpoint is
    newer) it is ignored. On another global batch the steps are recounted from the images done
    (3 steps of 8 = 1 step of 16) and the stream starts afresh."""
    train_url = f"obs://{bucket}/steps"
    model, optimizer = tiny(2)
    state = checkpoints.StepState(model, optimizer, str(tmp_path / "a"), train_url, True)
    state.save(checkpoints.Position(1, 2, [4.0, 3.0, 2.0, 16.0], 0, 5, 8))
    state.save(checkpoints.Position(1, 3, [6.0, 5.0, 4.0, 24.0], 0, 6, 8))
    names = obs_utils.listdir(f"{train_url}/{checkpoints.STEPS_FOLDER}")
    assert [n for n in names if n.startswith("position-")] == ["position-1000003.json"]

    def resumed(epochs_done, global_batch):
        other, other_opt = tiny(2)
        found = checkpoints.StepState(other, other_opt, str(tmp_path / f"r{global_batch}"),
                                      train_url, True).restore(epochs_done, global_batch, 6)
        return found, other
    position, other = resumed(1, 8)
    assert (position.steps_done, position.stream_epoch, position.stream_steps) == (3, 0, 6)
    assert position.totals == [6.0, 5.0, 4.0, 24.0]
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert resumed(2, 8)[0] is None
    position, _ = resumed(1, 16)
    assert (position.steps_done, position.stream_epoch, position.stream_steps,
            position.global_batch) == (1, 1, 0, 16)
