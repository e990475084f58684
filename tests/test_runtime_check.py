"""The boot files on a runtime too old for them (ModelArts' preset TensorFlow image is 2.1 on
Python 3.7): one line saying what is too old and what to do, exit status 2, no traceback."""
import os
import subprocess

import pytest

import runtime_check
from tests import runtimes
from tests.servers import ROOT


PYTHON37 = runtimes.python37()


@pytest.mark.skipif(PYTHON37 is None, reason="no Python 3.7 interpreter on this machine "
                    "(pyenv's 3.7 is where the check is proven)")
@pytest.mark.parametrize("program, expected", [
    ("train.py", "train.py cannot run here: Python 3.7 (it needs >= 3.10)"),
    ("retrieve.py", "retrieve.py cannot run here: Python 3.7 (it needs >= 3.10)"),
    ("submit.py", "submit.py cannot run here: Python 3.7 (it needs >= 3.10)")])
def test_python37_gets_one_line_not_a_traceback(program, expected):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run([PYTHON37, program, "--data_url=obs://bucket/data/"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(expected), lines
    assert "Traceback" not in proc.stderr


def test_an_old_tensorflow_is_named_with_what_to_do(monkeypatch, capsys):
    assert runtime_check.problems((3, 11), "2.21.0") == []
    assert runtime_check.problems((3, 12), "2.16.0rc1") == []
    assert runtime_check.problems((3, 11), "2.15.1") == [
        "TensorFlow 2.15.1 (it needs >= 2.16, with Keras 3)"]
    assert runtime_check.problems((3, 11), None) == [
        "no TensorFlow installed (it needs >= 2.16)"]
    assert runtime_check.problems((3, 7), None, needs_tensorflow=False) == [
        "Python 3.7 (it needs >= 3.10)"]
    # The ModelArts 2.6 inference runtime's TensorFlow, as a stand-in for the installed one.
    monkeypatch.setattr(runtime_check, "tensorflow_version", lambda: "2.6.0")
    with pytest.raises(SystemExit) as stopped:
        runtime_check.check("train.py")
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("train.py cannot run here: TensorFlow 2.6.0 (it needs >= 2.16") and \
        "custom image" in err and err.count("\n") == 1
    monkeypatch.setattr(runtime_check, "tensorflow_version", lambda: "2.21.0")
    runtime_check.check("train.py")  # this machine's: nothing to say
    assert capsys.readouterr().err == ""
