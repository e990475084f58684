"""Run as a script: train.py on MirroredStrategy over two logical CPU devices, the code path of a
machine with two GPUs (which this machine lacks; the logical devices are TensorFlow's own).

    python tests/train_two_devices.py --data_url=... --train_url=...
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import train  # noqa: E402
from training import distribute  # noqa: E402

_make_strategy = distribute.make_strategy


def two_devices(tf_config=None, devices=None):
    return _make_strategy(tf_config, devices or ["/cpu:0", "/cpu:1"])


distribute.make_strategy = two_devices
sys.exit(train.main(sys.argv[1:]))
