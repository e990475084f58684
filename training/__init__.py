"""The training side: the tf.distribute strategy and TF_CONFIG from the platform, optimizers and
schedules, and the one custom training loop with Keras callbacks, checkpoints and resume."""
