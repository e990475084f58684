"""Run this bundle on ModelArts from any machine: submit and follow a training job, then
import and deploy its model, with Huawei's official SDK (pip install -r requirements-cloud.txt).

    python submit.py train --image=swr.<region>.myhuaweicloud.com/<org>/classifier-train:0.5 \\
        --data_url=obs://b/data/ --train_url=obs://b/out/ --flavor=<id> [--max_epochs=30 ...]
    python submit.py status JOB_ID | logs JOB_ID [--follow] [--task=worker-1] | stop JOB_ID
    python submit.py deploy --image=swr.<region>.myhuaweicloud.com/<org>/classifier-serve:0.5 \\
        --flavor=<id>                          # or --model_url=obs://b/out/ for the 2.6 runtime

Other flags of train go to train.py. --image is the images/ folder's image, built and pushed
to SWR (README, "Run on ModelArts"); --engine=<id, or name+version> picks a preset engine
instead, which needs TensorFlow >= 2.16 (no preset engine has it today).

Credentials: HUAWEICLOUD_SDK_AK, HUAWEICLOUD_SDK_SK, HUAWEICLOUD_SDK_PROJECT_ID (and
HUAWEICLOUD_SDK_SECURITY_TOKEN for temporary keys); --region, or --endpoint / MODELARTS_ENDPOINT.
--dry-run prints every request (method, path, JSON body) and sends nothing.
"""
import logging
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, HERE)

import runtime_check  # noqa: E402

runtime_check.check("submit.py", needs_tensorflow=False)  # it sends jobs: no TensorFlow here

import obs_utils  # noqa: E402
from cli import ArgumentParser, RawDescriptionHelpFormatter  # noqa: E402
from jobs import client as cloud  # noqa: E402
from jobs import pack, training_job  # noqa: E402

log = logging.getLogger("submit")


def build_parser():
    parser = ArgumentParser(prog="submit.py", description=__doc__.splitlines()[0],
                            allow_abbrev=False, formatter_class=RawDescriptionHelpFormatter,
                            epilog=__doc__.split("\n", 2)[2])
    parser.add_argument("command", choices=["train", "status", "logs", "stop", "deploy"],
                        help="submit a training job, ask how it is, read its log, stop it, or "
                             "deploy its model")
    parser.add_argument("job_id", nargs="?", default="", help="status, logs, stop")
    add = parser.add_argument
    add("--region", default=os.environ.get("HUAWEICLOUD_SDK_REGION", ""),
        help="e.g. cn-north-4 (default: $HUAWEICLOUD_SDK_REGION, here %(default)r)")
    add("--endpoint", default="", help="ModelArts endpoint URL (default: from the region, or "
                                       "$MODELARTS_ENDPOINT)")
    add("--dry-run", "--dry_run", dest="dry_run", action="store_true",
        help="print the requests, send nothing")
    add("--data_url", default="", help="train: the images on OBS (train.py's --data_url)")
    add("--train_url", default="", help="train: where the job writes (train.py's --train_url)")
    add("--code_url", default="", help="where the code goes (default: <train_url>/../code/"
                                       "<job name>/, one folder per job)")
    add("--code_dir", default=HERE, help="the bundle to submit (default: this checkout)")
    add("--flavor", default="", help="resource flavor id; empty or a wrong one is answered with "
                                     "the list (default: empty)")
    add("--image", default="", help="train / deploy in this custom image (SWR: "
                                     "swr.<region>.myhuaweicloud.com/<org>/<name>:<tag>; "
                                     "default: none, a preset engine)")
    add("--engine", default="", help="train on a preset engine: id, or name+version (default "
                                      "without --image: the newest TensorFlow >= 2.16 listed)")
    add("--node_count", type=int, default=1, help="train: machines in the job")
    add("--job_name", default="", help="train: the job's name (default: one made from the "
                                       "time)")
    add("--detach", action="store_true", help="train: return the job id at once")
    add("--each_fold", action="store_true",
        help="train with --kfold=K: K jobs side by side, one per fold (--fold=i), detached; "
             "then train.py --mode=oof --train_url=... gathers them")
    add("--follow", action="store_true", help="logs: until the job ends")
    add("--task", default="worker-0", help="logs: whose log on a multi-node job (worker-0, "
                                          "the chief, prints the progress)")
    add("--interval", type=float, default=10.0, help="seconds between polls")
    add("--model_url", default="", help="deploy: the OBS folder holding model/")
    add("--name", default="", help="deploy: the service name")
    add("--instances", type=int, default=1, help="deploy: instances")
    return parser


def hyperparameters(unknown):
    """Every --key=value this command does not know, passed to train.py on the job."""
    found = []
    for flag in unknown:
        if not flag.startswith("--") or "=" not in flag:
            raise ValueError(f"{flag!r}: pass hyperparameters as --key=value")
        name, value = flag[2:].split("=", 1)
        found.append((name, value))
    return found


def default_code_url(train_url, job_name):
    """<train_url>/../code/<job name>/ (<bucket>/code/<job name>/ when train_url is a bucket's
    root): a folder of its own per job, so a job still queued never runs the code a sibling
    run uploaded after it."""
    where = obs_utils.parse(train_url)
    key = where.path.strip("/")
    scheme = train_url.split("://", 1)[0]
    parent = key.rsplit("/", 1)[0] if "/" in key else ""
    return (f"{scheme}://{where.bucket}/" + (parent + "/" if parent else "")
            + f"code/{job_name}/")


def train_flags():
    """The flag names train.py takes, read from the source of its flag table, flags.py
    (importing it loads TensorFlow)."""
    with open(os.path.join(HERE, "flags.py"), encoding="utf-8") as f:
        source = f.read()
    return (set(re.findall(r"""add(?:_argument)?\(\s*["']--(\w+)""", source))
            | set(re.findall(r"""\(["'](\w+)["'], (?:str|float|int)\)""", source)))


def train(args, client, parameters):
    for flag in ("data_url", "train_url", "flavor"):
        if not getattr(args, flag):
            raise ValueError(f"train needs --{flag}")
    known = train_flags()
    unknown = [name for name, _ in parameters if name not in known]
    if known and unknown:  # found in the cloud only after the upload and the queue
        raise ValueError(f"train.py has no flag {', '.join('--' + n for n in unknown)}: see "
                         "python train.py --help")
    name = args.job_name or f"classifier-{time.strftime('%Y%m%d-%H%M%S')}"
    code_url = args.code_url or default_code_url(args.train_url, name)
    files = pack.code_files(args.code_dir)
    size = pack.check_limits(args.code_dir, files)
    if size > pack.ADVISED_BYTES:
        log.warning("the code folder holds %.0f MB: keep it under 50 MB (weights and data "
                    "belong on OBS)", size / 2 ** 20)
    if args.image and args.engine:
        raise ValueError("pass --image (a custom image) or --engine (a preset one), not both")
    image = args.image or (args.engine if "/" in args.engine else "")
    engine = training_job.check_choices(client, args.flavor, image or args.engine)
    jobs = fold_jobs(name, parameters) if args.each_fold else [(name, parameters)]
    if args.dry_run:
        print(f"would upload {len(files)} files ({size / 2 ** 20:.1f} MB) to {code_url}")
    else:
        with tempfile.TemporaryDirectory() as staging:
            stats = pack.upload(args.code_dir, files, code_url, os.path.join(staging, "code"))
        log.info("code: %d files in %s (%s sent)", len(files), code_url,
                 "?" if stats.copied is None else stats.copied)
    ids = []
    for job_name, job_parameters in jobs:
        if image:
            body = training_job.image_job_body(job_name, code_url, args.data_url,
                                               args.train_url, args.flavor, image,
                                               args.node_count, job_parameters)
        else:
            body = training_job.job_body(job_name, code_url, args.data_url, args.train_url,
                                         args.flavor, engine, args.node_count, job_parameters)
        reply = client.call("POST", training_job.JOBS, body)
        if reply is None:  # dry run
            continue
        job_id = (reply.get("metadata") or {}).get("id")
        if not job_id:
            raise cloud.CloudError(f"ModelArts created no job id; it answered: "
                                   f"{str(reply)[:300]}")
        log.info("training job %s created: %s", job_name, job_id)
        ids.append(job_id)
    if args.dry_run:
        return 0
    if args.each_fold:
        print("\n".join(ids))
        log.info("%d fold jobs running side by side; once all are done: python train.py "
                 "--mode=oof --train_url=%s", len(ids), args.train_url)
        return 0
    if args.detach:
        print(ids[0])
        return 0
    return follow(args, client, ids[0])


def fold_jobs(name, parameters):
    """(job name, parameters) per fold of the --kfold parameter: <name>-fold<i>, --fold=i."""
    given = dict(parameters)
    try:
        k = int(given.get("kfold", "0"))
    except ValueError:
        k = 0
    if k < 2 or "fold" in given:
        raise ValueError("--each_fold needs --kfold=K (K >= 2) and no --fold: it submits "
                         "one job per fold")
    return [(f"{name}-fold{i}", [*parameters, ("fold", str(i))]) for i in range(k)]


def follow(args, client, job_id):
    if args.dry_run:  # one poll's requests: a dry run never ends otherwise
        training_job.status(client, job_id)
        training_job.log_text(client, job_id, args.task)
        return 0
    try:
        code = training_job.follow(client, job_id, interval=args.interval, task=args.task)
    except KeyboardInterrupt:
        try:
            answer = input(f"\nstop the job {job_id} on ModelArts too? [y/N] ").strip().lower()
        except (EOFError, KeyboardInterrupt):  # no terminal to ask, or a second Ctrl-C
            answer = "n"
        if answer in ("y", "yes"):
            client.call("POST", training_job.JOB + "/actions", {"action_type": "terminate"},
                        training_job_id=job_id)
            print(f"stopping {job_id}")
        else:
            print(f"{job_id} goes on running: python submit.py status {job_id}")
        return 130
    if code:
        phase, reply = training_job.status(client, job_id)
        print(f"the job ended {phase}{training_job.exit_codes(reply)}; its log: python "
              f"submit.py logs {job_id}")
    return code


def main(argv=None):
    # The log on stderr: stdout carries what scripts read (a job id, a status, log lines).
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    for chatty in obs_utils.CHATTY_LOGGERS:
        logging.getLogger(chatty).setLevel(logging.WARNING)
    logging.getLogger("HuaweiCloud-SDK-ModelArtsClient").setLevel(logging.CRITICAL)  # ours say it
    args, unknown = build_parser().parse_known_args(argv)
    if args.region:  # obs_utils talks to the same region's OBS unless told otherwise
        os.environ.setdefault("OBS_ENDPOINT", f"https://obs.{args.region}.myhuaweicloud.com")
    try:
        parameters = hyperparameters(unknown)
        if unknown and args.command != "train":
            raise ValueError(f"{args.command} takes no {' '.join(unknown)}: see python "
                             "submit.py --help")
        if args.command in ("status", "logs", "stop") and not args.job_id:
            raise ValueError(f"{args.command} needs a job id: python submit.py "
                             f"{args.command} JOB_ID")
        client = cloud.Client(args.region, args.endpoint, args.dry_run)
        if args.command == "train":
            return train(args, client, parameters)
        if args.command == "status":
            phase, reply = training_job.status(client, args.job_id)
            if not args.dry_run:
                print(phase + training_job.exit_codes(reply))
            return 0
        if args.command == "logs":
            if args.follow:
                return follow(args, client, args.job_id)
            print(training_job.log_text(client, args.job_id, args.task), end="")
            return 0
        if args.command == "stop":
            client.call("POST", training_job.JOB + "/actions", {"action_type": "terminate"},
                        training_job_id=args.job_id)
            if not args.dry_run:
                print(f"stopping {args.job_id}")
            return 0
        from jobs import deploy
        return deploy.deploy(args, client)
    except (cloud.CloudError, pack.PackError, obs_utils.ObsError, ValueError) as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted; a job or service already created goes on: python submit.py "
                  "status JOB_ID, or the ModelArts console")
        return 130


if __name__ == "__main__":
    sys.exit(main())
