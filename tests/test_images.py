"""The ModelArts custom images (images/): no Docker daemon here, so each Dockerfile is parsed
and held to the platform's image rules, and the serving image's boot script is run as the
container would run it, against the demo package."""
import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import requests
from dockerfile_parse import DockerfileParser

from tests.images import digit_image, encode
from tests.servers import ROOT, free_port

IMAGES = os.path.join(ROOT, "images")
SECRET_NAME = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD|_AK|_SK)$", re.IGNORECASE)


def parsed(name):
    return DockerfileParser(os.path.join(IMAGES, name, "Dockerfile"))


def instructions(dockerfile, kind):
    return [s["value"] for s in dockerfile.structure if s["instruction"] == kind]


@pytest.mark.parametrize("name", ["train", "serve"])
def test_each_dockerfile_follows_the_platforms_image_rules(name):
    dockerfile = parsed(name)
    assert dockerfile.baseimage in ("python:3.11-slim-bookworm", "python:3.11-slim")
    runs = " ".join(instructions(dockerfile, "RUN"))
    assert "useradd -d /home/ma-user -m -u 1000 -g 100" in runs  # ma-user, uid 1000 / gid 100
    assert instructions(dockerfile, "USER")[-1] in ("ma-user", "1000")
    assert instructions(dockerfile, "WORKDIR")[-1] == "/home/ma-user"
    assert not instructions(dockerfile, "ENTRYPOINT")  # the platform's boot command runs
    for key, value in dockerfile.envs.items():
        assert not SECRET_NAME.search(key), f"{name}: ENV {key} looks like a secret"
    # every file it copies from the build context exists (the served package, ./model, is the
    # user's: train.py's output, named in the build command's comment)
    for value in instructions(dockerfile, "COPY"):
        sources = [w for w in value.split()[:-1] if not w.startswith("--")]
        for source in sources:
            assert source == "model" or os.path.exists(os.path.join(ROOT, source)), source
    # the requirement files it installs are the repository's, and TensorFlow is >= 2.16
    for path in re.findall(r"-r /tmp/([\w.-]+)", runs):
        assert os.path.isfile(os.path.join(ROOT, path)), path
    installs = runs + "".join(open(os.path.join(ROOT, p)).read()
                              for p in re.findall(r"-r /tmp/([\w.-]+)", runs))
    assert re.search(r"tensorflow(-cpu|\[and-cuda\])?~=2\.(1[6-9]|[2-9]\d)", installs), name
    if name == "serve":
        assert instructions(dockerfile, "EXPOSE") == ["8080"]
        assert dockerfile.envs["PORT"] == "8080"
        assert dockerfile.envs["MODEL_DIR"] == "/home/mind/model"  # where ModelArts puts it
        assert "/health" in " ".join(instructions(dockerfile, "HEALTHCHECK"))
        assert "boot.sh" in instructions(dockerfile, "CMD")[-1]
    else:
        assert "pip-requirements.txt" in runs and "/home/ma-user/venv" in runs
        from jobs import training_job  # the interpreter submit.py's boot command names
        assert training_job.IMAGE_PYTHON.startswith("/home/ma-user/venv/bin/")


def test_the_serving_boot_script_serves_the_demo_package(demo_run, tmp_path):
    """images/serve/boot.sh outside a container: the package from $MODEL_DIR, every
    interface, $PORT (8080 in the image; a free port here); /health, then a prediction.
    Without a package it stops with one line and exit status 2."""
    shutil.copytree(demo_run.out / "model", tmp_path / "model")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(MODEL_DIR=str(tmp_path / "model"), PORT=str(port),
               PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""))
    app = tmp_path / "app"  # the image's layout: the server and boot.sh side by side
    shutil.copytree(os.path.join(ROOT, "serving"), app / "serving",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(os.path.join(ROOT, "customize_service.py"), app)
    shutil.copy(os.path.join(IMAGES, "serve", "boot.sh"), app)
    log = open(tmp_path / "boot.log", "w+")
    proc = subprocess.Popen(["bash", str(app / "boot.sh")], env=env, cwd=tmp_path,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.time() + 180
        while True:
            try:
                if requests.get(url + "/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None and time.time() < deadline, open(
                tmp_path / "boot.log").read()
            time.sleep(0.3)
        image, _ = digit_image(7, 40)
        reply = requests.post(url + "/", files={"images": ("d.jpg", encode(image))},
                              timeout=60)
        assert reply.status_code == 200 and reply.json()["result"], reply.text
        assert "0.0.0.0" in open(tmp_path / "boot.log").read()  # every interface
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()

    env["MODEL_DIR"] = str(tmp_path / "nothing")
    proc = subprocess.run(["bash", str(app / "boot.sh")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "holds no saved_model.pb" in proc.stderr
