"""Architecture settings of the networks, as stored in a checkpoint's configuration.

One family of U-Nets covers the networks of the three papers: the DDPM U-Net (Ho et al.
2020, appendix B: additive timestep conditioning, convolutional resampling, one head), the
Improved DDPM U-Net (Nichol & Dhariwal 2021, appendix A: adaptive GroupNorm, four heads,
attention at 16 and 8 pixels) and ADM (Dhariwal & Nichol 2021, section 3: 64 channels per
head, attention at 32, 16 and 8 pixels, BigGAN up/down-sampling residual blocks). The noisy
classifier of ADM (section 4.1) is the U-Net's encoder half with a pooling head; the
upsampler of ADM (appendix A) is the U-Net with a low-resolution image as extra input.

Each level runs a *block recipe* (``blocks``): the residual block of these papers, the
ConvNeXt block, spatial self-attention, class attention and efficient channel attention, in
any order (issue 14, after the DDPM/DDIM/classifier-free-guidance article that compares
them; :mod:`diffuse.nn.blocks`). The default recipe, a residual block followed by
self-attention at the attention resolutions, is the papers' network.

A configuration is a frozen dataclass; ``to_dict`` gives JSON with a ``kind`` field
("unet", "superres" or "classifier") and :func:`config_from_dict` reads it back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from diffuse.errors import ConfigError, is_int_at_least

ATTENTION_ORDERS = ("legacy", "new")
RESAMPLERS = ("conv", "resblock")
POOLS = ("attention", "adaptive")

# The blocks a recipe draws from: the residual block, the ConvNeXt block, spatial
# self-attention, class attention and efficient channel attention.
BLOCKS = ("res", "conv", "atn", "clsatn", "chnatn")
# The blocks that map a unit's input width to the level's width (a recipe starts with one).
WIDENING_BLOCKS = ("res", "conv")
# The papers' network: a residual block, followed by self-attention where configured.
DEFAULT_BLOCKS = ("res", "atn")


@dataclass(frozen=True)
class EncoderConfig:
    """Settings shared by every network of the family: the encoder half and its blocks.

    image_size:             height and width of the images in pixels.
    in_channels:            channels of the input image (3 for RGB, 1 for grey).
    out_channels:           channels of the output image (twice the image channels when the
                            variance is learned), or the number of logits of a classifier.
    model_channels:         base width: channels of the first level and of the sinusoidal
                            timestep features; the embedding MLP is 4x as wide (unless
                            ``embedding_channels`` says otherwise).
    channel_mult:           width of each level as a multiple of ``model_channels``; the image
                            is halved between consecutive levels.
    num_res_blocks:         units per level in the encoder (the decoder has one more); each
                            unit runs the block recipe ``blocks``.
    attention_resolutions:  resolutions in pixels (for example ``(16, 8)``) at which the
                            recipe's "atn" blocks run (each residual block is followed by
                            self-attention in the default recipe); the middle block always
                            has attention.
    num_heads:              attention heads when ``num_head_channels`` is None.
    num_head_channels:      channels per attention head (ADM: 64); overrides ``num_heads``.
    attention_order:        how the fused q, k, v projection is split: "legacy" (heads first,
                            improved-diffusion and most ADM models) or "new" (q, k, v first).
    dropout:                dropout rate before the second convolution of each residual block
                            (and before the last projection of each ConvNeXt block).
    scale_shift_norm:       adaptive GroupNorm (ADM): the embedding gives a per-channel scale
                            and shift after the second normalisation; otherwise it is added
                            to the features before it (DDPM).
    resample:               "conv": strided / nearest-neighbour convolutions between levels
                            (DDPM); "resblock": BigGAN residual blocks that resample (ADM).
    norm_groups:            groups of every GroupNorm (32 in all the papers).
    timestep_scale:         the network embeds ``t * timestep_scale``; 1000 / T reproduces
                            models trained with improved-diffusion's ``rescale_timesteps``.
    gradient_checkpointing: recompute each block's activations in the backward pass instead
                            of storing them (less memory, about a third more compute).
    blocks:                 the block recipe of every unit, in order, drawn from "res"
                            (residual block), "conv" (ConvNeXt block), "atn" (spatial
                            self-attention, only at ``attention_resolutions``), "clsatn"
                            (class attention, class-conditional U-Nets) and "chnatn"
                            (efficient channel attention); it starts with "res" or "conv",
                            which maps the unit's input width to the level's. Default
                            ("res", "atn"): the papers' residual block and attention.
    embedding_channels:     width of the timestep (and class) embedding; None: 4 x
                            ``model_channels``, as in all three papers.
    """

    kind: ClassVar[str] = "encoder"

    image_size: int
    in_channels: int
    out_channels: int
    model_channels: int
    channel_mult: tuple[float, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16,)
    num_heads: int = 1
    num_head_channels: int | None = None
    attention_order: str = "new"
    dropout: float = 0.0
    scale_shift_norm: bool = True
    resample: str = "conv"
    norm_groups: int = 32
    timestep_scale: float = 1.0
    gradient_checkpointing: bool = False
    # Newer settings last, so positional arguments keep their meaning.
    blocks: tuple[str, ...] = DEFAULT_BLOCKS
    embedding_channels: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        object.__setattr__(self, "attention_resolutions", tuple(self.attention_resolutions))
        for name in ("image_size", "in_channels", "out_channels", "model_channels"):
            _require_positive_int(name, getattr(self, name))
        if self.embedding_channels is None:
            object.__setattr__(self, "embedding_channels", 4 * self.model_channels)
        _require_positive_int("embedding_channels", self.embedding_channels)
        object.__setattr__(self, "blocks", _recipe(self.blocks))
        if "clsatn" in self.blocks and not self.class_conditional:
            raise ConfigError(
                f"blocks has 'clsatn' (class attention), which needs class labels, and this "
                f"{self.kind} network takes none; set num_classes or remove 'clsatn'"
            )
        _require_positive_int("num_res_blocks", self.num_res_blocks)
        _require_positive_int("norm_groups", self.norm_groups)
        _require_positive_int("num_heads", self.num_heads)
        if self.num_head_channels is not None:
            _require_positive_int("num_head_channels", self.num_head_channels)
        if not self.channel_mult or any(m <= 0 for m in self.channel_mult):
            raise ConfigError(
                f"channel_mult must be a non-empty list of positive numbers, got {self.channel_mult}"
            )
        _require_choice("attention_order", self.attention_order, ATTENTION_ORDERS)
        _require_choice("resample", self.resample, RESAMPLERS)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.timestep_scale > 0:
            raise ConfigError(f"timestep_scale must be positive, got {self.timestep_scale}")
        factor = 2 ** (len(self.channel_mult) - 1)
        if self.image_size % factor:
            raise ConfigError(
                f"image_size {self.image_size} cannot be halved {len(self.channel_mult) - 1} "
                f"times (one per level after the first); use a multiple of {factor} or fewer "
                "channel_mult entries"
            )
        unknown = sorted(set(self.attention_resolutions) - set(self.resolutions))
        if unknown:
            raise ConfigError(
                f"attention_resolutions {unknown} do not occur in this network; its levels "
                f"work at {list(self.resolutions)} pixels"
            )
        for level, width in enumerate(self.level_channels):
            if width % self.norm_groups:
                raise ConfigError(
                    f"level {level} has {width} channels, not divisible by norm_groups="
                    f"{self.norm_groups}; change model_channels, channel_mult or norm_groups"
                )
            if self.uses_attention(level) or "clsatn" in self.blocks or level == self.levels - 1:
                self.attention_heads(width)

    @property
    def levels(self) -> int:
        """Number of resolutions the network works at."""
        return len(self.channel_mult)

    @property
    def level_channels(self) -> tuple[int, ...]:
        """Channels of the features at each level."""
        return tuple(int(m * self.model_channels) for m in self.channel_mult)

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Height and width in pixels of the features at each level."""
        return tuple(self.image_size >> level for level in range(self.levels))

    @property
    def class_conditional(self) -> bool:
        """Whether the network takes class labels (the base encoder does not)."""
        return False

    def attention_heads(self, channels: int) -> int:
        """Number of heads of an attention layer over ``channels`` channels."""
        if self.num_head_channels is None:
            heads = self.num_heads
        else:
            heads = channels // self.num_head_channels
        if heads < 1 or channels % heads:
            raise ConfigError(
                f"attention over {channels} channels cannot be split into heads of "
                f"num_head_channels={self.num_head_channels} / num_heads={self.num_heads}"
            )
        return heads

    def uses_attention(self, level: int) -> bool:
        """Whether the recipe's "atn" blocks (spatial self-attention) run at ``level``."""
        return self.resolutions[level] in self.attention_resolutions

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings, with the network ``kind`` first."""
        data = asdict(self)
        data["channel_mult"] = list(self.channel_mult)
        data["attention_resolutions"] = list(self.attention_resolutions)
        data["blocks"] = list(self.blocks)
        return {"kind": self.kind, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        """Read settings written by :meth:`to_dict` (the ``kind`` must match this class)."""
        data = dict(data)
        kind = data.pop("kind", cls.kind)
        if kind != cls.kind:
            raise ConfigError(f"settings of a {kind!r} network cannot build a {cls.kind!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"unknown {cls.kind} settings {unknown}; known settings: {sorted(known)}"
            )
        try:
            return cls(**data)
        except TypeError as error:
            raise ConfigError(
                f"incomplete or mistyped {cls.kind} settings: {error} (see the fields of "
                f"{cls.__name__} in diffuse.nn.network_config)"
            ) from None


@dataclass(frozen=True)
class UNetConfig(EncoderConfig):
    """The denoising U-Net: encoder, middle block, decoder with skip connections.

    num_classes:  number of classes when class-conditional (the embedding of the label is
                  added to the timestep embedding, as in Improved DDPM); None otherwise.
    null_class:   add one more embedding row, label ``num_classes``, meaning "no label", for
                  classifier-free guidance (Ho & Salimans 2021).
    """

    kind: ClassVar[str] = "unet"

    num_classes: int | None = None
    null_class: bool = False

    @property
    def class_conditional(self) -> bool:
        """Whether the network takes class labels."""
        return self.num_classes is not None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_classes is not None:
            _require_positive_int("num_classes", self.num_classes)
        elif self.null_class:
            raise ConfigError("null_class needs num_classes: a null label only exists among labels")


@dataclass(frozen=True)
class SuperResConfig(UNetConfig):
    """The upsampler of ADM: the U-Net also given a low-resolution image.

    The low-resolution image is resized bilinearly to ``image_size`` and concatenated to the
    noisy input, so the first convolution sees ``2 * in_channels`` channels.

    low_res_size: height and width of the low-resolution input (None: any size).
    """

    kind: ClassVar[str] = "superres"

    low_res_size: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.low_res_size is not None:
            _require_positive_int("low_res_size", self.low_res_size)


@dataclass(frozen=True)
class ClassifierConfig(EncoderConfig):
    """The noisy classifier of ADM (section 4.1): the encoder half and a pooling head.

    ``out_channels`` is the number of classes (logits).

    pool: "attention" (ADM's released classifiers: attention pooling over the final
          features plus their mean, as in CLIP) or "adaptive" (global average pooling).
    """

    kind: ClassVar[str] = "classifier"

    pool: str = "attention"

    def __post_init__(self) -> None:
        super().__post_init__()
        _require_choice("pool", self.pool, POOLS)


CONFIG_CLASSES: dict[str, type[EncoderConfig]] = {
    cls.kind: cls for cls in (UNetConfig, SuperResConfig, ClassifierConfig)
}


def config_from_dict(data: dict[str, Any]) -> EncoderConfig:
    """The network configuration stored in ``data``, of the class its ``kind`` names."""
    kind = data.get("kind")
    if kind not in CONFIG_CLASSES:
        raise ConfigError(f"unknown network kind {kind!r}; known kinds: {sorted(CONFIG_CLASSES)}")
    return CONFIG_CLASSES[kind].from_dict(data)


def _recipe(blocks: Any) -> tuple[str, ...]:
    """``blocks`` as a checked tuple of block names (one name alone is a one-block recipe)."""
    if isinstance(blocks, str):
        blocks = (blocks,)
    valid = ", ".join(BLOCKS)
    if not isinstance(blocks, list | tuple) or not blocks:
        raise ConfigError(
            f"blocks must be a non-empty list of block names ({valid}), got {blocks!r}"
        )
    for position, name in enumerate(blocks):
        if name not in BLOCKS:
            raise ConfigError(
                f"blocks entry {position} {name!r} is not a block; valid blocks: {valid}"
            )
    if blocks[0] not in WIDENING_BLOCKS:
        raise ConfigError(
            f"blocks must start with 'res' or 'conv' (the block that maps a unit's input "
            f"channels to the level's), got {list(blocks)}"
        )
    return tuple(blocks)


def _require_positive_int(name: str, value: Any) -> None:
    if not is_int_at_least(value, 1):
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _require_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} {value!r} is not one of {allowed}")
