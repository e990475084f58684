"""Which tf.distribute strategy a job runs under, and TF_CONFIG derived from ModelArts.

ModelArts sets no TF_CONFIG. Current jobs describe the cluster with VC_WORKER_HOSTS (comma
separated, the first is the chief), VC_TASK_INDEX and MA_NUM_HOSTS; older ones with
DLS_TASK_NUMBER, DLS_TASK_INDEX and BATCH_CUSTOM{i}_HOSTS ("host:port" of node i). A TF_CONFIG
already set wins. One node with several GPUs: MirroredStrategy; one device: the default.
"""
import hashlib
import json
import logging
import os

import obs_utils
from errors import UserError

log = logging.getLogger("training")

DEFAULT_PORT = 2222


def _with_port(host, port):
    return host if ":" in host.rsplit("]", 1)[-1] else f"{host}:{port}"


def cluster_from_env(env=None, port=DEFAULT_PORT):
    """TF_CONFIG as a dict from the ModelArts variables, or None for a single-node job."""
    env = os.environ if env is None else env
    if env.get("TF_CONFIG"):
        try:
            config = json.loads(env["TF_CONFIG"])
            int(config["task"]["index"]), list(config["cluster"]["worker"])
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"TF_CONFIG is set but is not a TF_CONFIG with a cluster and a "
                             f"task ({type(exc).__name__}: {exc}); fix it or unset it") from None
        return config
    if env.get("VC_WORKER_HOSTS"):
        hosts = [h.strip() for h in env["VC_WORKER_HOSTS"].split(",") if h.strip()]
        index = int(env.get("VC_TASK_INDEX", "0"))
        expected = int(env.get("MA_NUM_HOSTS", len(hosts)))
        if expected != len(hosts):
            raise UserError(f"MA_NUM_HOSTS={expected} but VC_WORKER_HOSTS names {len(hosts)} "
                             "hosts; the job's environment is inconsistent")
    elif env.get("DLS_TASK_NUMBER"):
        count = int(env["DLS_TASK_NUMBER"])
        index = int(env.get("DLS_TASK_INDEX", "0"))
        missing = [i for i in range(count) if not env.get(f"BATCH_CUSTOM{i}_HOSTS")]
        if missing:
            raise UserError(f"DLS_TASK_NUMBER={count} but BATCH_CUSTOM{missing[0]}_HOSTS is "
                             "not set")
        hosts = [env[f"BATCH_CUSTOM{i}_HOSTS"].split(",")[0].strip() for i in range(count)]
    else:
        return None
    if len(hosts) < 2:
        return None
    if not 0 <= index < len(hosts):
        raise UserError(f"task index {index} is outside the {len(hosts)} workers")
    return {"cluster": {"worker": [_with_port(h, port) for h in hosts]},
            "task": {"type": "worker", "index": index}}


def is_chief(tf_config):
    """The chief (worker 0) writes checkpoints and outputs; the others must not clobber them."""
    return tf_config is None or int(tf_config["task"]["index"]) == 0


def make_strategy(tf_config=None, devices=None):
    """MultiWorkerMirroredStrategy for a cluster, MirroredStrategy for several local GPUs (or the
    given `devices`), else the default strategy."""
    import tensorflow as tf

    if tf_config and len(tf_config["cluster"].get("worker", [])) > 1:
        os.environ["TF_CONFIG"] = json.dumps(tf_config)
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        log.info("strategy: MultiWorkerMirroredStrategy, worker %d of %d, %d replicas in sync",
                 tf_config["task"]["index"], len(tf_config["cluster"]["worker"]),
                 strategy.num_replicas_in_sync)
        return strategy
    gpus = tf.config.list_logical_devices("GPU")
    if devices or len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy(devices)
        log.info("strategy: MirroredStrategy over %d devices", strategy.num_replicas_in_sync)
        return strategy
    log.info("strategy: one device (%s)", gpus[0].name if gpus else "CPU")
    return tf.distribute.get_strategy()


def work_dir(train_url, cache_root, tf_config):
    """Local folder for the outputs: for the chief, train_url itself when local, else a cache
    folder named after train_url (the same for a restarted job); for the other workers of a
    multi-node job, a scratch folder of their own, so nothing of the chief's is overwritten."""
    if is_chief(tf_config) and not obs_utils.is_remote(train_url):
        os.makedirs(train_url, exist_ok=True)
        return train_url
    digest = hashlib.sha1(train_url.rstrip("/").encode()).hexdigest()[:12]
    who = "chief" if is_chief(tf_config) else f"worker-{tf_config['task']['index']}"
    folder = os.path.join(cache_root, "jobs", digest, who)
    os.makedirs(folder, exist_ok=True)
    return folder
