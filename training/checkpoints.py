"""Resume state and best weights, kept locally and mirrored to train_url after every epoch.

A restarted job (ModelArts' auto restart, or the same command run again) finds the last
checkpoint under {train_url}/checkpoints/ and continues from the next epoch with the model,
the optimizer (moments, step count, learning rate) and the epoch count it had. Only the chief
writes to train_url; other workers save into a scratch folder of their own, as tf.distribute
requires every worker to take part in a save.
"""
import logging
import os
import tempfile

import keras
import tensorflow as tf

import obs_utils

log = logging.getLogger("training")


def _mirror(local_dir, remote_dir):
    """Make remote_dir hold what local_dir holds: send changed files, drop vanished ones."""
    obs_utils.copy_tree(local_dir, remote_dir, progress=False)
    keep = set(obs_utils.listdir(local_dir, recursive=True))
    for name in obs_utils.listdir(remote_dir, recursive=True):
        if name not in keep:
            obs_utils.remove(obs_utils.join(remote_dir, name))


class ResumeState:
    """tf.train.Checkpoint of (model, optimizer, epochs done) with its CheckpointManager."""

    def __init__(self, model, optimizer, work_dir, train_url, chief, keep=2):
        self.epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False, name="epochs_done")
        self.checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer,
                                              epochs_done=self.epochs_done)
        self.chief, self.keep = chief, keep
        self.local_dir = (os.path.join(work_dir, "checkpoints") if chief
                          else tempfile.mkdtemp(prefix="worker-checkpoints-"))
        self.remote_dir = (obs_utils.join(train_url, "checkpoints")
                           if chief and obs_utils.is_remote(train_url) else None)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.local_dir,
                                                  max_to_keep=keep)

    def restore(self):
        """Epochs already done (0 for a new job), after restoring the latest checkpoint."""
        if self.remote_dir and obs_utils.is_dir(self.remote_dir):
            obs_utils.copy_tree(self.remote_dir, self.local_dir, progress=False)
            self.manager = tf.train.CheckpointManager(self.checkpoint, self.local_dir,
                                                      max_to_keep=self.keep)
        latest = self.manager.latest_checkpoint
        if not latest:
            return 0
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        done = int(self.epochs_done.numpy())
        log.info("resuming from %s: %d epochs already done, optimizer at step %d", latest, done,
                 int(self.checkpoint.optimizer.iterations.numpy()))
        return done

    def save(self, epochs_done):
        self.epochs_done.assign(epochs_done)
        self.manager.save(checkpoint_number=epochs_done)
        if self.remote_dir:
            _mirror(self.local_dir, self.remote_dir)


class BestWeights(keras.callbacks.Callback):
    """Keep the `keep` best weight files by val_accuracy (`--keep_weights_file_num`), named
    epoch_NNN-val_acc_0.XXXX.weights.h5, under weights/ (mirrored to train_url)."""

    def __init__(self, local_dir, remote_dir, keep, chief):
        super().__init__()
        self.local_dir, self.remote_dir = local_dir, remote_dir
        self.keep, self.chief = keep, chief
        os.makedirs(local_dir, exist_ok=True)

    def _ranked(self):
        files = [n for n in os.listdir(self.local_dir) if n.endswith(".weights.h5")]
        return sorted(files, key=lambda n: float(n.split("val_acc_")[1][:6]), reverse=True)

    def on_epoch_end(self, epoch, logs=None):
        if not self.chief or self.keep <= 0:
            return
        name = f"epoch_{epoch + 1:03d}-val_acc_{logs['val_accuracy']:.4f}.weights.h5"
        ranked = self._ranked()
        if len(ranked) >= self.keep and logs["val_accuracy"] <= float(
                ranked[self.keep - 1].split("val_acc_")[1][:6]):
            return
        self.model.save_weights(os.path.join(self.local_dir, name))
        for stale in self._ranked()[self.keep:]:
            os.remove(os.path.join(self.local_dir, stale))
        if self.remote_dir:
            _mirror(self.local_dir, self.remote_dir)

    def best(self):
        ranked = self._ranked()
        return os.path.join(self.local_dir, ranked[0]) if ranked else None
