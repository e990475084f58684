"""submit.py: the code folder it packs and uploads (to the moto S3 server)."""
import json
import os
import re
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


def test_upload_sends_only_what_changed_and_deletes_nothing(bucket, tmp_path):
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
    assert obs_utils.read_text(url + "train.py").endswith("# changed\n")
    assert obs_utils.exists(url + "inputs/demo.py")  # code_url may hold the user's files


@pytest.fixture
def cloud(clean_storage_env, monkeypatch):
    from tests.fake_modelarts import FakeModelArts

    fake = FakeModelArts()
    monkeypatch.setenv("MODELARTS_ENDPOINT", fake.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("HUAWEICLOUD_SDK_AK", "AKEXAMPLE")
    monkeypatch.setenv("HUAWEICLOUD_SDK_SK", SECRET)
    monkeypatch.setenv("HUAWEICLOUD_SDK_PROJECT_ID", "proj123")
    yield fake
    fake.stop()


SECRET = "sk-very-secret-0123456789"


def train_flags(bucket):
    return ["train", f"--data_url=obs://{bucket}/data/", f"--train_url=obs://{bucket}/out/",
            "--flavor=modelarts.vm.cpu.8u", "--engine=TensorFlow+tensorflow_2.6.0",
            "--interval=0", "--max_epochs=3", "--backbone=resnet50"]


def test_train_uploads_creates_and_follows_a_job_to_completion(cloud, bucket, capsys, caplog,
                                                               moto_server, monkeypatch):
    import submit
    from tests.servers import point_at

    point_at(monkeypatch, moto_server)
    assert submit.main([*train_flags(bucket), "--job_name=digits-1"]) == 0
    captured = capsys.readouterr()  # stdout, stderr (where the log goes) and the records
    out = captured.out + captured.err + caplog.text
    # a code folder of its own per job: a queued job never runs a sibling's later upload
    code = set(obs_utils.listdir(f"obs://{bucket}/code/digits-1/", recursive=True))
    assert "train.py" in code and not [n for n in code if n.startswith("tests/")]

    created = [r for r in cloud.requests if r["method"] == "POST"]
    assert [r["path"] for r in created] == ["/v2/proj123/training-jobs"]
    body = created[0]["body"]
    assert body["algorithm"]["boot_file"] == f"/{bucket}/code/digits-1/train.py"
    assert body["algorithm"]["engine"] == {"engine_name": "TensorFlow",
                                           "engine_version": "tensorflow_2.6.0"}
    assert body["algorithm"]["parameters"] == [{"name": "max_epochs", "value": "3"},
                                               {"name": "backbone", "value": "resnet50"}]
    assert body["algorithm"]["inputs"][0]["remote"]["obs"]["obs_url"] == f"/{bucket}/data/"
    assert body["spec"]["resource"] == {"flavor_id": "modelarts.vm.cpu.8u", "node_count": 1}
    for request in cloud.requests:  # signed by the SDK, never carrying the secret
        assert request["headers"]["Authorization"].startswith(
            "SDK-HMAC-SHA256 Access=AKEXAMPLE"), request
        assert SECRET not in json.dumps(request)
    assert SECRET not in out
    for phase in ("Creating", "Pending", "Running", "Completed"):
        assert out.count(f"[job-1] {phase}") == 1, out
    logged = [line for line in out.splitlines() if line.startswith("log line")]
    assert logged == [f"log line {i}" for i in range(len(logged))] and len(logged) >= 3

    # No --engine: the newest TensorFlow engine the API lists; --detach returns the id.
    flags = [f for f in train_flags(bucket) if not f.startswith("--engine")]
    assert submit.main([*flags, "--detach"]) == 0
    body = [r for r in cloud.requests if r["method"] == "POST"][-1]["body"]
    assert body["algorithm"]["engine"] == {"engine_name": "TensorFlow",
                                           "engine_version": "tensorflow_2.16.1"}
    assert capsys.readouterr().out.strip().endswith("job-1")

    # --each_fold: one job per fold of --kfold, side by side, sharing one code upload.
    before = len([r for r in cloud.requests if r["method"] == "POST"])
    assert submit.main([*train_flags(bucket), "--job_name=cv", "--kfold=3", "--each_fold"]) == 0
    bodies = [r["body"] for r in cloud.requests if r["method"] == "POST"][before:]
    assert [b["metadata"]["name"] for b in bodies] == ["cv-fold0", "cv-fold1", "cv-fold2"]
    for i, body in enumerate(bodies):
        assert body["algorithm"]["parameters"][-2:] == [{"name": "kfold", "value": "3"},
                                                        {"name": "fold", "value": str(i)}]
        assert body["algorithm"]["boot_file"] == f"/{bucket}/code/cv/train.py"
    assert capsys.readouterr().out.split() == ["job-1"] * 3  # the ids, one per line
    caplog.clear()
    assert submit.main([*train_flags(bucket), "--each_fold"]) == 2  # no --kfold
    assert "--each_fold needs --kfold=K" in capsys.readouterr().err + caplog.text


def test_a_failed_job_exits_1_and_a_wrong_flavor_is_answered_with_the_list(cloud, capsys):
    import submit

    cloud.phases, cloud.outages = ["Running", "Failed"], 2  # two 503s are ridden out
    assert submit.main(["logs", "job-1", "--follow", "--interval=0"]) == 1
    out = capsys.readouterr().out
    assert "the job ended Failed (worker-0 exit code 2: data error)" in out
    assert "log line 1" in out  # the last lines, at the end
    cloud.phases, cloud.no_log, cloud.polls = ["Failed"], True, 0  # failed before any log
    assert submit.main(["logs", "job-1", "--follow", "--interval=0"]) == 1
    assert submit.main(["train", "--data_url=obs://b/d/", "--train_url=obs://b/o/",
                        "--flavor=modelarts.vm.cpu.8u", "--dry-run"]) == 0
    assert "newest TensorFlow engine" in capsys.readouterr().out
    assert submit.main(["train", "--data_url=obs://b/d/", "--train_url=obs://b/o/",
                        "--flavor=huge", "--engine=eng-tf", "--dry-run"]) == 0  # not checked
    assert submit.main(["train", "--data_url=obs://b/d/", "--train_url=obs://b/o/",
                        "--flavor=huge", "--engine=eng-tf"]) == 2


def test_status_stop_dry_run_and_refused_keys(cloud, capsys, caplog, monkeypatch):
    import submit

    assert submit.main(["status", "job-1"]) == 0
    assert capsys.readouterr().out.strip() == "Creating"  # stdout: the status alone
    assert submit.main(["stop", "job-1"]) == 0
    assert cloud.requests[-1]["body"] == {"action_type": "terminate"}
    assert submit.main(["status", "job-1"]) == 0 and "Terminated" in capsys.readouterr().out

    sent = len(cloud.requests)
    assert submit.main(["train", "--data_url=obs://b/d/", "--train_url=obs://b/o/",
                        "--flavor=f", "--engine=e", "--dry-run", "--learning_rate=0.1",
                        "--flip=none"]) == 0
    out = capsys.readouterr().out
    assert "POST " in out and "/training-jobs" in out
    assert re.search(r'"boot_file": "/b/code/classifier-\d{8}-\d{6}/train.py"', out), out
    assert '"name": "learning_rate"' in out and '"name": "flip"' in out and "would upload" in out
    for command in (["logs", "job-1", "--follow"], ["stop", "job-1"], ["status", "job-1"]):
        assert submit.main([*command, "--dry-run", "--interval=0"]) == 0  # ends, sends nothing
    assert len(cloud.requests) == sent
    capsys.readouterr()
    assert submit.main(["logs", "job-1", "--task=worker-1", "--dry-run"]) == 0
    assert "/training-jobs/job-1/tasks/worker-1/logs/preview" in capsys.readouterr().out
    caplog.clear()
    assert submit.main(["train", "--data_url=obs://b/d/", "--train_url=obs://b/o/",
                        "--flavor=f", "--dry-run", "--lr=0.1"]) == 2  # a typo, caught here
    assert "train.py has no flag --lr" in caplog.text

    monkeypatch.setenv("HUAWEICLOUD_SDK_AK", "BAD")
    caplog.clear()
    assert submit.main(["status", "job-1"]) == 2
    assert "the keys were refused" in caplog.text and SECRET not in caplog.text
    monkeypatch.delenv("HUAWEICLOUD_SDK_SK")
    caplog.clear()
    assert submit.main(["status", "job-1"]) == 2
    assert "HUAWEICLOUD_SDK_SK not set" in caplog.text


def test_ctrl_c_asks_whether_to_stop_the_job(cloud, monkeypatch, capsys):
    import submit
    from jobs import training_job

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training_job, "follow", interrupted)
    for answer, stopped in (("n", False), ("y", True)):
        monkeypatch.setattr("builtins.input", lambda prompt, a=answer: a)
        assert submit.main(["logs", "job-1", "--follow"]) == 130
        assert cloud.stopped is stopped
    assert "stopping job-1" in capsys.readouterr().out


def test_deploy_checks_imports_and_deploys_the_package(cloud, bucket, demo_run, capsys,
                                                       caplog):
    import submit

    obs_utils.copy_tree(str(demo_run.out / "model"), f"obs://{bucket}/run/model/",
                        progress=False)
    assert submit.main(["deploy", f"--model_url=obs://{bucket}/run/",
                        "--flavor=modelarts.vm.cpu.2u", "--interval=0", "--name=digits"]) == 0
    posts = [r for r in cloud.requests if r["method"] == "POST"]
    assert [r["path"] for r in posts] == ["/v1/proj123/models", "/v1/proj123/services"]
    model = posts[0]["body"]
    assert model["source_location"] == f"/{bucket}/run/model"
    assert model["execution_code"] == f"/{bucket}/run/model/customize_service.py"
    assert (model["model_type"], model["runtime"]) == ("TensorFlow", json.load(open(
        demo_run.out / "model" / "config.json"))["runtime"])
    assert posts[1]["body"]["config"] == [{"model_id": "m-1", "weight": 100,
                                           "specification": "modelarts.vm.cpu.2u",
                                           "instance_count": 1}]
    out = capsys.readouterr().out
    assert "runs at https://infer.example/v1/infers/s-1" in out
    assert "curl -F images=@x.jpg" in out

    # A flavor that is not offered, or sold out, is refused with the list before any import.
    sent = len(cloud.requests)
    for flavor, words in (("modelarts.vm.cpu.64u", "is not offered"),
                          ("modelarts.vm.gpu.t4", "is sold out here")):
        caplog.clear()
        assert submit.main(["deploy", f"--model_url=obs://{bucket}/run/",
                            f"--flavor={flavor}"]) == 2
        assert f"--flavor={flavor} {words}" in caplog.text
        assert "the usable flavors are: modelarts.vm.cpu.2u" in caplog.text
    assert [r["method"] for r in cloud.requests[sent:]] == ["GET", "GET"]

    # A broken package is refused before anything reaches ModelArts.
    obs_utils.remove(f"obs://{bucket}/run/model/labels.json")
    sent = len(cloud.requests)
    caplog.clear()
    assert submit.main(["deploy", f"--model_url=obs://{bucket}/run/",
                        "--flavor=modelarts.vm.cpu.2u"]) == 2
    assert "fails the package check: labels.json is missing" in caplog.text
    assert len(cloud.requests) == sent


def test_log_tail_prints_each_line_once_as_the_window_moves():
    from jobs.training_job import LogTail

    full = "".join(f"line {i}\n" for i in range(200))
    for sizes in (True, False):  # exact offsets from full_size, or anchors without it
        tail, printed = LogTail(), []
        for end in range(5, len(full) + 1, 37):  # grows, cut mid-line, window of 300
            window = full[max(0, end - 300):end]
            printed += tail.new_lines(window, full_size=end if sizes else None)
        printed += tail.new_lines(full[-300:], final=True,
                                  full_size=len(full) if sizes else None)
        assert printed == [f"line {i}" for i in range(200)], sizes


def test_keys_credentials_and_outside_links_never_go_up(tmp_path, caplog):
    """What a careless code folder holds beside the bundle: Huawei Cloud's access-key
    download, an SSH key, a secrets file, weights, a log, a link to a file outside."""
    (tmp_path / "train.py").write_text("print('hi')\n")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "mylib").mkdir()
    (tmp_path / "mylib" / "__init__.py").write_text("")
    (tmp_path / "mylib" / "credentials.py").write_text("AK = 'x'\n")
    for name in ("credentials.csv", "id_rsa", "secrets.yaml", "resnet50.h5", "nohup.out",
                 "notes.md"):
        (tmp_path / name).write_text("not for OBS")
    assert sorted(pack.code_files(tmp_path)) == ["config.json", "mylib/__init__.py", "train.py"]
    assert "mylib/credentials.py" in caplog.text  # said, for a module a job may need
    outside = tmp_path.parent / "bashrc"
    outside.write_text("export SECRET=1\n")
    (tmp_path / "helper.py").symlink_to(outside)
    with pytest.raises(pack.PackError, match="outside the code folder"):
        pack.code_files(tmp_path)


def test_deploy_refuses_a_key_that_would_land_outside_its_folder(s3_env, bucket, tmp_path):
    """A key under model/ that climbs out ('run/model/../../../../x') is refused before
    anything is written: listdir hands back raw key suffixes, and the deploy check turned
    them into local paths unguarded."""
    from jobs import deploy

    client = s3_env.client()
    client.put_object(Bucket=bucket, Key="run/model/config.json", Body=b"{}")
    client.put_object(Bucket=bucket, Key="run/model/../../../../escaped.txt", Body=b"x")
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    with pytest.raises(obs_utils.ObsError, match="would land outside"):
        deploy.check_package(f"obs://{bucket}/run", str(work))
    assert not list(tmp_path.rglob("escaped.txt"))


IMAGE = "swr.cn-north-4.myhuaweicloud.com/team/classifier-train:0.5"


def test_train_in_a_custom_image_maps_obs_to_local_folders_and_its_command_runs(
        cloud, bucket, moto_server, monkeypatch, tmp_path):
    """--image: the v2 body names the image, maps each OBS input of train.py (a folder, or a
    weights file's folder) and train_url to ModelArts' local folders, and its boot command
    is one train.py ends: run here as the platform would (with /home/ma-user moved into
    tmp_path, the inputs 'downloaded' there), it trains and writes the package into the
    output folder the platform uploads."""
    import subprocess
    import sys

    import submit
    from jobs import training_job
    from tests.servers import point_at
    from tests.test_train_job import SMALL, digits_folder

    point_at(monkeypatch, moto_server)
    assert submit.main(["train", f"--image={IMAGE}", f"--data_url=obs://{bucket}/data/",
                        f"--train_url=obs://{bucket}/out/", "--flavor=modelarts.vm.cpu.8u",
                        f"--pretrained_weights=obs://{bucket}/weights/w.weights.h5",
                        "--max_epochs=1", "--early_stop_patience=0", *SMALL, "--detach",
                        "--interval=0", "--job_name=digits-2"]) == 0
    body = [r for r in cloud.requests if r["method"] == "POST"][-1]["body"]
    algorithm = body["algorithm"]
    assert algorithm["engine"] == {"image_url": IMAGE} and "boot_file" not in algorithm
    assert algorithm["inputs"] == [
        {"name": "data_url", "local_dir": "/home/ma-user/modelarts/inputs/data_url_0",
         "remote": {"obs": {"obs_url": f"/{bucket}/data/"}}},
        {"name": "pretrained_weights_folder",
         "local_dir": "/home/ma-user/modelarts/inputs/pretrained_weights_folder_0",
         "remote": {"obs": {"obs_url": f"/{bucket}/weights/"}}}]
    assert algorithm["outputs"] == [
        {"name": "train_url", "local_dir": "/home/ma-user/modelarts/outputs/train_url_0",
         "remote": {"obs": {"obs_url": f"/{bucket}/out/"}}}]
    assert algorithm["command"].startswith(
        "cd /home/ma-user && /home/ma-user/venv/bin/python ${MA_JOB_DIR}/digits-2/train.py ")

    # The platform's side, here: code in $MA_JOB_DIR/code, inputs in their local folders.
    home = tmp_path / "home"
    job_dir = home / "modelarts" / "user-job-dir"
    for name in pack.code_files(ROOT):
        (job_dir / "digits-2" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(ROOT, name), job_dir / "digits-2" / name)
    digits_folder(home / "modelarts" / "inputs" / "data_url_0", count=40, broken=False)
    from models import build

    model, backbone = build.build_classifier("mobilenetv3small", 10, 32)
    weights = home / "modelarts" / "inputs" / "pretrained_weights_folder_0" / "w.weights.h5"
    weights.parent.mkdir(parents=True)
    backbone.save_weights(str(weights))
    (home / "venv" / "bin").mkdir(parents=True)
    wrapper = home / "venv" / "bin" / "python"  # not a symlink: a virtualenv's python found
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # by one loses its venv
    wrapper.chmod(0o755)
    command = algorithm["command"].replace(training_job.HOME, str(home))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBS_", "AWS_", "S3_"))}
    env["MA_JOB_DIR"] = str(job_dir)
    proc = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "loaded" in proc.stdout and "w.weights.h5" in proc.stdout  # the mapped file
    assert (home / "modelarts" / "outputs" / "train_url_0" / "model" / "saved_model.pb").is_file()

    assert submit.main(["train", f"--image={IMAGE}", "--engine=eng-tf",
                        f"--data_url=obs://{bucket}/data/", f"--train_url=obs://{bucket}/out/",
                        "--flavor=modelarts.vm.cpu.8u"]) == 2


def test_deploy_a_custom_serving_image(cloud, capsys):
    import submit

    image = "swr.cn-north-4.myhuaweicloud.com/team/classifier-serve:0.5"
    assert submit.main(["deploy", f"--image={image}", "--flavor=modelarts.vm.cpu.2u",
                        "--interval=0", "--name=digits"]) == 0
    posts = [r for r in cloud.requests if r["method"] == "POST"]
    assert [r["path"] for r in posts] == ["/v1/proj123/models", "/v1/proj123/services"]
    model = posts[0]["body"]
    assert (model["model_type"], model["source_location"], model["model_name"]) == (
        "Image", image, "digits")
    assert model["health"]["url"] == "/health" and "execution_code" not in model
    assert "runs at https://infer.example/v1/infers/s-1" in capsys.readouterr().out
