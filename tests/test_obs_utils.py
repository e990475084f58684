"""obs_utils against a real S3 endpoint (moto's server in its own process) and local folders."""
import os
import signal
import subprocess
import sys
import time

import botocore.exceptions
import pytest

import obs_utils
from obs_utils.s3_config import get_signed
from tests.servers import ROOT, MotoServer, SeaweedServer, StoreProxy, free_port, point_at

BIG = 9 * 1024 * 1024  # over the 8 MiB multipart threshold: sent in two parts


def make_tree(root):
    """A nested tree with Chinese names, an empty file and one multipart-sized file."""
    files = {
        "a.txt": b"alpha",
        "empty.bin": b"",
        "可回收物/易拉罐 1.jpg": os.urandom(3000),
        "可回收物/深/层/文件.txt": "中文内容".encode(),
        "sub/dir/b.bin": os.urandom(70000),
        "big/large.bin": os.urandom(BIG),
    }
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return files


def read_tree(root):
    out = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            full = os.path.join(dirpath, name)
            out[os.path.relpath(full, root).replace(os.sep, "/")] = open(full, "rb").read()
    return out


def test_round_trip_nested_tree_obs_and_s3_urls(bucket, s3_env, tmp_path):
    files = make_tree(tmp_path / "src")
    up = obs_utils.copy_tree(str(tmp_path / "src"), f"obs://{bucket}/data/")
    assert up.copied == len(files) and up.skipped == 0
    # obs:// and s3:// name the same objects
    assert obs_utils.listdir(f"s3://{bucket}/data", recursive=True) == sorted(files)
    assert obs_utils.listdir(f"obs://{bucket}/data") == ["a.txt", "big", "empty.bin", "sub",
                                                         "可回收物"]
    head = s3_env.client().head_object(Bucket=bucket, Key="data/big/large.bin")
    assert head["ETag"].strip('"').endswith("-2"), "large file was not sent as multipart"

    down = obs_utils.copy_tree(f"s3://{bucket}/data", str(tmp_path / "dst"))
    assert down.copied == len(files)
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(tmp_path / "dst" / "a.txt").st_mode & 0o777 == 0o666 & ~umask  # not 0600
    assert read_tree(tmp_path / "dst") == files


def test_second_sync_transfers_nothing_and_a_changed_file_is_sent_again(bucket, tmp_path):
    files = make_tree(tmp_path / "src")
    url = f"obs://{bucket}/sync"
    obs_utils.copy_tree(str(tmp_path / "src"), url)
    obs_utils.copy_tree(url, str(tmp_path / "dst"))

    again_up = obs_utils.copy_tree(str(tmp_path / "src"), url)
    again_down = obs_utils.copy_tree(url, str(tmp_path / "dst"))
    assert (again_up.copied, again_up.skipped) == (0, len(files))
    assert (again_down.copied, again_down.skipped) == (0, len(files))

    # Same size, other bytes: only a content check notices (checkpoints change like this).
    (tmp_path / "src" / "a.txt").write_bytes(b"ALPHA")
    changed = obs_utils.copy_tree(str(tmp_path / "src"), url)
    assert (changed.copied, changed.bytes_copied) == (1, 5)
    time.sleep(1.1)  # object times have one-second resolution
    obs_utils.write_bytes(f"{url}/sub/dir/b.bin", b"new bytes")
    pulled = obs_utils.copy_tree(url, str(tmp_path / "dst"))
    assert pulled.copied == 2  # a.txt and b.bin
    assert (tmp_path / "dst" / "sub" / "dir" / "b.bin").read_bytes() == b"new bytes"
    assert (tmp_path / "dst" / "a.txt").read_bytes() == b"ALPHA"


INTERRUPTED_COPY = """
import signal, sys, time
# Ctrl-C as a terminal delivers it, whatever this process inherited (a parent that ignores
# SIGINT passes SIG_IGN on, and Python then installs no handler of its own).
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {root!r})
import obs_utils
from obs_utils import local
real = local.copy_file
def slow(src, dst):
    print("copying", flush=True)
    time.sleep(0.05)  # 400 files on 4 threads: 5 s, well past the signal
    real(src, dst)
local.copy_file = slow
obs_utils.copy_tree({src!r}, {dst!r}, threads=4)
"""


def test_ctrl_c_stops_a_tree_copy_and_its_debris_goes_next_time(tmp_path):
    """SIGINT half-way: the queued files are not copied (the pool used to copy all 400), the
    program ends at once. A killed copy's temporaries (ours, and s3transfer's parts of them)
    are removed by the next copy into the folder once they are old; a fresh one stays."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(400):
        (src / f"{i}.txt").write_text(str(i))
    script = INTERRUPTED_COPY.format(root=ROOT, src=str(src), dst=str(tmp_path / "dst"))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert "copying" in proc.stdout.readline()  # the copy has begun
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode != 0 and "KeyboardInterrupt" in err, (proc.returncode, err[-2000:])
    copied = len(list((tmp_path / "dst").glob("*.txt")))
    assert copied < 300, copied

    dst = tmp_path / "dst"
    old = [dst / ".obs-tmp-k1l2m3", dst / ".obs-tmp-x9y8z7.A1b2C3d4"]  # ours; s3transfer's
    for path in old:
        path.write_bytes(b"half a file")
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    (dst / ".obs-tmp-fresh").write_bytes(b"a copy still writing")
    obs_utils.copy_tree(str(src), str(dst))
    assert not any(path.exists() for path in old) and (dst / ".obs-tmp-fresh").exists()
    assert len(list(dst.glob("*.txt"))) == 400


def test_parallel_copies_never_touch_the_process_umask(tmp_path, monkeypatch):
    """os.umask(0) in a worker thread, even for an instant, made other threads' files and
    folders world-writable: a copy reads the umask without setting it."""
    from obs_utils import local

    make_tree(tmp_path / "src")
    umask = os.umask(0)
    os.umask(umask)
    assert local.UMASK == umask

    def forbidden(mask):
        raise AssertionError("os.umask called during a copy")

    monkeypatch.setattr(os, "umask", forbidden)
    obs_utils.copy_tree(str(tmp_path / "src"), str(tmp_path / "dst"), threads=8)
    for folder, dirs, files in os.walk(tmp_path / "dst"):
        for name in dirs + files:
            assert not os.stat(os.path.join(folder, name)).st_mode & 0o002, name


def test_delete_mirrors_both_ways_and_only_after_the_copy(bucket, tmp_path):
    make_tree(tmp_path / "src")
    url = f"obs://{bucket}/mirror"
    obs_utils.copy_tree(str(tmp_path / "src"), url)
    obs_utils.copy_tree(url, str(tmp_path / "dst"))
    os.remove(tmp_path / "src" / "a.txt")
    (tmp_path / "dst" / "local-only.txt").write_text("stays without delete")
    obs_utils.copy_tree(str(tmp_path / "src"), url)
    assert obs_utils.exists(f"{url}/a.txt")  # no delete: nothing removed
    obs_utils.copy_tree(str(tmp_path / "src"), url, delete=True)
    assert not obs_utils.exists(f"{url}/a.txt") and obs_utils.exists(f"{url}/sub/dir/b.bin")
    obs_utils.copy_tree(url, str(tmp_path / "dst"), delete=True)
    assert read_tree(tmp_path / "dst") == read_tree(tmp_path / "src")
    with pytest.raises(obs_utils.NotFoundError):
        obs_utils.copy_tree(f"{url}-missing", str(tmp_path / "dst"), delete=True)
    assert read_tree(tmp_path / "dst") == read_tree(tmp_path / "src")  # a failed copy deletes nothing

    # exclude: those names are neither sent nor removed (a checkpoint index goes on its own)
    (tmp_path / "src" / "index").write_text("new index")
    obs_utils.write_text(f"{url}/kept-remote", "not in src")
    obs_utils.copy_tree(str(tmp_path / "src"), url, delete=True,
                        exclude={"index", "kept-remote"})
    assert not obs_utils.exists(f"{url}/index") and obs_utils.exists(f"{url}/kept-remote")


def test_single_file_operations(bucket, tmp_path):
    url = f"obs://{bucket}/dir/文件.json"
    assert not obs_utils.exists(url)
    obs_utils.write_text(url, '{"名": 1}')
    assert obs_utils.exists(url) and not obs_utils.is_dir(url)
    assert obs_utils.is_dir(f"obs://{bucket}/dir") and obs_utils.exists(f"s3://{bucket}/dir/")
    assert obs_utils.read_text(url) == '{"名": 1}'

    obs_utils.copy(url, str(tmp_path) + "/")  # into a folder, under its own name
    assert (tmp_path / "文件.json").read_text(encoding="utf-8") == '{"名": 1}'
    obs_utils.copy(str(tmp_path / "文件.json"), f"s3://{bucket}/other/x.json")
    obs_utils.copy(f"s3://{bucket}/other/x.json", f"obs://{bucket}/third/y.json")
    assert obs_utils.read_text(f"obs://{bucket}/third/y.json") == '{"名": 1}'

    obs_utils.make_dirs(f"obs://{bucket}/empty/folder")
    assert obs_utils.is_dir(f"obs://{bucket}/empty/folder")
    with pytest.raises(obs_utils.ObsError, match="recursive=True"):
        obs_utils.remove(f"obs://{bucket}/dir")
    obs_utils.remove(f"obs://{bucket}/dir", recursive=True)
    assert not obs_utils.exists(url)
    obs_utils.remove(f"obs://{bucket}/other/x.json")
    assert not obs_utils.exists(f"obs://{bucket}/other/x.json")


def test_local_paths_and_file_urls_work_the_same(tmp_path, clean_storage_env):
    files = make_tree(tmp_path / "src")
    stats = obs_utils.copy_tree(f"file://{tmp_path}/src", str(tmp_path / "dst"))
    assert stats.copied == len(files) and read_tree(tmp_path / "dst") == files
    assert obs_utils.copy_tree(str(tmp_path / "src"), str(tmp_path / "dst")).copied == 0
    obs_utils.write_bytes(str(tmp_path / "n" / "x.bin"), b"1")
    assert obs_utils.read_bytes(f"file://{tmp_path}/n/x.bin") == b"1"
    assert obs_utils.listdir(str(tmp_path / "dst" / "可回收物")) == ["易拉罐 1.jpg", "深"]
    assert obs_utils.listdir(str(tmp_path / "dst"), recursive=True) == sorted(files)
    assert not [n for n in os.listdir(tmp_path / "n") if n.startswith(".obs-tmp-")]
    umask = os.umask(0)
    os.umask(umask)
    for written in (tmp_path / "n" / "x.bin", tmp_path / "dst" / "a.txt"):
        assert os.stat(written).st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    with pytest.raises(obs_utils.NotFoundError, match="no such local"):
        obs_utils.copy_tree(str(tmp_path / "missing"), str(tmp_path / "x"))


def test_keys_that_escape_the_destination_are_refused_and_nothing_is_written(
        bucket, s3_env, tmp_path):
    raw = s3_env.client()
    raw.put_object(Bucket=bucket, Key="data/fine.txt", Body=b"ok")
    dst = tmp_path / "deep" / "dst"
    for evil in ["data/../../evil.txt", "data//etc/evil.txt", "data/a/../../../evil.txt"]:
        raw.put_object(Bucket=bucket, Key=evil, Body=b"pwned")
        with pytest.raises(obs_utils.UnsafeKeyError, match="outside the destination"):
            obs_utils.copy_tree(f"obs://{bucket}/data", str(dst))
        raw.delete_object(Bucket=bucket, Key=evil)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written == [], f"files were written despite the refusal: {written}"
    assert obs_utils.copy_tree(f"obs://{bucket}/data", str(dst)).copied == 1


def test_missing_bucket_and_key_give_clear_errors(bucket, tmp_path):
    with pytest.raises(obs_utils.NotFoundError, match="bucket not found: obs://no-such-bucket-x"):
        obs_utils.read_bytes("obs://no-such-bucket-x/a.txt")
    with pytest.raises(obs_utils.NotFoundError, match="bucket not found: s3://no-such-bucket-x"):
        obs_utils.copy_tree("s3://no-such-bucket-x/data", str(tmp_path / "d"))
    with pytest.raises(obs_utils.NotFoundError, match=f"not found: obs://{bucket}/nope.txt"):
        obs_utils.read_bytes(f"obs://{bucket}/nope.txt")
    # the URL comes back as the caller wrote it
    with pytest.raises(obs_utils.NotFoundError, match=f"not found: s3://{bucket}/nope.txt"):
        obs_utils.read_bytes(f"s3://{bucket}/nope.txt")
    with pytest.raises(obs_utils.NotFoundError, match="no such folder"):
        obs_utils.copy_tree(f"obs://{bucket}/no/folder", str(tmp_path / "d"))
    with pytest.raises(obs_utils.NotFoundError):
        obs_utils.copy(f"obs://{bucket}/nope.txt", str(tmp_path / "x"))
    assert not (tmp_path / "x").exists()


def test_unreachable_endpoint_and_missing_credentials(clean_storage_env, tmp_path):
    clean_storage_env.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    clean_storage_env.setenv("AWS_ACCESS_KEY_ID", "k")
    clean_storage_env.setenv("AWS_SECRET_ACCESS_KEY", "s")
    clean_storage_env.setenv("OBS_MAX_ATTEMPTS", "1")
    with pytest.raises(obs_utils.EndpointError, match="cannot reach the storage endpoint"):
        obs_utils.exists("obs://bucket/key")
    clean_storage_env.delenv("AWS_ACCESS_KEY_ID")
    clean_storage_env.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(obs_utils.CredentialsError, match="AWS_ACCESS_KEY_ID"):
        obs_utils.read_bytes("obs://bucket/key")


def test_cli_reports_one_line_and_exit_2(s3_env, bucket):
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "obs_utils", "cat", f"obs://{bucket}/nope"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: not found: obs://")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_interrupted_sync_fails_clearly_and_a_rerun_completes_it(clean_storage_env, tmp_path):
    """The server freezes part-way through a download: the copy stops with a clear error, and
    a second run transfers only what is missing."""
    server = MotoServer()
    try:
        point_at(clean_storage_env, server)
        raw = server.client()
        raw.create_bucket(Bucket="frozen")
        count = 400
        for i in range(count):
            raw.put_object(Bucket="frozen", Key=f"d/{i // 100}/f{i}.bin", Body=os.urandom(2000))
        dst = tmp_path / "dst"
        env = dict(os.environ, OBS_READ_TIMEOUT="1", OBS_CONNECT_TIMEOUT="1",
                   OBS_MAX_ATTEMPTS="1")
        proc = subprocess.Popen([sys.executable, "-m", "obs_utils", "cp", "-r", "--threads", "2",
                                 "obs://frozen/d", str(dst)], cwd=ROOT, env=env,
                                stderr=subprocess.PIPE, text=True)
        def finished():  # files fully written (an in-flight one is a .obs-tmp- file)
            return sum(1 for _, _, files in os.walk(dst) for n in files
                       if not n.startswith(".obs-tmp-"))

        deadline = time.time() + 60
        while finished() < 20:
            assert time.time() < deadline and proc.poll() is None, "copy did not start"
            time.sleep(0.005)
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            _, stderr = proc.communicate(timeout=120)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        assert proc.returncode == 2, stderr
        assert "stopped answering" in stderr and "run the same command again" in stderr
        assert "Traceback" not in stderr
        done = finished()
        assert 20 <= done < count

        stats = obs_utils.copy_tree("obs://frozen/d", str(dst))
        assert stats.skipped == done and stats.copied == count - done
        names = [n for _, _, files in os.walk(dst) for n in files]
        assert len(names) == count and not [n for n in names if n.startswith(".obs-tmp-")]
    finally:
        server.stop()


def test_wrong_secret_key_is_access_denied_and_the_secret_is_never_printed(
        clean_storage_env, tmp_path):
    """SeaweedFS checks signatures (moto does not): a wrong secret must read 'access denied'."""
    server = SeaweedServer(tmp_path / "weed")
    try:
        server.client().create_bucket(Bucket="signed-bucket")
        wrong_secret = "WrongSecretKey-0123456789-abcdef"
        clean_storage_env.setenv("OBS_ENDPOINT", server.url)
        clean_storage_env.setenv("OBS_ACCESS_KEY_ID", server.ACCESS_KEY)
        clean_storage_env.setenv("OBS_SECRET_ACCESS_KEY", server.SECRET_KEY)
        obs_utils.write_text("obs://signed-bucket/ok.txt", "right keys work")

        clean_storage_env.setenv("OBS_SECRET_ACCESS_KEY", wrong_secret)
        with pytest.raises(obs_utils.AccessDeniedError) as caught:
            obs_utils.read_text("obs://signed-bucket/ok.txt")
        assert "access denied to obs://signed-bucket/ok.txt" in str(caught.value)
        assert wrong_secret not in str(caught.value)

        proc = subprocess.run([sys.executable, "-m", "obs_utils", "cp", "-r",
                               "obs://signed-bucket/", str(tmp_path / "d")],
                              cwd=ROOT, env=dict(os.environ), capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2 and "access denied" in proc.stderr
        assert wrong_secret not in proc.stdout + proc.stderr
        assert server.SECRET_KEY not in proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
    finally:
        server.stop()


def test_a_cached_copy_is_used_only_while_the_remote_object_is_the_same(bucket, s3_env,
                                                                       tmp_path, caplog):
    """Size and ETag decide, not the name: a same-size rewrite, or a bucket made anew with
    another object at the key, is fetched again; an unchanged object is not. Remote weights
    are cached per bucket and key, and not downloaded again at the next start."""
    import logging

    from models import weights

    url, local = f"obs://{bucket}/weights/w.h5", str(tmp_path / "cache" / "w.h5")
    obs_utils.write_bytes(url, b"version one")
    assert obs_utils.cached_copy(url, local) is True
    assert obs_utils.cached_copy(url, local) is False
    obs_utils.write_bytes(url, b"version two")  # the same size: only the ETag tells
    assert obs_utils.cached_copy(url, local) is True
    assert open(local, "rb").read() == b"version two"
    with open(local, "wb") as f:  # a cache file damaged (cut short) is fetched again
        f.write(b"vers")
    assert obs_utils.cached_copy(url, local) is True and os.path.getsize(local) == 11

    caplog.set_level(logging.INFO, logger="models")
    other = f"obs://{bucket}/other/w.h5"  # the same file name elsewhere: its own cache entry
    obs_utils.write_bytes(other, b"another file")
    cache = str(tmp_path / "job-cache")
    first = weights.resolve("resnet50", url, cache)
    assert weights.resolve("resnet50", other, cache) != first
    assert open(first, "rb").read() == b"version two"
    caplog.clear()
    assert weights.resolve("resnet50", url, cache) == first
    assert "cached copy" in caplog.text and "is current" in caplog.text


def test_a_feature_base_gone_from_obs_is_not_taken_from_the_cache(bucket, s3_env, tmp_path):
    from retrieval import stage

    url = f"obs://{bucket}/bases/gallery.h5"
    obs_utils.write_bytes(url, b"an old base")
    path = stage._local_base(url, str(tmp_path))
    assert open(path, "rb").read() == b"an old base"
    obs_utils.remove(url)  # e.g. the bucket was emptied or made anew
    assert stage._local_base(url, str(tmp_path)) == path and not os.path.exists(path)


def test_bucket_to_bucket_sync_skips_multipart_copies_it_made(bucket, s3_env, tmp_path):
    """An object of 9 MiB written in one PUT (as the console or MoXing may) has a plain MD5
    ETag; copied inside the store in parts, the copy's ETag is a multipart one. The second
    sync must still skip it (the copy records its source's ETag), and a changed source is
    copied again."""
    from obs_utils import s3

    big = os.urandom(9 * 1024 * 1024)
    obs_utils.write_bytes(f"obs://{bucket}/a/big.bin", big)
    obs_utils.write_text(f"obs://{bucket}/a/small.txt", "small")
    first = obs_utils.copy_tree(f"obs://{bucket}/a/", f"obs://{bucket}/b/", progress=False)
    assert first.copied == 2
    source, copy = s3.head(bucket, "a/big.bin"), s3.head(bucket, "b/big.bin")
    assert "-" not in source.etag and "-" in copy.etag  # the case: they can never be equal
    second = obs_utils.copy_tree(f"obs://{bucket}/a/", f"obs://{bucket}/b/", progress=False)
    assert (second.copied, second.skipped) == (0, 2)
    obs_utils.write_bytes(f"obs://{bucket}/a/big.bin", big[::-1])  # same size, new content
    third = obs_utils.copy_tree(f"obs://{bucket}/a/", f"obs://{bucket}/b/", progress=False)
    assert third.copied == 1
    assert obs_utils.read_bytes(f"obs://{bucket}/b/big.bin") == big[::-1]


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory):
    """SeaweedFS, which checks every request's signature (moto checks none)."""
    server = SeaweedServer(tmp_path_factory.mktemp("weed"))
    yield server
    server.stop()


def _through(env, proxy, server):
    env.setenv("OBS_ENDPOINT", proxy.url)
    env.setenv("OBS_ACCESS_KEY_ID", server.ACCESS_KEY)
    env.setenv("OBS_SECRET_ACCESS_KEY", server.SECRET_KEY)


def _small_tree(root, count, size=1000):
    files = {f"c{i % 7}/f{i}.bin": os.urandom(size) for i in range(count)}
    for rel, data in files.items():
        os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
        with open(os.path.join(root, rel), "wb") as f:
            f.write(data)
    return files


def test_small_files_move_in_one_signed_request_each_whatever_their_names(
        seaweed, clean_storage_env, tmp_path):
    """Each small file is one PUT or one GET, with no `Expect: 100-continue` round trip before
    it, signed so that SeaweedFS accepts keys with Chinese, spaces and reserved characters; a
    second copy sends nothing but the listings."""
    seaweed.client().create_bucket(Bucket="odd-keys")
    proxy = StoreProxy(seaweed.url)
    try:
        _through(clean_storage_env, proxy, seaweed)
        files = {"可回收物/易拉罐 1.jpg": os.urandom(3000), "a+b=c&d/100%.txt": b"percent",
                 "sp ace/~tilde!'()*,;@$.bin": os.urandom(500), "empty.bin": b"",
                 "深/层/文件.txt": "中文内容".encode()}
        for rel, data in files.items():
            os.makedirs(os.path.dirname(str(tmp_path / "src" / rel)), exist_ok=True)
            (tmp_path / "src" / rel).write_bytes(data)
        url = "obs://odd-keys/data/"
        obs_utils.copy_tree(str(tmp_path / "src"), url)
        assert proxy.counts == {"PUT": len(files), "GET": 1}  # the files, and one listing
        assert proxy.expect_continue == 0
        proxy.counts.clear()
        obs_utils.copy_tree(url, str(tmp_path / "dst"))
        assert proxy.counts == {"GET": len(files) + 1}
        assert read_tree(tmp_path / "dst") == files
        assert obs_utils.read_bytes(url + "a+b=c&d/100%.txt") == b"percent"  # boto3 reads it too

        proxy.counts.clear()
        again = (obs_utils.copy_tree(str(tmp_path / "src"), url),
                 obs_utils.copy_tree(url, str(tmp_path / "dst")))
        assert [s.copied for s in again] == [0, 0] and proxy.counts == {"GET": 2}
    finally:
        proxy.stop()


def test_a_store_answering_slowdown_gets_fewer_requests_at_once_and_the_copy_completes(
        seaweed, clean_storage_env, tmp_path, caplog):
    """OBS answers 503 SlowDown to more requests than it will take: the copy halves what it
    keeps in flight each time instead of retrying at the same rate, and every file arrives."""
    seaweed.client().create_bucket(Bucket="throttled")
    proxy = StoreProxy(seaweed.url, max_in_flight=4)
    try:
        _through(clean_storage_env, proxy, seaweed)
        files = _small_tree(tmp_path / "src", 150)
        with caplog.at_level("INFO", logger="obs_utils"):
            stats = obs_utils.copy_tree(str(tmp_path / "src"), "obs://throttled/t/", threads=32)
        assert stats.copied == len(files)
        assert "went down to" in caplog.text
        assert 0 < proxy.slowdowns < len(files), proxy.slowdowns  # refused, but not over and over
        obs_utils.copy_tree("obs://throttled/t/", str(tmp_path / "back"), threads=32)
        assert read_tree(tmp_path / "back") == files
    finally:
        proxy.stop()


def test_the_throttle_halves_on_slowdown_grows_back_by_one_and_bounds_memory():
    """The rules of obs_utils.throttle: halve on SlowDown (never below one), one more after as
    many successes as the limit, and no second request while the bytes would pass the budget
    (a lone request of any size still goes)."""
    import threading

    from obs_utils.throttle import Throttle

    throttle = Throttle(8, memory_budget=100)
    for expected in (4, 2, 1, 1):
        throttle.slowed()
        assert throttle.limit == expected
    grown = []
    for _ in range(1 + 2 + 3):  # 1 success at limit 1, 2 at limit 2, 3 at limit 3
        with throttle.slot(10):
            pass
        grown.append(throttle.limit)
    assert grown == [2, 2, 3, 3, 3, 4] and throttle.lowest == 1

    entered = threading.Event()
    with throttle.slot(150):  # over the budget alone: it goes
        second = threading.Thread(target=lambda: (throttle.acquire(10), entered.set()))
        second.start()
        assert not entered.wait(0.3)  # 150 + 10 > 100: waits for the first to finish
    assert entered.wait(5)
    throttle.release(10, succeeded=True)
    second.join()


def test_a_kept_connection_the_server_dropped_is_replaced_without_a_retry_of_the_file(
        seaweed, clean_storage_env, tmp_path, monkeypatch):
    """A store closes idle kept-alive connections (its idle timeout) without warning: the next
    request on one fails before it is read, and goes again at once on a new connection,
    not through the file's retry with backoff."""
    from obs_utils import tree

    seaweed.client().create_bucket(Bucket="dropped")
    proxy = StoreProxy(seaweed.url, drop_idle=True)
    retried = []
    monkeypatch.setattr(tree, "_pause", lambda failures: retried.append(failures) or 0)
    try:
        _through(clean_storage_env, proxy, seaweed)
        files = _small_tree(tmp_path / "src", 40)
        obs_utils.copy_tree(str(tmp_path / "src"), "obs://dropped/d/", threads=2)
        obs_utils.copy_tree("obs://dropped/d/", str(tmp_path / "back"), threads=2)
        assert read_tree(tmp_path / "back") == files
        assert proxy.counts["PUT"] == len(files) and retried == []
    finally:
        proxy.stop()


def test_https_endpoints_check_the_certificate_unless_told_not_to(
        seaweed, clean_storage_env, tmp_path):
    """OBS is HTTPS: small files go over TLS; a certificate the bundle does not vouch for (here
    self-signed) is refused with one clear line, and S3_VERIFY_SSL=0 lets it through."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    seaweed.client().create_bucket(Bucket="tls")
    proxy = StoreProxy(seaweed.url, tls=(str(cert), str(key)))
    try:
        _through(clean_storage_env, proxy, seaweed)
        clean_storage_env.setenv("OBS_MAX_ATTEMPTS", "1")
        files = _small_tree(tmp_path / "src", 5)
        with pytest.raises(obs_utils.ObsError, match="certificate") as caught:
            obs_utils.copy_tree(str(tmp_path / "src"), "obs://tls/t/")
        assert "S3_VERIFY_SSL=0" in str(caught.value) and "\n" not in str(caught.value)
        with pytest.raises(botocore.exceptions.SSLError):  # the small files' own connections
            get_signed().put("tls", "t/x", b"x")
        clean_storage_env.setenv("S3_VERIFY_SSL", "0")
        obs_utils.copy_tree(str(tmp_path / "src"), "obs://tls/t/")
        obs_utils.copy_tree("obs://tls/t/", str(tmp_path / "back"))
        assert read_tree(tmp_path / "back") == files and proxy.counts["PUT"] == len(files)
    finally:
        proxy.stop()


def test_small_files_go_through_the_proxy_the_environment_names(
        seaweed, clean_storage_env, tmp_path):
    """HTTP_PROXY (and the rest of the proxy variables) are honoured by the small files' own
    requests as by boto3's: behind a corporate proxy every request goes through it."""
    seaweed.client().create_bucket(Bucket="proxied")
    proxy = StoreProxy(seaweed.url)
    try:
        _through(clean_storage_env, seaweed, seaweed)  # the endpoint itself, reached via proxy
        for name in ("HTTP_PROXY", "http_proxy"):
            clean_storage_env.setenv(name, proxy.url)
        for name in ("NO_PROXY", "no_proxy"):
            clean_storage_env.delenv(name, raising=False)
        files = _small_tree(tmp_path / "src", 6)
        obs_utils.copy_tree(str(tmp_path / "src"), "obs://proxied/p/")
        obs_utils.copy_tree("obs://proxied/p/", str(tmp_path / "back"))
        assert read_tree(tmp_path / "back") == files
        assert proxy.counts == {"PUT": 6, "GET": 6 + 2} and proxy.forwarded == 6 + 6 + 2
    finally:
        proxy.stop()


def test_a_listing_longer_than_one_page_is_read_to_its_end(bucket, tmp_path):
    """ListObjectsV2 answers 1,000 keys a page: a folder of 1,050 files is listed, copied and
    re-copied (nothing sent) whole."""
    files = _small_tree(tmp_path / "src", 1050, size=10)
    url = f"obs://{bucket}/many/"
    assert obs_utils.copy_tree(str(tmp_path / "src"), url).copied == 1050
    assert len(obs_utils.listdir(url, recursive=True)) == 1050
    assert obs_utils.listdir(url) == [f"c{i}" for i in range(7)]
    assert obs_utils.copy_tree(url, str(tmp_path / "back")).copied == 1050
    assert obs_utils.copy_tree(str(tmp_path / "src"), url).skipped == 1050
    assert read_tree(tmp_path / "back") == files


def test_a_large_file_replaced_mid_download_is_refused_not_mixed(
        seaweed, clean_storage_env, tmp_path):
    """A large object comes down as ranged GETs, each asked of the version the listing saw
    (If-Match its ETag): parts of an object replaced meanwhile are refused, the copy says
    what happened, and no file is left half old, half new."""
    from obs_utils import s3

    seaweed.client().create_bucket(Bucket="replaced")
    proxy = StoreProxy(seaweed.url)
    try:
        _through(clean_storage_env, proxy, seaweed)
        obs_utils.write_bytes("obs://replaced/big.bin", os.urandom(BIG))
        listed = next(s3.iter_objects("replaced", "big.bin"))
        target = tmp_path / "big.bin"
        s3.download("replaced", listed, str(target), threads=4)
        assert target.read_bytes() == obs_utils.read_bytes("obs://replaced/big.bin")
        assert proxy.counts["GET"] >= 1 + 2  # the listing and two 8 MiB parts

        obs_utils.write_bytes("obs://replaced/big.bin", os.urandom(BIG))  # a new version
        fresh = tmp_path / "fresh.bin"
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            s3.download("replaced", listed, str(fresh), threads=4)
        message = str(obs_utils.errors.translate(caught.value, "obs://replaced/big.bin"))
        assert "changed while it was being copied" in message and "run the same" in message
        assert not fresh.exists() and not [p for p in tmp_path.iterdir()
                                           if p.name.startswith(".obs-tmp-")]
    finally:
        proxy.stop()


def test_single_requests_are_retried_up_to_obs_max_attempts(seaweed, clean_storage_env, tmp_path):
    """Outside a tree copy a small file's GET is retried as the boto3 client retries: a store
    failing twice with 500 InternalError is ridden out with the default OBS_MAX_ATTEMPTS (5)
    and not with OBS_MAX_ATTEMPTS=2, which then says the endpoint kept failing."""
    seaweed.client().create_bucket(Bucket="flaky")
    proxy = StoreProxy(seaweed.url)
    try:
        _through(clean_storage_env, proxy, seaweed)
        obs_utils.write_bytes("obs://flaky/a.bin", b"payload")
        proxy.fail["GET"] = 2
        obs_utils.copy("obs://flaky/a.bin", str(tmp_path / "a.bin"))
        assert (tmp_path / "a.bin").read_bytes() == b"payload" and proxy.fail["GET"] == 0
        clean_storage_env.setenv("OBS_MAX_ATTEMPTS", "2")
        proxy.fail["GET"] = 2
        with pytest.raises(obs_utils.EndpointError, match="500 InternalError"):
            obs_utils.copy("obs://flaky/a.bin", str(tmp_path / "b.bin"))
        assert not (tmp_path / "b.bin").exists()
    finally:
        proxy.stop()


def test_a_result_put_as_the_last_worker_ends_is_still_taken():
    """The window CI once hit (the proxy test: "the copy's threads all stopped"): the wait
    for a result times out, then the last worker puts its result and ends before the
    workers are looked at. The result is in the queue: it must be taken, not an error."""
    import queue
    import threading

    from obs_utils.tree import ObsError, _next_result

    class LateQueue(queue.SimpleQueue):
        """A queue whose item arrives just after a timed wait on it gave up."""

        def get(self, block=True, timeout=None):
            if self.empty():
                self.put(("job", "copied", None))  # what the worker does as the wait ends
                raise queue.Empty
            return super().get(block, timeout)

    ended = threading.Thread(target=lambda: None)
    ended.start()
    ended.join()
    assert _next_result(LateQueue(), [ended]) == ("job", "copied", None)
    with pytest.raises(ObsError, match="threads all stopped before the copy was done"):
        _next_result(queue.SimpleQueue(), [ended])  # nothing came: still the error
