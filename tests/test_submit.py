"""submit.py: the code folder it packs and uploads (to the moto S3 server)."""
import shutil

import pytest

import obs_utils
from jobs import pack
from tests.servers import ROOT


def test_the_packed_code_is_what_a_job_needs():
    files = pack.code_files(ROOT)
    assert {"train.py", "customize_service.py", "config.json", "pip-requirements.txt",
            "obs_utils/api.py", "serving/check.py", "training/loop.py"} <= set(files)
    assert not [f for f in files if f.split("/")[0] in ("tests", "bench", "outputs", ".git",
                                                        ".ci")], files
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    assert "requirements-test.txt" not in files
    assert pack.check_limits(ROOT, files) < pack.ADVISED_BYTES


def test_limits_and_data_are_refused_or_left_out(tmp_path):
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("a label")
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff")
    assert pack.code_files(tmp_path) == ["train.py"]
    (tmp_path / "many").mkdir()
    for i in range(pack.MAX_FILES):
        (tmp_path / "many" / f"{i}.py").write_text("")
    with pytest.raises(pack.PackError, match="over ModelArts' limit of 1000"):
        pack.check_limits(tmp_path, pack.code_files(tmp_path))
    with pytest.raises(pack.PackError, match="holds no train.py"):
        pack.check_limits(tmp_path / "many", pack.code_files(tmp_path / "many"))


def test_upload_sends_only_what_changed_and_mirrors_removals(bucket, tmp_path):
    code = tmp_path / "code"
    shutil.copytree(ROOT, code, ignore=shutil.ignore_patterns(".git", "tests", "bench",
                                                              "outputs", "__pycache__"))
    url = f"obs://{bucket}/code/"
    files = pack.code_files(code)
    first = pack.upload(code, files, url, str(tmp_path / "stage"))
    assert first.copied == len(files)
    (code / "train.py").write_text((code / "train.py").read_text() + "\n# changed\n")
    (code / "inputs" / "demo.py").unlink()
    second = pack.upload(code, pack.code_files(code), url, str(tmp_path / "stage"))
    assert second.copied == 1
    names = set(obs_utils.listdir(url, recursive=True))
    assert "inputs/demo.py" not in names and "train.py" in names
