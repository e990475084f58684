"""The phases of fine-tuning: the head alone for --freeze_epochs (backbone frozen, BatchNorm in
inference mode), then every layer, or with --unfreeze_every=N the backbone's stages one at a
time from the top, one more every N epochs, then every layer. At each phase's start the
optimizer starts afresh (zero moments, step 0: Adam's bias correction starts again, so newly
trained weights move as a new optimizer's would, not 2-4x the rate) and the learning rate has
its own warm-up. With random weights there is nothing to protect: no head-only phase and no
staged unfreeze."""
import logging
from dataclasses import dataclass
from typing import Optional

from models import build

from . import optim

log = logging.getLogger("training")


@dataclass(frozen=True)
class Phase:
    """Epochs [first, end) and what trains in them: the backbone's `top` stages nearest the
    output (0: the head alone), or every layer (None)."""
    first: int
    end: int
    top: Optional[int]


def head_only_epochs(freeze_epochs, pretrained):
    """The epochs of the head-only phase: --freeze_epochs, or 0 from random weights."""
    if freeze_epochs > 0 and not pretrained:
        log.info("no head-only warm-up: the backbone starts from random weights, so "
                 "--freeze_epochs=%d has nothing to protect; every layer trains from epoch 1",
                 freeze_epochs)
        return 0
    return max(0, freeze_epochs)


def plan(freeze_epochs, max_epochs, unfreeze_every=0, stage_count=0, pretrained=True,
         freeze_backbone=False):
    """[Phase] of a run: the head alone for `freeze_epochs` (head_only_epochs), then, with
    `unfreeze_every` > 0 and a backbone of 2 or more stages, the top 1, 2, ... stages for
    `unfreeze_every` epochs each, then every layer. Phases past `max_epochs` are cut.
    `freeze_backbone`: the head alone for the whole run (--freeze_backbone)."""
    if freeze_backbone:
        if pretrained:
            log.info("--freeze_backbone: the head alone trains, for all %d epochs", max_epochs)
        else:
            log.warning("--freeze_backbone from random weights: the head learns on features "
                        "of a backbone that never trains; give --pretrained_weights or "
                        "--init_from")
        return [Phase(0, max_epochs, 0)]
    cut = min(head_only_epochs(freeze_epochs, pretrained), max_epochs)
    phases = [Phase(0, cut, 0)] if cut > 0 else []
    staged = unfreeze_every > 0 and stage_count > 1
    if unfreeze_every > 0 and not pretrained:
        log.info("no staged unfreeze: the backbone starts from random weights, so "
                 "--unfreeze_every=%d has nothing to protect", unfreeze_every)
        staged = False
    first = cut
    for top in range(1, stage_count) if staged else ():
        end = min(first + unfreeze_every, max_epochs)
        if end > first:
            phases.append(Phase(first, end, top))
        first = end
    if max_epochs > first:
        phases.append(Phase(first, max_epochs, None))
    return phases


def spans(phases):
    """[(first epoch, end epoch)] of the phases: the learning-rate schedule's phases."""
    return [(phase.first, phase.end) for phase in phases]


def phase_of(phases, epoch):
    return next(phase for phase in phases if phase.first <= epoch < phase.end)


def begin_epoch(epoch, start_epoch, phases, stages, backbone, model, optimizer, schedule,
                steps_done=0):
    """Set up epoch `epoch` (0-based) of a run that started at `start_epoch`: what trains
    (`stages`: build.backbone_stages), the fresh optimizer at a phase's start, the schedule's
    epoch. True when what trains changed (the training step must be traced again).
    `steps_done`: a run resumed within its first epoch (--save_steps) keeps the optimizer it
    restored, and the schedule counts the epoch from its true first step."""
    within = epoch == start_epoch and steps_done > 0
    phase = phase_of(phases, epoch)
    changed = epoch == start_epoch or epoch == phase.first
    if changed:
        build.set_trainable_stages(backbone, stages, phase.top)
        log.info("phase: %s, %d weights train", describe(phase, stages),
                 build.count_weights(model.trainable_weights))
    if epoch == phase.first and epoch > 0 and not within:  # also a job resumed right here
        optim.reset_state(optimizer)
        log.info("%s: the optimizer starts afresh (zero moments, step 0)%s",
                 "unfreeze" if phase.top is None else f"stage {len(stages) - phase.top + 1} "
                 f"of {len(stages)} unfreezes", "; the learning rate warms up again"
                 if isinstance(schedule, optim.PhasedSchedule) else "")
    if isinstance(schedule, optim.PhasedSchedule):
        schedule.start_epoch(epoch, int(optimizer.iterations.numpy()) -
                             (steps_done if within else 0))
    return changed


def describe(phase, stages):
    if phase.top == 0:
        return "head only (backbone frozen, BatchNorm in inference mode)"
    if phase.top is None:
        return "every layer trainable"
    first = stages[-phase.top][0].name
    return (f"the head and the backbone's top {phase.top} of {len(stages)} stages (from "
            f"layer {first}; below it frozen, BatchNorm in inference mode)")
