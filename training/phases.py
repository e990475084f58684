"""The phases of fine-tuning: the head alone for --freeze_epochs (backbone frozen, BatchNorm in
inference mode), then every layer. At the unfreeze the optimizer starts afresh (zero moments,
step 0: Adam's bias correction starts again, so the backbone's first steps move as a new
optimizer's would, not 2-4x the rate) and the learning rate its own warm-up. With random
weights there is nothing to protect, and no head-only phase."""
import logging

from models import build

from . import optim

log = logging.getLogger("training")


def head_only_epochs(freeze_epochs, pretrained):
    """The epochs of the head-only phase: --freeze_epochs, or 0 from random weights."""
    if freeze_epochs > 0 and not pretrained:
        log.info("no head-only warm-up: the backbone starts from random weights, so "
                 "--freeze_epochs=%d has nothing to protect; every layer trains from epoch 1",
                 freeze_epochs)
        return 0
    return max(0, freeze_epochs)


def spans(freeze_epochs, max_epochs):
    """[(first epoch, end epoch)] of the phases that have epochs."""
    cut = min(freeze_epochs, max_epochs)
    return [(a, b) for a, b in ((0, cut), (cut, max_epochs)) if b > a]


def begin_epoch(epoch, start_epoch, freeze_epochs, backbone, model, optimizer, schedule):
    """Set up epoch `epoch` (0-based) of a run that started at `start_epoch`: what trains, the
    fresh optimizer at the unfreeze, the schedule's epoch. True when what trains changed (the
    training step must be traced again)."""
    frozen = epoch < freeze_epochs
    changed = epoch == start_epoch or frozen != (epoch - 1 < freeze_epochs)
    if changed:
        build.set_backbone_trainable(backbone, not frozen)
        log.info("phase: %s, %d weights train", "head only (backbone frozen, BatchNorm in "
                 "inference mode)" if frozen else "every layer trainable",
                 build.count_weights(model.trainable_weights))
    if freeze_epochs > 0 and epoch == freeze_epochs:  # also when a job resumes right here
        optim.reset_state(optimizer)
        log.info("unfreeze: the optimizer starts afresh (zero moments, step 0)%s",
                 "; the learning rate warms up again" if isinstance(
                     schedule, optim.PhasedSchedule) else "")
    if isinstance(schedule, optim.PhasedSchedule):
        schedule.start_epoch(epoch, int(optimizer.iterations.numpy()))
    return changed
