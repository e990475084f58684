"""Shared fixtures: a real S3 endpoint (moto's server in its own process) and a clean S3 env."""
import os
import subprocess
import sys
import uuid

import pytest

from tests.servers import ROOT, MotoServer, point_at

# Variables that would point obs_utils somewhere else than the test endpoint.
STORAGE_VARS = [
    "OBS_ENDPOINT", "S3_ENDPOINT", "S3_USE_HTTPS", "S3_VERIFY_SSL", "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3", "OBS_ACCESS_KEY_ID", "OBS_SECRET_ACCESS_KEY", "OBS_SECURITY_TOKEN",
    "HUAWEICLOUD_SDK_AK", "HUAWEICLOUD_SDK_SK", "HUAWEICLOUD_SDK_SECURITY_TOKEN",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
    "OBS_REGION", "AWS_REGION", "AWS_DEFAULT_REGION", "OBS_ADDRESSING_STYLE",
    "S3_ADDRESSING_STYLE", "OBS_SIGNATURE_VERSION", "OBS_MAX_ATTEMPTS", "OBS_CONNECT_TIMEOUT",
    "OBS_READ_TIMEOUT", "OBS_UTILS_BACKEND", "OBS_THREADS",
]


@pytest.fixture(scope="session")
def moto_server():
    server = MotoServer()
    yield server
    server.stop()


@pytest.fixture
def clean_storage_env(monkeypatch, tmp_path):
    """No storage variable from the developer's shell leaks into a test."""
    for name in STORAGE_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


@pytest.fixture
def s3_env(clean_storage_env, moto_server):
    point_at(clean_storage_env, moto_server)
    return moto_server


@pytest.fixture
def bucket(s3_env):
    """A fresh, empty bucket on the moto server, for one test."""
    name = "test-" + uuid.uuid4().hex[:12]
    s3_env.client().create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The README's main command (`python train.py`, the built-in demo data) run once for the
    whole session: its outputs feed the demo, evaluation, export and serving tests."""
    root = tmp_path_factory.mktemp("demo")
    env = {k: v for k, v in os.environ.items() if k not in STORAGE_VARS}
    proc = subprocess.run([sys.executable, "train.py", f"--train_url={root / 'out'}",
                           f"--local_data_root={root / 'cache'}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc.root = root
    proc.out = root / "out"
    return proc


@pytest.fixture(scope="session")
def ensemble_run(demo_run, tmp_path_factory):
    """`train.py --mode=ensemble` of three members with flip TTA and weights 1, 2, 1: the demo
    run itself (its train_url), the demo's weights at 40 px stretched, and the demo's model
    with its classes in another order (tests/ensembles.py); evaluated on 60 demo images."""
    from pathlib import Path
    from types import SimpleNamespace

    import train
    from tests import ensembles

    root = tmp_path_factory.mktemp("ensemble")
    resized = ensembles.resized_member(str(demo_run.out), root / "resized" / "model")
    permuted, perm = ensembles.permuted_member(str(demo_run.out), root / "permuted" / "model")
    test = ensembles.labelled_subset(str(demo_run.root), str(root / "test"))
    members = [str(demo_run.out), str(resized), str(permuted)]
    code = train.main(["--mode=ensemble", f"--members={','.join(members)}",
                       "--member_weights=1,2,1", "--tta=flip", f"--train_url={root / 'out'}",
                       f"--test_data_url={test}", f"--local_data_root={root / 'cache'}"])
    assert code == 0
    return SimpleNamespace(root=root, package=root / "out" / "model", perm=perm,
                           members=[demo_run.out / "model", Path(resized), Path(permuted)],
                           weights=[1.0, 2.0, 1.0], test=test)
