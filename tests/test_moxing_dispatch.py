"""MoXing dispatch: a fake `moxing.file` (MoXing exists only inside ModelArts) gets the remote
calls; a `moxing` without `file` (the unrelated PyPI project) is ignored in favour of boto3."""
import logging
import os
import shutil
import sys
import types

import pytest

import obs_utils
from obs_utils import moxing_backend


def fake_moxing(store):
    """A moxing package whose `file` module keeps obs:// objects under the folder `store`."""
    calls = []

    def local(url):
        return os.path.join(store, url.split("://", 1)[1]) if "://" in url else url

    def record(name, fn):
        def wrapper(*args, **kwargs):
            calls.append((name, args, kwargs))
            return fn(*args, **kwargs)
        return wrapper

    def write(url, data, binary=False):
        os.makedirs(os.path.dirname(local(url)), exist_ok=True)
        with open(local(url), "wb" if binary else "w") as f:
            f.write(data)

    def read(url, binary=False):
        with open(local(url), "rb" if binary else "r") as f:
            return f.read()

    def list_directory(url, recursive=False):
        """MoXing's: names in the folder; recursive=True, every file and folder below it,
        relative to `url`."""
        root = local(url)
        if not recursive:
            return sorted(os.listdir(root))
        found = []
        for folder, dirs, files in os.walk(root):
            rel = os.path.relpath(folder, root)
            found += [n if rel == "." else f"{rel}/{n}" for n in dirs + files]
        return sorted(found)

    def remove(url, recursive=False):
        (shutil.rmtree if recursive else os.remove)(local(url))

    file_mod = types.ModuleType("moxing.file")
    impl = {
        "exists": lambda url: os.path.exists(local(url)),
        "is_directory": lambda url: os.path.isdir(local(url)),
        "list_directory": list_directory,
        "read": read, "write": write,
        "copy": lambda src, dst: shutil.copyfile(local(src), local(dst)),
        "copy_parallel": lambda src, dst: shutil.copytree(local(src), local(dst),
                                                         dirs_exist_ok=True),
        "make_dirs": lambda url: os.makedirs(local(url), exist_ok=True),
        "remove": remove,
    }
    for name, fn in impl.items():
        setattr(file_mod, name, record(name, fn))
    package = types.ModuleType("moxing")
    package.file = file_mod
    return package, file_mod, calls


@pytest.fixture
def fresh_backend(clean_storage_env):
    moxing_backend._cache.clear()
    yield clean_storage_env
    moxing_backend._cache.clear()


def test_real_moxing_gets_every_remote_call(fresh_backend, tmp_path):
    package, file_mod, calls = fake_moxing(str(tmp_path / "store"))
    fresh_backend.setitem(sys.modules, "moxing", package)
    fresh_backend.setitem(sys.modules, "moxing.file", file_mod)

    obs_utils.write_text("obs://bkt/run/metrics.json", "{}")
    assert obs_utils.exists("s3://bkt/run/metrics.json")
    assert obs_utils.read_text("obs://bkt/run/metrics.json") == "{}"
    assert obs_utils.listdir("obs://bkt/run") == ["metrics.json"]
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "w.h5").write_bytes(b"weights")
    obs_utils.copy_tree(str(tmp_path / "local"), "obs://bkt/ckpt")
    obs_utils.copy("obs://bkt/ckpt/w.h5", str(tmp_path / "back.h5"))
    obs_utils.remove("obs://bkt/ckpt", recursive=True)

    names = [name for name, _args, _kw in calls]
    assert names == ["write", "exists", "read", "list_directory", "copy_parallel", "copy",
                     "remove"]
    assert calls[4][1] == (str(tmp_path / "local"), "obs://bkt/ckpt")
    assert (tmp_path / "back.h5").read_bytes() == b"weights"
    # Purely local work never goes through MoXing.
    obs_utils.write_text(str(tmp_path / "plain.txt"), "x")
    assert len(calls) == 7


def test_impostor_moxing_without_file_falls_back_to_boto3(fresh_backend, moto_server, caplog):
    impostor = types.ModuleType("moxing")  # the PyPI 'moxing': no `file` submodule
    impostor.__file__ = "/site-packages/moxing/__init__.py"
    fresh_backend.setitem(sys.modules, "moxing", impostor)
    fresh_backend.setenv("AWS_ENDPOINT_URL", moto_server.url)
    fresh_backend.setenv("AWS_ACCESS_KEY_ID", "testing")
    fresh_backend.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    moto_server.client().create_bucket(Bucket="impostor-bucket")

    with caplog.at_level(logging.WARNING, logger="obs_utils"):
        obs_utils.write_text("obs://impostor-bucket/a.txt", "via boto3")
    body = moto_server.client().get_object(Bucket="impostor-bucket", Key="a.txt")["Body"].read()
    assert body == b"via boto3"
    assert "not Huawei's" in caplog.text


def test_backend_can_be_forced(fresh_backend, tmp_path):
    package, file_mod, calls = fake_moxing(str(tmp_path / "store"))
    fresh_backend.setitem(sys.modules, "moxing", package)
    fresh_backend.setenv("OBS_UTILS_BACKEND", "boto3")
    assert moxing_backend.get_mox_file() is None
    fresh_backend.setenv("OBS_UTILS_BACKEND", "moxing")
    assert moxing_backend.get_mox_file() is file_mod
    fresh_backend.delitem(sys.modules, "moxing")
    fresh_backend.setitem(sys.modules, "moxing", types.ModuleType("moxing"))
    with pytest.raises(obs_utils.ObsError, match="not available"):
        moxing_backend.get_mox_file()


def test_moxing_tree_copies_keep_the_traversal_guard_and_delete(fresh_backend, tmp_path):
    """copy_parallel checks no key and never deletes: a key that would land outside the
    local folder is refused before anything is copied, and delete=True mirrors."""
    package, file_mod, calls = fake_moxing(str(tmp_path / "store"))
    fresh_backend.setitem(sys.modules, "moxing", package)
    fresh_backend.setitem(sys.modules, "moxing.file", file_mod)
    obs_utils.write_text("obs://bkt/pkg/a.txt", "a")
    obs_utils.write_text("obs://bkt/pkg/sub/b.txt", "b")

    target = tmp_path / "target"
    target.mkdir()
    (target / "stale.txt").write_text("from an older package")
    (target / "keep.txt").write_text("excluded, so kept")
    obs_utils.copy_tree("obs://bkt/pkg", str(target), delete=True)
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*.txt")) == [
        "a.txt", "sub/b.txt"]
    (target / "keep.txt").write_text("excluded, so kept")
    obs_utils.copy_tree("obs://bkt/pkg", str(target), delete=True, exclude={"keep.txt"})
    assert (target / "keep.txt").exists()

    # An OBS key may hold '..' segments (a folder on disk cannot): MoXing lists it as it is.
    real_list = file_mod.list_directory
    file_mod.list_directory = lambda url, recursive=False: real_list(url, recursive) + [
        "../../escaped.txt"]
    del calls[:]
    with pytest.raises(obs_utils.ObsError, match="escaped.txt"):
        obs_utils.copy_tree("obs://bkt/pkg", str(tmp_path / "fresh"))
    assert not [c for c in calls if c[0] == "copy_parallel"]
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "fresh").exists()
