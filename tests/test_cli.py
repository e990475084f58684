"""The boot files' command lines as a newcomer meets them: --help and a bad flag answered at
once, without importing TensorFlow, a bad flag in one line, every default said once."""
import re
import subprocess
import sys

import pytest

from tests.servers import ROOT

BOOT_FILES = ["train.py", "retrieve.py", "customize_service.py", "submit.py"]


def run(*args):
    return subprocess.run([sys.executable, "-X", "importtime", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def imported(proc):
    """Module names in `python -X importtime`'s report (written to standard error)."""
    return {line.split("|")[-1].strip() for line in proc.stderr.splitlines()
            if line.startswith("import time:")}


@pytest.mark.parametrize("boot_file", BOOT_FILES)
def test_help_is_answered_without_tensorflow(boot_file):
    proc = run(boot_file, "--help")
    assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stdout + proc.stderr
    assert not {"tensorflow", "keras"} & imported(proc)


@pytest.mark.parametrize("argv, words", [
    (["train.py", "--backbone=resnet51"],
     ["--backbone", "'resnet51'", "'resnet50'", "see train.py --help"]),
    (["train.py", "--max_epochs=abc"], ["--max_epochs", "expected a whole number >= 1",
                                        "'abc'"]),
    (["train.py", "--backbone_lr_mult=0"], ["--backbone_lr_mult", "expected a number above 0",
                                           "'0'"]),
    (["train.py", "--unfreeze_every=-1"], ["--unfreeze_every", "expected a whole number >= 0",
                                           "'-1'"]),
    (["retrieve.py", "index", "--top_k=0"], ["--top_k", "'0'", "see retrieve.py --help"]),
    (["customize_service.py", "--port=abc"], ["--port", "'abc'"]),
    (["submit.py", "nosuch"], ["'nosuch'", "'train'", "see submit.py --help"]),
])
def test_a_bad_flag_is_one_line_without_tensorflow(argv, words):
    proc = run(*argv)
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert not {"tensorflow", "keras"} & imported(proc)


def _option_blocks(parser):
    """Each --flag's block of `parser`'s help, on one line."""
    text = parser.format_help().split("options:", 1)[1]
    blocks = [" ".join(b.split()) for b in re.split(r"\n  (?=--)", text)]
    return [b for b in blocks if b.startswith("--") and not b.startswith("--help")]


def test_train_help_shows_every_default_once_and_the_demos_own_values():
    import flags
    import retrieve

    import customize_service
    import submit

    for parser in (flags.build_parser(), retrieve.build_parser(), submit.build_parser(),
                   customize_service.build_parser()):
        blocks = {block.split()[0].rstrip(","): block for block in _option_blocks(parser)}
        valued = [a for a in parser._actions if a.option_strings and a.nargs != 0]
        for action in valued:  # every flag that takes a value; switches have no default
            block = blocks[action.option_strings[0]]
            assert block.count("default") == 1, block
    text = flags.build_parser().format_help()
    assert re.search(r"--max_epochs .*\(default: 30; demo: 8\)", " ".join(text.split()))
    assert re.search(r"--backbone .*\(default: resnet50; demo: mobilenetv3small\)",
                     " ".join(text.split()))
    assert re.search(r"--head .*\(default: softmax; --task=retrieval: subcenter_arcface\)",
                     " ".join(text.split()))


def test_task_retrieval_sets_its_flags_where_the_user_left_them_unset():
    import config
    import flags

    parsed, _ = flags.parse_args(["--data_url=d", "--task=retrieval", "--head=cosface"])
    assert (parsed.head, parsed.head_scale, parsed.pooling, parsed.embedding_dim) == \
        ("cosface", 16.0, "gem", 128)  # --head given, the rest from the task
    run = config.from_flags(parsed, {})
    assert (run.task, run.model.head, run.model.pooling) == ("retrieval", "cosface", "gem")
    plain, _ = flags.parse_args(["--data_url=d"])
    assert (plain.task, plain.head, plain.pooling, plain.embedding_dim) == \
        ("classification", "softmax", "avg", 0)
    demo, _ = flags.parse_args(["--task=retrieval"])  # the demo's settings and the task's
    assert (demo.backbone, demo.head, demo.embedding_dim) == \
        ("mobilenetv3small", "subcenter_arcface", 128)


def test_the_flag_tables_name_what_the_code_implements():
    """flags.py names the choices itself (so --help needs no TensorFlow): each list must be
    what the implementing module offers, or a flag would be refused or crash later."""
    import flags
    from evaluation import label_issues
    from inputs import augment, balance, screening, tta
    from models import backbones, build, heads, losses, run_weights
    from training import distribute, optim

    assert list(flags.BACKBONES) == list(backbones.BACKBONES)
    assert list(flags.HEADS) == list(heads.HEADS)
    assert list(flags.POOLINGS) == list(build.POOLINGS)
    assert list(flags.AUGMENT_PRESETS) == list(augment.PRESETS)
    assert [name for name, _ in flags.AUGMENT_OPS] == list(augment.DEFAULTS)
    assert list(flags.BALANCE_POLICIES) == list(balance.POLICIES)
    assert list(flags.SAMPLERS) == list(balance.SAMPLERS)
    assert list(flags.OPTIMIZERS) == list(optim.OPTIMIZERS)
    assert list(flags.SCHEDULES) == list(optim.SCHEDULES)
    assert list(flags.LOSSES) == list(losses.ALLOWED)
    assert list(flags.MONITORS) == list(run_weights.MONITORS)
    assert list(flags.TTA) == list(tta.CHOICES)
    assert list(flags.CLEAN_RULES) == ["auto", *label_issues.RULES]
    assert (flags.MAX_IMAGE_PIXELS, flags.MIN_IMAGE_SIDE, flags.WORKER_PORT) == \
        (screening.MAX_PIXELS, screening.MIN_SIDE, distribute.DEFAULT_PORT)
