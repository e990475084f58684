"""Import a model as a ModelArts model and deploy it as a real-time service (the v1 API): a
package from OBS (model/ with customize_service.py, on a preset runtime; the package check
runs locally first) or a custom serving image (images/serve); each step is waited for, and the
service's address is printed with a ready curl line."""
import json
import logging
import os
import tempfile
import time

import obs_utils
from serving import check

from .client import CloudError
from .training_job import obs_path

log = logging.getLogger("submit")
MODELS = "/v1/{project_id}/models"
SERVICES = "/v1/{project_id}/services"
SPECIFICATIONS = "/v1/{project_id}/services/specifications"


def check_package(model_url, folder):
    """Run the package check on {model_url}/model; returns its config.json. The weight shards
    are only listed, not downloaded (the check needs their names, not their bytes)."""
    url = obs_utils.join(model_url, "model")
    if not obs_utils.is_dir(url):
        raise ValueError(f"{url} does not exist: --model_url is the folder holding model/ "
                         "(a train.py --train_url)")
    local = os.path.join(folder, "model")
    for name in obs_utils.listdir(url, recursive=True):
        target = obs_utils.local_path(local, name)  # a key may say ../../ (refused)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if name.startswith("variables/variables.data-"):
            open(target, "wb").close()
        else:
            obs_utils.copy(obs_utils.join(url, name), target)
    problems = check.check_package(local)
    if problems:
        raise ValueError(f"{url} fails the package check: " + "; ".join(problems))
    with open(os.path.join(local, "config.json"), encoding="utf-8") as f:
        return json.load(f)


def check_flavor(client, flavor):
    """A --flavor that the API does not list for real-time services, or lists as sold out or
    closed, is refused with the usable list (it differs by region and account). Nothing is
    checked in a dry run."""
    reply = client.call("GET", SPECIFICATIONS, query=[("infer_type", "real-time")])
    if reply is None:
        return
    specs = {s.get("specification"): s for s in reply.get("specifications", [])}
    usable = sorted(name for name, s in specs.items()
                    if s.get("spec_status", "normal") == "normal" and s.get("is_open", True))
    spec = specs.get(flavor)
    if spec is None:
        problem = "is not offered for real-time services here"
    elif spec.get("spec_status", "normal") != "normal":
        status = spec.get("spec_status")
        problem = "is sold out here" if status == "sellout" else f"is {status} here"
    elif not spec.get("is_open", True):
        problem = "needs a service ticket before it can be used"
    else:
        return
    raise ValueError(f"--flavor={flavor} {problem}; the usable flavors are: "
                     + (", ".join(usable) or "none"))


def model_body(name, version, model_url, config):
    location = obs_path(obs_utils.join(model_url, "model"))
    return {"model_name": name, "model_version": version, "source_location": location,
            "execution_code": location.rstrip("/") + "/customize_service.py",
            "model_type": config["model_type"], "runtime": config["runtime"],
            "model_algorithm": config["model_algorithm"], "install_type": ["real-time"],
            "dependencies": config.get("dependencies", [])}


def image_model_body(name, version, image):
    """A model that is a custom inference image (images/serve: the package inside, our server
    on port 8080 with GET /health), as config.json's spec describes model_type Image."""
    return {"model_name": name, "model_version": version, "source_location": image,
            "model_type": "Image", "model_algorithm": "image_classification",
            "install_type": ["real-time"],
            "health": {"url": "/health", "protocol": "http", "initial_delay_seconds": 60,
                       "timeout_seconds": 30}}


def service_body(name, model_id, flavor, instances):
    return {"service_name": name, "infer_type": "real-time",
            "config": [{"model_id": model_id, "weight": 100, "specification": flavor,
                        "instance_count": int(instances)}]}


WAIT_SECONDS = 3600  # an import or a deployment still not done after this is reported


def wait(client, path, field, done, failed, interval, what, sleep=time.sleep, **ids):
    """Poll `path` until `field` is in `done` (returns the reply) or in `failed` (raises);
    after WAIT_SECONDS, raises saying where it stands."""
    last, started = None, time.monotonic()
    while True:
        reply = client.call("GET", path, **ids) or {}
        state = reply.get(field, "unknown")
        if state != last:
            log.info("%s: %s", what, state)
            last = state
        if state in done:
            return reply
        if state in failed:
            raise ValueError(f"{what} ended {state}: {reply.get('error_msg', '')}".rstrip(": "))
        if time.monotonic() - started > WAIT_SECONDS:
            raise ValueError(f"{what} is still {state} after {WAIT_SECONDS // 60} minutes; "
                             "see the ModelArts console")
        sleep(interval)


def deploy(args, client, sleep=time.sleep):
    """submit.py deploy: check the package and the flavor, import, wait, deploy, wait, print
    the address."""
    if not (args.model_url or args.image) or not args.flavor:
        raise ValueError("deploy needs --image (the serving image of images/serve, pushed to "
                         "SWR) or --model_url (the folder holding model/, served by the "
                         "TensorFlow 2.6 runtime), and --flavor (e.g. modelarts.vm.cpu.2u)")
    if args.image and args.model_url:
        raise ValueError("pass --image or --model_url, not both: the image holds its package")
    if args.image:
        body = image_model_body(args.name or "classifier", "1.0.0", args.image)
    else:
        with tempfile.TemporaryDirectory() as folder:
            config = check_package(args.model_url, folder)
    check_flavor(client, args.flavor)
    name = args.name or f"classifier-{time.strftime('%Y%m%d-%H%M%S')}"
    if not args.image:
        body = model_body(name, "1.0.0", args.model_url, config)
    else:
        body["model_name"] = name
    reply = client.call("POST", MODELS, body)
    if args.dry_run:
        reply = {"model_id": "{model_id}"}  # so the next request is printed too
    model_id = (reply or {}).get("model_id")
    if not model_id:
        raise CloudError(f"ModelArts imported no model id; it answered: {str(reply)[:300]}")
    if not args.dry_run:
        wait(client, MODELS + "/{model_id}", "model_status", {"published"},
             {"failed", "building_failed"}, args.interval, f"model {model_id}", sleep,
             model_id=model_id)
    reply = client.call("POST", SERVICES, service_body(name, model_id, args.flavor,
                                                       args.instances))
    if args.dry_run:
        return 0
    service_id = (reply or {}).get("service_id")
    if not service_id:
        raise CloudError(f"model {model_id} is imported, but ModelArts created no service; "
                         f"it answered: {str(reply)[:300]}")
    log.info("service %s deploying (model %s); Ctrl-C leaves it deploying: stop it in the "
             "console if you do not want it", service_id, model_id)
    service = wait(client, SERVICES + "/{service_id}", "status", {"running"},
                   {"failed", "stopped"}, args.interval, f"service {service_id}", sleep,
                   service_id=service_id)
    address = service.get("access_address", "")
    print(f"service {name} runs at {address}")
    print(f"curl -F images=@x.jpg -H \"X-Auth-Token: $TOKEN\" -X POST {address}")
    return 0
