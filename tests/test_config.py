"""The typed configuration: every flag of train.py lands in exactly one stage's part (a flag
the config forgot would be parsed and then silently ignored), with the value given."""
import argparse
import dataclasses

import config
import flags


def _flag_names():
    return {action.dest for action in flags.build_parser()._actions
            if not isinstance(action, argparse._HelpAction)}


def test_every_flag_is_read_by_the_config_and_nothing_else_is_invented():
    """The per-op augmentation flags (--zoom, --cutmix_prob, ...) enter as feed.augmentation,
    the preset with them applied; every other flag is a field of its own."""
    from inputs import augment

    assert _flag_names() == config.used_flags() | set(augment.DEFAULTS)

    import train

    run = train.configure(flags.parse_args(["--data_url=d", "--augment=light",
                                            "--zoom=0.33"])[0])
    assert run.feed.augmentation["zoom"] == 0.33  # the override
    assert run.feed.augmentation["flip"] == "horizontal"  # the preset's own


def test_each_flag_reaches_its_stage_with_the_value_given():
    parsed, _ = flags.parse_args(["--data_url=d", "--batch_size=7", "--learning_rate=0.25",
                                  "--backbone=mobilenetv3small", "--runtime=tf2.1",
                                  "--top_k=3", "--seed=11", "--head_margin=0.2"])
    run = config.from_flags(parsed, {"flip": "none"})
    assert (run.feed.batch_size, run.fit.learning_rate, run.model.backbone) == \
        (7, 0.25, "mobilenetv3small")
    assert (run.export.runtime, run.eval.top_k, run.model.head_margin) == ("tf2.1", 3, 0.2)
    assert run.data.seed == run.fit.seed == 11  # the split and the batches draw from one seed
    assert run.feed.augmentation == {"flip": "none"}
    saved = config.as_dict(run)
    assert set(saved) >= {"data", "feed", "model", "fit", "export", "eval"}
    assert saved["fit"]["learning_rate"] == 0.25
    try:
        run.fit.learning_rate = 1.0  # handed down, never changed on the way
    except dataclasses.FrozenInstanceError:
        pass
    else:
        raise AssertionError("the config must be frozen")


def test_every_retrieve_flag_is_in_its_config():
    import retrieve

    parser = retrieve.build_parser()
    names = {a.dest for a in parser._actions if not isinstance(a, argparse._HelpAction)}
    assert names == {f.name for f in dataclasses.fields(config.RetrievalConfig)}
    run = config.retrieval_from_flags(parser.parse_args(["search", "--top_k=3",
                                                         "--search=hnsw"]))
    assert (run.command, run.top_k, run.search) == ("search", 3, "hnsw")
