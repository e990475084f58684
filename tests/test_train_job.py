"""train.py as ModelArts runs it: a subprocess with --key=value flags and obs:// URLs against
the moto S3 server. (Training itself comes later; this covers the stages that exist.)"""
import json
import os
import subprocess
import sys

import obs_utils
from tests.images import broken_files, digit_image, encode, write_garbage_layout
from tests.servers import ROOT


def run_train(*flags, timeout=300):
    return subprocess.run([sys.executable, "train.py", *flags], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=timeout)


def test_data_stage_over_obs_urls(bucket, tmp_path):
    items = []
    for i in range(40):
        image, label = digit_image(i, 20)
        items.append((f"img_{i}.jpg", encode(image), label))
    broken = broken_files(20)
    items += [(name, data, 0) for name, (data, _) in broken.items() if name != "huge.png"]
    write_garbage_layout(tmp_path / "data", items)
    obs_utils.copy_tree(str(tmp_path / "data"), f"obs://{bucket}/garbage/train_data/")

    flags = [f"--data_url=obs://{bucket}/garbage/train_data/",
             f"--train_url=s3://{bucket}/out/", f"--local_data_root={tmp_path / 'cache'}",
             "--input_size=16", "--batch_size=8", "--augment=light", "--num_gpus=1",
             "--task_index=0"]
    proc = run_train(*flags)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ignoring flags this job does not know" in proc.stdout
    assert "--num_gpus=1 --task_index=0" in proc.stdout
    assert "input pipeline ready: batches of (8, 16, 16, 3) images" in proc.stdout
    assert "truncated or corrupt image" in proc.stdout and "not an image" in proc.stdout

    outputs = obs_utils.listdir(f"obs://{bucket}/out")
    assert {"labels.json", "run_config.json", "screening_report.json",
            "split.json"} <= set(outputs)
    report = json.loads(obs_utils.read_text(f"obs://{bucket}/out/screening_report.json"))
    assert report["problem_counts"]["empty file"] == 1
    config = json.loads(obs_utils.read_text(f"obs://{bucket}/out/run_config.json"))
    assert config["flags"]["input_size"] == 16 and config["ignored_flags"] == flags[-2:]
    split_before = obs_utils.read_text(f"obs://{bucket}/out/split.json")

    # The same job started again (a ModelArts restart) keeps its validation set,
    # even when asked for another ratio and seed.
    proc = run_train(*flags[:3], "--input_size=16", "--val_ratio=0.5", "--seed=9")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "split: reusing" in proc.stdout
    assert obs_utils.read_text(f"obs://{bucket}/out/split.json") == split_before


def test_bad_input_is_one_clear_line_and_exit_2(tmp_path, clean_storage_env):
    empty = tmp_path / "only_text"
    empty.mkdir()
    (empty / "readme.md").write_text("no images here")
    for flags, expected in (
            ([f"--data_url={empty}"], "cannot tell how the data"),
            ([f"--data_url={tmp_path / 'missing'}"], "no such local folder"),
            (["--data_url=obs://"], "names no bucket"),
            ([f"--data_url={tmp_path}", "--balance=everything"], "invalid choice")):
        proc = run_train(*flags, f"--train_url={tmp_path / 'out'}",
                         f"--local_data_root={tmp_path / 'cache'}")
        assert proc.returncode == 2, (flags, proc.stdout, proc.stderr)
        assert expected in proc.stdout + proc.stderr, flags
        assert "Traceback" not in proc.stdout + proc.stderr, flags
