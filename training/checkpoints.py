"""Resume state and best weights, kept locally and mirrored to train_url after every epoch
(and with --save_steps every N steps).

A restarted job (ModelArts' auto restart, or the same command run again) finds the last
checkpoint under {train_url}/checkpoints/ and continues from the next epoch with the model,
the optimizer (moments, step count, learning rate) and the epoch count it had. Every worker of
a multi-node job restores from there (they must agree on the epoch), but only the chief writes
to train_url: the others save into their own scratch folder, as tf.distribute requires every
worker to take part in a save.
"""
import json
import logging
import os
import re
from dataclasses import asdict, dataclass

import keras
import tensorflow as tf

import obs_utils
from errors import UserError
from models import run_weights

log = logging.getLogger("training")


INDEX = "checkpoint"  # CheckpointManager's index of the checkpoints it keeps


def _mirror(local_dir, remote_dir):
    """Make remote_dir hold what local_dir holds. New and changed files go first (size and
    MD5/ETag compared, as copy_tree does: a ckpt-N of an earlier attempt at the same epoch, or
    one damaged on OBS, is sent again) and the index last, so a job stopped half-way never
    finds an index naming files that were not uploaded; files no longer kept locally are
    removed last."""
    local_names = set(obs_utils.listdir(local_dir, recursive=True))
    remote_names = (set(obs_utils.listdir(remote_dir, recursive=True))
                    if obs_utils.is_dir(remote_dir) else set())
    obs_utils.copy_tree(local_dir, remote_dir, progress=False, exclude={INDEX})
    if INDEX in local_names:
        obs_utils.copy(os.path.join(local_dir, INDEX), obs_utils.join(remote_dir, INDEX))
    for name in sorted(remote_names - local_names):
        obs_utils.remove(obs_utils.join(remote_dir, name))


def _pull(local_dir, shared_dir):
    """Mirror train_url's `shared_dir` into `local_dir` (every worker reads the chief's) unless
    they are the same folder; True when it copied."""
    same = os.path.abspath(local_dir) == os.path.abspath(
        obs_utils.parse(shared_dir).path) and not obs_utils.is_remote(shared_dir)
    if same or not obs_utils.is_dir(shared_dir):
        return False
    obs_utils.copy_tree(shared_dir, local_dir, progress=False, delete=True)
    return True


def job_finished(train_url, max_epochs):
    """Whether the job of train_url has finished training (all of max_epochs, or stopped
    early), from the checkpoint index and the state beside it alone: no model is built."""
    index = obs_utils.join(train_url, "checkpoints", INDEX)
    if not obs_utils.exists(index):
        return False
    found = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', obs_utils.read_text(index), re.M)
    if not found:
        return False
    done = int(found.group(1))
    state = obs_utils.join(train_url, "checkpoints", f"callbacks-{done}.json")
    return finished(done, max_epochs, json.loads(obs_utils.read_text(state))
                    if obs_utils.exists(state) else {})


def finished(epochs_done, max_epochs, saved_state):
    """Training is over: every epoch done, or EarlyStopping ended it (`saved_state`: what
    ResumeState.save wrote beside the checkpoint)."""
    return epochs_done >= max_epochs or bool(saved_state.get("stopped_early"))


class ResumeState:
    """tf.train.Checkpoint of (model, optimizer, epochs done) with its CheckpointManager."""

    def __init__(self, model, optimizer, work_dir, train_url, chief, keep=2, extra=()):
        """`work_dir`: the chief's output folder (train_url itself when local), or a worker's
        own scratch folder; `extra`: layers trained beside the model (--level_weights'
        heads)."""
        self.epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
        more = {"levels": list(extra)} if extra else {}
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer,
                                              epochs_done=self.epochs_done, **more)
        self.chief, self.keep = chief, keep
        self.local_dir = os.path.join(work_dir, "checkpoints")
        self.shared_dir = obs_utils.join(train_url, "checkpoints")
        self.push = chief and obs_utils.is_remote(train_url)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.local_dir,
                                                  max_to_keep=keep)

    def restore(self):
        """Epochs already done (0 for a new job), after restoring the latest checkpoint of
        train_url (every worker reads the chief's)."""
        if _pull(self.local_dir, self.shared_dir):
            self.manager = tf.train.CheckpointManager(self.checkpoint, self.local_dir,
                                                      max_to_keep=self.keep)
        latest = self.manager.latest_checkpoint
        if not latest:
            return 0
        try:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        except (AssertionError, ValueError, tf.errors.OpError) as exc:
            raise UserError(
                f"cannot resume from {self.shared_dir}: its checkpoint was made by another "
                f"model (another --backbone, number of classes or precision?): "
                f"{str(exc).strip().splitlines()[0][:200]}. Use a new --train_url, or remove "
                "its checkpoints/ and weights/ to start over") from None
        done = int(self.epochs_done.numpy())
        log.info("resuming from %s: %d epoch%s already done, optimizer at step %d", latest,
                 done, "" if done == 1 else "s", int(self.checkpoint.optimizer.iterations.numpy()))
        return done

    def save(self, epochs_done, callbacks=(), stopped_early=False):
        """Checkpoint after `epochs_done` epochs, with the patience counters of `callbacks`
        (ReduceLROnPlateau, EarlyStopping) and whether EarlyStopping ended training beside it,
        and mirror them to train_url."""
        self.epochs_done.assign(epochs_done)
        _write_callback_state(self.local_dir, epochs_done, callbacks, stopped_early)
        self.manager.save(checkpoint_number=epochs_done)
        kept = {os.path.basename(c) for c in self.manager.checkpoints}
        for name in os.listdir(self.local_dir):  # the states of checkpoints no longer kept
            if name.startswith("callbacks-") and f"ckpt-{name[10:-5]}" not in kept:
                os.remove(os.path.join(self.local_dir, name))
        if self.push:
            _mirror(self.local_dir, self.shared_dir)

    def restore_callbacks(self, callbacks, epochs_done):
        """Give `callbacks` back the counters they had after `epochs_done` epochs (call after
        their on_train_begin, which resets them): a resumed job waits and stops as the
        uninterrupted one would."""
        saved = self.saved_state(epochs_done)
        for callback in callbacks:
            for name, value in saved.get(type(callback).__name__, {}).items():
                setattr(callback, name, value)

    def saved_state(self, epochs_done):
        """What save() wrote beside the checkpoint of `epochs_done` ({} if nothing)."""
        path = os.path.join(self.local_dir, f"callbacks-{epochs_done}.json")
        if epochs_done == 0 or not os.path.isfile(path):
            return {}
        with open(path) as f:
            return json.load(f)


STEPS_FOLDER = "step_checkpoints"


@dataclass
class Position:
    """Where within epoch `epochs_done` a --save_steps checkpoint was made."""
    epochs_done: int
    steps_done: int      # steps of that epoch already trained
    totals: list         # the epoch's running sums so far: [loss, top-1, top-5, images]
    stream_epoch: int    # the epoch whose seed drew the data stream (the process's first)
    stream_steps: int    # batches drawn from that stream so far
    global_batch: int


class StepState:
    """--save_steps: (model, optimizer) every N steps within an epoch, the Position beside it
    (position-<n>.json), in {train_url}/step_checkpoints/ (one kept), mirrored as the epoch
    checkpoints are. A resume prefers it to the epoch checkpoint it started from."""

    def __init__(self, model, optimizer, work_dir, train_url, chief, extra=()):
        # Dropout's seed generators too: tf.train.Checkpoint(model=...) leaves out their
        # states, so a resumed job would draw its masks again from the first.
        seeds = [v for v in model.non_trainable_variables if v.name == "seed_generator_state"]
        more = {"levels": list(extra)} if extra else {}
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, seeds=seeds,
                                              **more)
        self.local_dir = os.path.join(work_dir, STEPS_FOLDER)
        self.shared_dir = obs_utils.join(train_url, STEPS_FOLDER)
        self.push = chief and obs_utils.is_remote(train_url)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.local_dir, max_to_keep=1)

    def restore(self, epochs_done, global_batch, steps_per_epoch):
        """The Position of the newest step checkpoint within epoch `epochs_done` (the one the
        epoch checkpoints resume), its model and optimizer restored; None when there is none.
        Saved under another global batch (another number of devices), the steps are counted
        anew from the images done, and the stream is drawn afresh."""
        if _pull(self.local_dir, self.shared_dir):
            self.manager = tf.train.CheckpointManager(self.checkpoint, self.local_dir,
                                                      max_to_keep=1)
        latest = self.manager.latest_checkpoint
        path = latest and os.path.join(self.local_dir, f"position-{latest.rsplit('-', 1)[1]}.json")
        if not latest or not os.path.isfile(path):
            return None
        with open(path) as f:
            position = Position(**json.load(f))
        if position.epochs_done != epochs_done or position.steps_done <= 0:
            return None  # made before the epoch checkpoint: that one is newer
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        if position.global_batch != global_batch:
            images = position.steps_done * position.global_batch
            log.warning("resuming within epoch %d on another global batch (%d, was %d): from "
                        "step %d of %d (the images done), the data drawn afresh",
                        epochs_done + 1, global_batch, position.global_batch,
                        images // global_batch, steps_per_epoch)
            steps = min(images // global_batch, steps_per_epoch - 1)
            position = Position(epochs_done, steps, position.totals if steps else [0.0] * 4,
                                epochs_done, 0, global_batch)
        log.info("resuming within epoch %d from %s: %d of %d steps already done",
                 epochs_done + 1, latest, position.steps_done, steps_per_epoch)
        return position

    def save(self, position):
        """Checkpoint at `position` and mirror it to train_url."""
        number = position.epochs_done * 1_000_000 + position.steps_done  # increasing
        os.makedirs(self.local_dir, exist_ok=True)
        with open(os.path.join(self.local_dir, f"position-{number}.json"), "w") as f:
            json.dump(asdict(position), f)
        self.manager.save(checkpoint_number=number)
        kept = {os.path.basename(c) for c in self.manager.checkpoints}
        for name in os.listdir(self.local_dir):
            if name.startswith("position-") and f"ckpt-{name[9:-5]}" not in kept:
                os.remove(os.path.join(self.local_dir, name))
        if self.push:
            _mirror(self.local_dir, self.shared_dir)


STATEFUL = {"ReduceLROnPlateau": ("wait", "best", "cooldown_counter"),
            "EarlyStopping": ("wait", "best", "best_epoch")}


def _write_callback_state(folder, epochs_done, callbacks, stopped_early):
    """callbacks-<epochs>.json: a new name each epoch, as _mirror sends only new names."""
    state = {"stopped_early": bool(stopped_early)}
    for callback in callbacks:
        names = STATEFUL.get(type(callback).__name__, ())
        values = {n: getattr(callback, n) for n in names if hasattr(callback, n)}
        if values:
            state[type(callback).__name__] = {n: float(v) if isinstance(v, float) or hasattr(
                v, "dtype") else v for n, v in values.items()}
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"callbacks-{epochs_done}.json"), "w") as f:
        json.dump(state, f)


class BestWeights(keras.callbacks.Callback):
    """Keep the `keep` best weight files by `monitor` (`--keep_weights_file_num`, `--monitor`),
    named epoch_NNN-val_acc_0.XXXX.weights.h5 (or val_macro_recall_, val_loss_), under
    weights/ (mirrored to train_url)."""

    def __init__(self, local_dir, remote_dir, keep, chief, earlier_run=False,
                 monitor="val_accuracy"):
        """earlier_run=True: the files already in local_dir belong to another run (this one
        starts at epoch 0): they are left there but never compete, nor are exported."""
        super().__init__()
        self.local_dir, self.remote_dir = local_dir, remote_dir
        self.keep, self.chief, self.monitor = keep, chief, monitor
        os.makedirs(local_dir, exist_ok=True)
        self.ignored = set(run_weights.ranked(local_dir)) if earlier_run else set()
        self._plain = self._plain_of = None  # _weights_only's model
        if self.ignored:
            log.warning("%s holds %d weight files of an earlier run; they are left there and "
                        "not used", local_dir, len(self.ignored))

    def _ranked(self):
        return [n for n in run_weights.ranked(self.local_dir) if n not in self.ignored]

    def on_epoch_end(self, epoch, logs=None):
        if not self.chief or self.keep <= 0:
            return
        value = logs[self.monitor]
        name = run_weights.file_name(epoch + 1, value, self.monitor)
        ranked = self._ranked()
        if len(ranked) >= self.keep and not run_weights.better(value, ranked[self.keep - 1],
                                                               self.monitor):
            return
        self._weights_only().save_weights(os.path.join(self.local_dir, name))
        for stale in self._ranked()[self.keep:]:
            os.remove(os.path.join(self.local_dir, stale))
        if self.remote_dir:
            _mirror(self.local_dir, self.remote_dir)

    def _weights_only(self):
        """The model without its optimizer: the same layers, in a Model that has none, so the
        file holds the weights alone (ResNet50: 91 MB instead of 271 MB with Adam's moments),
        in the layout the model's own load_weights reads."""
        if self._plain is None or self._plain_of is not self.model:
            self._plain = keras.Model(self.model.inputs, self.model.outputs,
                                      name=self.model.name)
            self._plain_of = self.model
        return self._plain

    def best(self):
        ranked = self._ranked()
        return os.path.join(self.local_dir, ranked[0]) if ranked else None
