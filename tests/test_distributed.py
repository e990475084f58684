"""TF_CONFIG from the ModelArts environment; the train step under MirroredStrategy over two
logical CPU devices (clipping after the all-reduce, overflow on one replica); and two worker
processes on 127.0.0.1 that must end with identical weights."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.servers import ROOT, free_port
from tests.test_train_job import SMALL, digits_folder
from training import distribute


def test_tf_config_from_current_modelarts_variables():
    env = {"VC_WORKER_HOSTS": "job-w-0.svc,job-w-1.svc,job-w-2.svc", "VC_TASK_INDEX": "2",
           "MA_NUM_HOSTS": "3"}
    config = distribute.cluster_from_env(env, port=7777)
    assert config == {"cluster": {"worker": ["job-w-0.svc:7777", "job-w-1.svc:7777",
                                             "job-w-2.svc:7777"]},
                      "task": {"type": "worker", "index": 2}}
    assert not distribute.is_chief(config)
    assert distribute.is_chief(distribute.cluster_from_env({**env, "VC_TASK_INDEX": "0"}))


def test_tf_config_from_old_dls_variables_and_precedence():
    env = {"DLS_TASK_NUMBER": "2", "DLS_TASK_INDEX": "1",
           "BATCH_CUSTOM0_HOSTS": "10.0.0.5:6000", "BATCH_CUSTOM1_HOSTS": "10.0.0.6:6000"}
    assert distribute.cluster_from_env(env)["cluster"]["worker"] == ["10.0.0.5:6000",
                                                                     "10.0.0.6:6000"]
    given = {"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 0}}
    assert distribute.cluster_from_env({**env, "TF_CONFIG": json.dumps(given)}) == given
    assert distribute.cluster_from_env({"VC_WORKER_HOSTS": "only-one"}) is None
    assert distribute.cluster_from_env({}) is None
    with pytest.raises(ValueError, match="MA_NUM_HOSTS=3"):
        distribute.cluster_from_env({"VC_WORKER_HOSTS": "a,b", "MA_NUM_HOSTS": "3"})
    with pytest.raises(ValueError, match="BATCH_CUSTOM1_HOSTS"):
        distribute.cluster_from_env({"DLS_TASK_NUMBER": "2", "BATCH_CUSTOM0_HOSTS": "a:1"})


@pytest.fixture(scope="module")
def two_replica_facts():
    proc = subprocess.run([sys.executable, os.path.join("tests", "two_replicas.py")], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_two_replicas_take_the_same_step_as_one_device(two_replica_facts):
    assert two_replica_facts["replicas"] == 2
    for clip in ("clip0.0", "clip1.0"):
        np.testing.assert_allclose(two_replica_facts[clip]["two"], two_replica_facts[clip]["one"],
                                   atol=1e-6)
    # losses and counts are sums over both replicas, not divided by the replica count
    assert two_replica_facts["clip0.0"]["sums"][3] == 4.0


def test_a_step_all_reduces_the_gradients_once(two_replica_facts):
    """The loop sums the gradients across replicas once (it must, to clip them whole); Keras'
    apply_gradients summing them again doubled the step's traffic. The updates stay equal to
    one device's (test above)."""
    assert two_replica_facts["all_reduces_per_replica"] == 1


def test_loss_scaling_with_clipping_takes_the_float32_step(two_replica_facts):
    for name in ("two", "one"):
        np.testing.assert_allclose(two_replica_facts["mixed_clip"][name],
                                   two_replica_facts["clip1.0"]["two"], atol=1e-6)


def test_clipping_applies_to_the_global_gradient(two_replica_facts):
    """Each replica's share has norm 1 and the global gradient norm 2: Keras' clipnorm=1 would
    leave every share alone and step by 2; the loop clips the sum and steps by 1."""
    assert two_replica_facts["clip0.0"]["update_norm"] == pytest.approx(2.0, abs=1e-5)
    assert two_replica_facts["clip1.0"]["update_norm"] == pytest.approx(1.0, abs=1e-5)


def test_xla_compiled_step_matches(two_replica_facts):
    """--xla (on by default where a GPU is) compiles the forward and backward pass only:
    the iterator read cannot be compiled (IteratorGetNext)."""
    for name in ("xla_one", "xla_two"):
        np.testing.assert_allclose(two_replica_facts[name], two_replica_facts["clip1.0"]["two"],
                                   atol=1e-5)


def test_gradient_centralization_is_the_same_step_on_one_and_two_replicas(two_replica_facts):
    """From zero weights with SGD at rate 1 the update is -gradient, so the centralized step
    is the plain one minus its mean over the input axis (the kernel's all but last)."""
    facts = two_replica_facts["gc"]
    plain = np.array(facts["plain"])
    expected = plain - plain.mean(axis=0, keepdims=True)
    assert np.abs(plain.mean(axis=0)).max() > 0.05  # centralizing changes this step
    for name in ("one", "two", "two_mixed"):
        np.testing.assert_allclose(facts[name], expected, atol=1e-6)


def test_ema_averages_alike_on_one_and_two_replicas(two_replica_facts):
    """--ema=0.5 over three steps: Keras' average starts at the first step's weights, then
    0.5 x average + 0.5 x weights; swapped in, it is what the model holds, and swapped out,
    the trained weights are back. The same on one device, two replicas, and with loss
    scaling."""
    facts = two_replica_facts["ema"]
    w1, w2, w3 = (np.array(w) for w in facts["plain"])
    expected = 0.5 * (0.5 * w1 + 0.5 * w2) + 0.5 * w3
    assert not np.allclose(expected, w3, atol=1e-3)  # the average is not the last weights
    for name in ("one", "two", "two_mixed"):
        np.testing.assert_allclose(facts[name]["trained"], w3, atol=1e-6)
        np.testing.assert_allclose(facts[name]["average"], expected, atol=1e-6)
        np.testing.assert_allclose(facts[name]["back"], w3, atol=1e-6)


def test_ranger_takes_the_same_steps_on_one_and_two_replicas(two_replica_facts):
    """--optimizer=ranger (its maths: tests/test_recipes.py): the rectification and the
    Lookahead sync are blends, not conds, so they run under MirroredStrategy, and two
    replicas, with or without loss scaling, end where one device does."""
    facts = two_replica_facts["ranger"]
    assert np.isfinite(facts["one"]).all() and np.abs(facts["one"]).max() > 0.05
    for name in ("two", "two_mixed"):
        np.testing.assert_allclose(facts[name], facts["one"], atol=1e-6)


def test_backbone_lr_mult_takes_the_same_steps_on_one_and_two_replicas(two_replica_facts):
    """--backbone_lr_mult (its maths: tests/test_recipes.py) hands each weight its rate, and
    decays the scaled weights, inside Keras' distributed update: two replicas, with or
    without loss scaling, end where one device does, and the backbone where a multiplier of
    1 would not take it."""
    facts = two_replica_facts["lr_mult"]
    for name in ("two", "two_mixed"):
        for got, want in zip(facts[name], facts["one"]):
            np.testing.assert_allclose(got, want, atol=1e-6)
    backbone, plain_backbone = np.array(facts["one"][0]), np.array(facts["plain"][0])
    identity = np.eye(2)
    assert np.abs(backbone - identity).max() > 1e-3  # it moved
    assert np.abs(backbone - identity).max() < 0.3 * np.abs(plain_backbone - identity).max()


def test_a_frozen_layer_that_unfreezes_takes_the_same_steps_on_one_and_two_replicas(
        two_replica_facts):
    """The phases' mechanics (a layer frozen, then trainable with a fresh optimizer and the
    step traced again: --freeze_epochs, --unfreeze_every) inside the distributed update: the
    frozen layer holds still, then moves, and two replicas, with or without loss scaling,
    end where one device does."""
    facts = two_replica_facts["staged"]
    frozen, backbone = np.array(facts["one"][0]), np.array(facts["one"][1])
    np.testing.assert_array_equal(frozen, np.eye(2))  # held still while frozen
    assert np.abs(backbone - np.eye(2)).max() > 1e-3  # moved once unfrozen
    for name in ("two", "two_mixed"):
        for got, want in zip(facts[name], facts["one"]):
            np.testing.assert_allclose(got, want, atol=1e-6)


def test_validation_gap_is_the_same_on_one_and_two_replicas(two_replica_facts):
    """--monitor=val_gap ranks every validation image: on two replicas the confidences are
    gathered from both, so the GAP is one device's and evaluation's over the same images."""
    from evaluation.metrics import global_average_precision

    facts = two_replica_facts["val_gap"]
    expected = global_average_precision(np.argmax(facts["one"]["labels"], 1),
                                        np.array(facts["one"]["probabilities"]))
    assert facts["one"]["gap"] == pytest.approx(expected, abs=1e-6)
    assert facts["two"]["gap"] == pytest.approx(expected, abs=1e-6)
    assert facts["two"]["accuracy"] == facts["one"]["accuracy"]


def test_an_overflow_on_one_replica_skips_the_step_everywhere(two_replica_facts):
    assert two_replica_facts["overflow"] == {"finite": True, "unchanged": True}


def run_two_workers(tmp_path, data, epochs, *extra):
    ports = [free_port(), free_port()]
    procs = []
    for index in range(2):
        env = dict(os.environ, VC_WORKER_HOSTS=",".join(f"127.0.0.1:{p}" for p in ports),
                   VC_TASK_INDEX=str(index), MA_NUM_HOSTS="2")
        flags = [f"--data_url={data}", f"--train_url={tmp_path / 'out'}",
                 f"--local_data_root={tmp_path / f'cache{index}'}", *SMALL,
                 f"--max_epochs={epochs}", "--freeze_epochs=0", *extra]
        procs.append(subprocess.Popen([sys.executable, "train.py", *flags], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out
        assert "MultiWorkerMirroredStrategy" in out and "2 replicas in sync" in out
    return outputs


def test_two_workers_on_localhost_end_with_identical_weights_and_resume_together(
        tmp_path, clean_storage_env):
    data = digits_folder(tmp_path / "data", count=60, broken=False)
    outputs = run_two_workers(tmp_path, data, epochs=1)
    prints = [re.search(r"weights fingerprint ([0-9a-f]+)", out).group(1) for out in outputs]
    assert prints[0] == prints[1]
    assert (tmp_path / "out" / "checkpoints" / "checkpoint").exists()  # written by the chief
    assert (tmp_path / "out" / "model" / "saved_model.pb").exists()  # by the chief alone
    assert "the chief writes the outputs" in outputs[1]

    # Restarted with one more epoch: both workers resume from the chief's checkpoint (the
    # export, seen above, is left out this time).
    outputs = run_two_workers(tmp_path, data, 2, "--export_model=false")
    for out in outputs:
        assert "1 epoch already done" in out and "epoch 2/2 " in out and "epoch 1/2 " not in out
    prints = [re.search(r"weights fingerprint ([0-9a-f]+)", out).group(1) for out in outputs]
    assert prints[0] == prints[1]
    rows = (tmp_path / "out" / "training_log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1"]  # the chief's log alone
