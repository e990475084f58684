"""The boot files' typed configuration. train.py's: one frozen dataclass per stage (data, input
pipeline, model, fit, export, eval), built once from the parsed flags, written to
run_config.json and handed down; retrieve.py's: RetrievalConfig. No layer below the boot files
reads the argparse namespace; each takes the part it needs."""
import dataclasses
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how they are screened and split (inputs/)."""
    data_url: str
    val_data_url: str
    data_format: str
    manifest: str
    drop_val_copies: bool
    val_ratio: float
    min_images_per_class: int
    max_images_per_class: int
    max_train_per_class: int
    label_levels_sep: str
    kfold: int
    fold: int
    distill_from: str
    seed: int
    max_image_pixels: int
    min_image_side: int
    obs_threads: int


@dataclass(frozen=True)
class FeedConfig:
    """How images become batches (inputs/pipeline.py); `augmentation` is the resolved
    preset with the per-op overrides applied (inputs/augment.resolve)."""
    input_size: int
    resize_mode: str
    batch_size: int
    balance: str
    sampler: str
    pk_images: int
    distill_weight: float
    augment: str
    cache_images: bool
    deterministic: bool
    augmentation: dict


@dataclass(frozen=True)
class ModelConfig:
    """The classifier and its loss (models/)."""
    backbone: str
    pretrained_weights: str
    init_from: str
    num_classes: int
    input_size: int
    zero_init_residual: bool
    pooling: str
    embedding_dim: int
    dropout: float
    loss: str
    focal_gamma: float
    label_smoothing: float
    head: str
    head_scale: float
    head_margin: Optional[float]
    subcenters: int


@dataclass(frozen=True)
class FitConfig:
    """The optimisation (training/): schedule, optimizer, phases, callbacks, precision."""
    max_epochs: int
    learning_rate: float
    freeze_epochs: int
    unfreeze_every: int
    freeze_backbone: bool
    backbone_lr_mult: float
    optimizer: str
    weight_decay: Optional[float]
    momentum: float
    lr_schedule: str
    warmup_epochs: float
    step_epochs: int
    step_gamma: float
    restart_epochs: float
    restart_mult: float
    plateau_patience: int
    plateau_factor: float
    early_stop_patience: int
    clipnorm: float
    grad_centralization: bool
    ema: float
    monitor: str
    mixed_precision: str
    xla: str
    steps_per_execution: int
    level_weights: tuple
    save_steps: int
    keep_weights_file_num: int
    seed: int


@dataclass(frozen=True)
class ExportConfig:
    """The model package (export/): what serving averages (test-time views; an ensemble's
    members and their weights) and where it goes."""
    export_model: bool
    overwrite_model: bool
    runtime: str
    tta: str
    members: tuple
    member_weights: tuple


@dataclass(frozen=True)
class EvalConfig:
    """--mode=eval|predict|clean: the model and the images it is run on, and how clean reads
    its probabilities (evaluation/label_issues.py)."""
    eval_model: str
    test_data_url: str
    top_k: int
    clean_rule: str
    clean_keep_accuracy: float


@dataclass(frozen=True)
class RunConfig:
    """The whole job: what it trains for, where it writes, the cluster port, and each stage's
    part (--task has already set its stages' defaults when this is built)."""
    mode: str
    task: str
    train_url: str
    local_data_root: str
    worker_port: int
    data: DataConfig
    feed: FeedConfig
    model: ModelConfig
    fit: FitConfig
    export: ExportConfig
    eval: EvalConfig


@dataclass(frozen=True)
class RetrievalConfig:
    """retrieve.py index|search|package: the model, the images, the feature base, the search."""
    command: str
    model_dir: str
    data_url: str
    index_url: str
    data_format: str
    manifest: Optional[str]
    batch_size: int
    local_data_root: Optional[str]
    rebuild: bool
    float16: bool
    embed_tta: Optional[str]
    whiten: bool
    whiten_dim: int
    whiten_power: float
    top_k: int
    overwrite: bool
    search: Optional[str]  # None: exact (Milvus: the collection's index)
    query_expansion: int
    qe_alpha: float
    database_augmentation: int
    dba_alpha: float
    rerank: str
    rerank_k1: int
    rerank_k2: int
    rerank_lambda: float
    output_url: str


STAGES = {"data": DataConfig, "feed": FeedConfig, "model": ModelConfig, "fit": FitConfig,
          "export": ExportConfig, "eval": EvalConfig}
# Fields that are not flags of their own: computed from flags when the config is built.
DERIVED = {"augmentation"}


def _take(cls, flags, extra=None):
    """An instance of `cls` from the flags of the same names (plus `extra`, the derived)."""
    values = {f.name: getattr(flags, f.name) for f in dataclasses.fields(cls)
              if f.name not in DERIVED}
    return cls(**values, **(extra or {}))


def from_flags(flags, augmentation):
    """The RunConfig of parsed flags (flags.parse_args); `augmentation` is the resolved
    augmentation settings (kept out of here so this module needs no TensorFlow)."""
    parts = {name: _take(cls, flags, {"augmentation": augmentation} if cls is FeedConfig
                         else None)
             for name, cls in STAGES.items()}
    return RunConfig(mode=flags.mode, task=flags.task, train_url=flags.train_url,
                     local_data_root=flags.local_data_root, worker_port=flags.worker_port,
                     **parts)


def retrieval_from_flags(flags):
    """The RetrievalConfig of retrieve.py's parsed flags."""
    return _take(RetrievalConfig, flags)


def used_flags():
    """Every flag name some part of the config reads: each of train.py's flags must be one."""
    names = {f.name for f in dataclasses.fields(RunConfig) if f.name not in STAGES}
    for cls in STAGES.values():
        names |= {f.name for f in dataclasses.fields(cls)}
    return names - DERIVED


def as_dict(config):
    """The config as plain JSON-able data, one section per stage (for run_config.json)."""
    return dataclasses.asdict(config)
