"""Image retrieval, the second boot file: embed a gallery into an HDF5 feature base, then
find each query's nearest gallery images (the DIGIX system).

    python retrieve.py index  --model_dir=<model/ or train_url> --data_url=<gallery> --index_url=<base.h5>
    python retrieve.py search --model_dir=... --index_url=<base.h5> --data_url=<queries> \\
        --top_k=10 --output_url=<folder>
    python retrieve.py package --model_dir=<model/> --index_url=<base.h5>   # serve the gallery

--index_url=milvus://HOST:PORT/COLLECTION (or a local PATH.db, milvus-lite) keeps the features
in Milvus instead of one HDF5 file, for galleries past one machine's memory.

Flags in train.py's style (--key=value; unknown ones are logged and ignored). Every URL may be
local, obs:// or s3://. With no flags, after `python train.py`: the demo model, the demo digits
and outputs/retrieval/. search writes results.csv (query,rank,gallery,score), submission.csv
(the contest's line per query) and, when queries and gallery carry labels, metrics.json.
"""
import logging
import os
import sys

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)  # ModelArts runs the boot file from another working directory
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import runtime_check  # noqa: E402

runtime_check.check("retrieve.py")  # one line on an old Python/TensorFlow

import obs_utils  # noqa: E402
import config  # noqa: E402 - the typed configuration the stage is handed
from cli import (ArgumentParser, RawDescriptionHelpFormatter, boolean,  # noqa: E402
                 import_tensorflow, positive, run_job, setup_logging)
from errors import UserError  # noqa: E402
from inputs import fetch  # noqa: E402

log = logging.getLogger("retrieve")


def build_parser():
    parser = ArgumentParser(prog="retrieve.py", description=__doc__.splitlines()[0],
                            allow_abbrev=False, formatter_class=RawDescriptionHelpFormatter,
                            epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("command", choices=["index", "search", "package"],
                        help="index a gallery, search it with queries, or put it in a package")
    parser.add_argument("--model_dir", default=os.path.join("outputs", "demo"),
                        help="a model package (model/) or a train_url holding one (default: "
                             "what `python train.py` left)")
    parser.add_argument("--data_url", default="", help="index: the gallery; search: the "
                        "queries (default: the built-in demo digits)")
    parser.add_argument("--index_url", default=os.path.join("outputs", "retrieval",
                                                            "gallery.h5"),
                        help="the feature base: an HDF5 file (.h5), a Milvus collection "
                             "(milvus://HOST:PORT/COLLECTION) or milvus-lite's local PATH.db")
    parser.add_argument("--data_format", default="auto",
                        choices=["auto", "garbage", "folders", "manifest", "unlabelled"],
                        help="auto: a labelled layout if the folder is one, else every image")
    parser.add_argument("--manifest", default=None,
                        help="manifest file, relative to data_url (--data_format=manifest)")
    parser.add_argument("--batch_size", type=positive, default=64, help="images per embedding "
                                                                        "batch")
    parser.add_argument("--local_data_root", default=None,
                        help="the local cache (default: /cache if writable, else "
                             "~/.cache/modelarts-classifier)")
    parser.add_argument("--rebuild", type=boolean, default=False,
                        help="index: embed everything again instead of only new images")
    parser.add_argument("--float16", type=boolean, default=False,
                        help="index: store features as float16 (half the size)")
    parser.add_argument("--embed_tta", default=None,
                        choices=["none", "flip", "multiscale", "crops"],
                        help="index: flip embeds each image and its mirror image and keeps "
                             "the mean; multiscale the image at three scales, sqrt(2) apart; "
                             "crops train.py --tta=crops' views (a package exported with it); "
                             "search and the served package embed queries as the base was "
                             "(default: what the base holds, else flip)")
    parser.add_argument("--whiten", type=boolean, default=False,
                        help="index: learn PCA whitening on the gallery and store it in the "
                             "base; search (and the served package) then whiten gallery and "
                             "queries alike")
    parser.add_argument("--whiten_dim", type=int, default=0,
                        help="index: principal axes kept (0: every one the gallery spans)")
    parser.add_argument("--whiten_power", type=float, default=0.5,
                        help="index: each axis scaled by variance^(-power/2): 1 whitens fully "
                             "(it scales up the noise of axes a small gallery barely spans), "
                             "0 only rotates")
    parser.add_argument("--top_k", type=positive, default=10,
                        help="search: results per query; package: what the service returns")
    parser.add_argument("--overwrite", type=boolean, default=False,
                        help="package: replace the gallery a package already serves")
    parser.add_argument("--search", default=None, choices=["exact", "hnsw", "ivf"],
                        help="search: exact (the default), or approximate through faiss (its "
                             "recall@10 against exact is logged); a Milvus base searches with "
                             "the index it was made with, which index picks by this flag")
    parser.add_argument("--query_expansion", type=int, default=0,
                        help="search: average each query with its first N results and search "
                             "again (alpha-QE; 0: off)")
    parser.add_argument("--qe_alpha", type=float, default=3.0,
                        help="search: alpha-QE's weight exponent")
    parser.add_argument("--database_augmentation", type=int, default=0,
                        help="search: average each gallery feature with its N nearest gallery "
                             "neighbours first (DBA; holds the gallery in memory; 0: off)")
    parser.add_argument("--dba_alpha", type=float, default=3.0,
                        help="search: DBA's weight exponent")
    parser.add_argument("--rerank", default="none", choices=["none", "kreciprocal"],
                        help="search: re-rank by k-reciprocal encoding (Zhong et al. 2017; "
                             "exact search only, queries + gallery at most 10,000 images)")
    parser.add_argument("--rerank_k1", type=positive, default=20,
                        help="search: k-reciprocal neighbours per image")
    parser.add_argument("--rerank_k2", type=positive, default=6,
                        help="search: neighbours averaged into each image's encoding")
    parser.add_argument("--rerank_lambda", type=float, default=0.3,
                        help="search: the original distance's share of the final one (0..1)")
    parser.add_argument("--output_url", default=os.path.join("outputs", "retrieval"),
                        help="search: where results.csv, submission.csv and metrics go")
    return parser


def main(argv=None):
    setup_logging()
    flags, unknown = build_parser().parse_known_args(argv)
    if unknown:
        log.warning("ignoring flags retrieve.py does not know: %s", " ".join(unknown))
    run = config.retrieval_from_flags(flags)
    import_tensorflow()  # after the flags parse, without its start-up banner
    from retrieval import package, stage

    def job():
        for flag in ("model_dir", "index_url"):
            if not getattr(run, flag):
                raise UserError(f"{run.command} needs --{flag}: python retrieve.py --help")
        cache_root = fetch.resolve_cache_root(run.local_data_root)
        if run.command == "index":
            return stage.index(run, cache_root)
        if run.command == "package":
            return package.package(run, cache_root)
        return stage.search_queries(run, cache_root)

    return run_job(job, (obs_utils.ObsError, UserError), log)


if __name__ == "__main__":
    sys.exit(main())
