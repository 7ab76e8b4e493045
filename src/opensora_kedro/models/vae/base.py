"""What every video autoencoder here shares: the interface, the posterior, latent scaling, tiling.

Shapes are ``[B, C, T, H, W]`` with pixels in ``[-1, 1]``. A model implements three hooks
(``_encode_tile``, ``_decode_tile`` and, if variational, ``_posterior``) and the compression
properties; :class:`VideoAutoencoder` builds the public API on top of them:

- ``encode(x, sample=False)`` returns the *scaled* latent ``(z - shift_factor) * scaling_factor``,
  the one the diffusion model sees; ``decode(z)`` undoes the scaling first. Open-Sora's
  ``train.py`` compiled the raw encoder in place of this full encode (issue #892, reference
  brief §7.2); here ``encode`` is the only way in, so a caller cannot skip the scaling.
- ``forward(x)`` returns ``(reconstruction, posterior-or-None)`` for VAE training; the scaling
  cancels out there, so it is not applied.
- Tiling: with ``use_spatial_tiling`` / ``use_temporal_tiling`` a clip is cut into overlapping
  tiles, each tile runs through the network on its own, and the outputs are blended with linear
  ramps across each overlap (weights normalised, so any overlap pattern sums to one). Tiles are
  planned in latent units so that encode and decode cut at the same places.
"""

from __future__ import annotations

import dataclasses
import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

LOGVAR_RANGE = (-30.0, 20.0)  # as in HunyuanVideo / diffusers: keeps exp() finite


@dataclass
class AutoencoderConfig:
    """Fields every video autoencoder config has.

    Attributes:
        in_channels: pixel channels (3 for RGB); the decoder outputs the same number.
        latent_channels: channels of the latent ``z``.
        scaling_factor: ``encode`` returns ``(z - shift_factor) * scaling_factor``.
        shift_factor: see ``scaling_factor``.
        use_spatial_tiling: cut H and W into overlapping tiles (for large frames).
        use_temporal_tiling: cut T into overlapping tiles for longer clips.
        tile_sample_size: spatial tile size in pixels (a multiple of the spatial compression).
        tile_sample_frames: temporal tile length in frames (a multiple of the temporal
            compression; a causal model adds its separate first frame, so 64 means 65 frames).
        tile_overlap_factor: fraction of a tile shared with its neighbour, in ``[0, 1)``.
    """

    in_channels: int = 3
    latent_channels: int = 16
    scaling_factor: float = 1.0
    shift_factor: float = 0.0
    use_spatial_tiling: bool = False
    use_temporal_tiling: bool = False
    tile_sample_size: int = 256
    tile_sample_frames: int = 64
    tile_overlap_factor: float = 0.25

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.latent_channels < 1:
            raise ValueError("in_channels and latent_channels must be >= 1")
        if self.scaling_factor == 0:
            raise ValueError("scaling_factor must be non-zero (decode divides by it)")
        if not 0.0 <= self.tile_overlap_factor < 1.0:
            raise ValueError(
                f"tile_overlap_factor must be in [0, 1), got {self.tile_overlap_factor}"
            )
        if self.tile_sample_size < 1 or self.tile_sample_frames < 1:
            raise ValueError("tile_sample_size and tile_sample_frames must be >= 1")


class DiagonalGaussianDistribution:
    """The VAE posterior ``N(mean, exp(logvar))``, from encoder moments ``[mean; logvar]``.

    Args:
        moments: ``[B, 2 * C, ...]``; the first ``C`` channels are the mean, the rest the
            log-variance (clamped to ``LOGVAR_RANGE``).
    """

    def __init__(self, moments: Tensor) -> None:
        self.mean, logvar = moments.chunk(2, dim=1)
        self.logvar = logvar.clamp(*LOGVAR_RANGE)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """A reparameterised sample ``mean + std * eps`` (differentiable in mean and std)."""
        eps = torch.randn(
            self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype
        )
        return self.mean + self.std * eps

    def mode(self) -> Tensor:
        """The most likely latent: the mean."""
        return self.mean

    def kl(self) -> Tensor:
        """``KL(q || N(0, I))`` summed over all but the batch dimension: shape ``[B]``."""
        terms = self.mean.pow(2) + self.var - 1.0 - self.logvar
        return 0.5 * terms.flatten(1).sum(dim=1)


# ---------------------------------------------------------------------------------------------
# Tiling: plan tiles per axis, run each tile, blend.
# ---------------------------------------------------------------------------------------------

Span = tuple[int, int]
AxisPlan = list[tuple[slice, slice, Tensor | None]]  # (input slice, output slice, 1-D weight)
_WHOLE: AxisPlan = [(slice(None), slice(None), None)]


def tile_starts(length: int, tile: int, overlap_factor: float) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length``.

    The stride is ``tile * (1 - overlap_factor)`` (at least 1); the last tile is moved back to
    end exactly at ``length``, so every tile is full-size (no sliver tiles at the border).
    """
    if length <= tile:
        return [0]
    stride = max(1, int(tile * (1.0 - overlap_factor)))
    return [*range(0, length - tile, stride), length - tile]


def ramp_weights(spans: list[Span]) -> list[Tensor]:
    """A 1-D blending weight per output span: a linear ramp across each overlap with a
    neighbour, 1 elsewhere. Weights stay > 0, so the normalised blend is defined everywhere."""
    weights = []
    for index, (start, end) in enumerate(spans):
        weight = torch.ones(end - start)
        if index > 0 and (overlap := spans[index - 1][1] - start) > 0:
            weight[:overlap] = torch.arange(1, overlap + 1) / (overlap + 1)
        if index + 1 < len(spans) and (overlap := end - spans[index + 1][0]) > 0:
            falling = torch.arange(overlap, 0, -1) / (overlap + 1)
            weight[-overlap:] = torch.minimum(weight[-overlap:], falling)
        weights.append(weight)
    return weights


def plan_axis(
    latent_length: int,
    latent_tile: int | None,
    overlap_factor: float,
    to_pixels: Callable[[int, int], Span],
    encoding: bool,
) -> AxisPlan:
    """Tiles along one axis, planned in latent units.

    ``to_pixels(start, end)`` maps a latent range to the pixel range that encodes to it.
    Encoding reads pixel slices and writes latent slices; decoding the reverse. One tile (the
    whole axis) when tiling is off (``latent_tile is None``) or the axis fits in a tile.
    """
    if latent_tile is None or latent_length <= latent_tile:
        return _WHOLE
    latent_spans = [
        (start, start + latent_tile)
        for start in tile_starts(latent_length, latent_tile, overlap_factor)
    ]
    pixel_spans = [to_pixels(start, end) for start, end in latent_spans]
    sources, targets = (pixel_spans, latent_spans) if encoding else (latent_spans, pixel_spans)
    weights = ramp_weights(targets)
    return [
        (slice(*src), slice(*dst), weight)
        for src, dst, weight in zip(sources, targets, weights, strict=True)
    ]


def run_tiled(fn: Callable[[Tensor], Tensor], x: Tensor, plans: list[AxisPlan]) -> Tensor:
    """Apply ``fn`` to every tile of ``x`` (one plan per T, H, W axis) and blend the outputs."""
    if all(plan is _WHOLE for plan in plans):
        return fn(x)
    out: Tensor | None = None
    weight_sum: Tensor | None = None
    for (t_in, t_out, w_t), (h_in, h_out, w_h), (w_in, w_out, w_w) in itertools.product(*plans):
        y = fn(x[:, :, t_in, h_in, w_in])
        if out is None:
            # An untiled axis keeps the size the network gives it; a tiled one ends with
            # its last tile.
            size = [
                y.shape[2 + axis] if plan is _WHOLE else plan[-1][1].stop
                for axis, plan in enumerate(plans)
            ]
            out = y.new_zeros((*y.shape[:2], *size))
            weight_sum = y.new_zeros((1, 1, *size))
        along_t, along_h, along_w = (
            torch.ones(n) if w is None else w
            for w, n in zip((w_t, w_h, w_w), y.shape[2:], strict=True)
        )
        weight = (along_t[:, None, None] * along_h[None, :, None] * along_w[None, None, :]).to(y)
        out[:, :, t_out, h_out, w_out] += y * weight
        weight_sum[:, :, t_out, h_out, w_out] += weight
    return out / weight_sum


# ---------------------------------------------------------------------------------------------
# The interface.
# ---------------------------------------------------------------------------------------------


def run_block(module: nn.Module, x: Tensor, use_checkpoint: bool) -> Tensor:
    """``module(x)``, recomputed in backward instead of stored when ``use_checkpoint``."""
    if use_checkpoint and torch.is_grad_enabled():
        return checkpoint(module, x, use_reentrant=False)
    return module(x)


class VideoAutoencoder(nn.Module, ABC):
    """Base class of the video autoencoders: the common public API over three model hooks.

    Subclasses implement ``spatial_compression``, ``temporal_compression``, ``is_causal``,
    ``_encode_tile`` (pixels -> raw encoder output: moments for a VAE, the latent for a plain
    autoencoder), ``_decode_tile`` (unscaled latent -> pixels) and, if variational,
    ``_posterior`` (moments -> distribution).
    """

    config: AutoencoderConfig

    def __init__(self, config: AutoencoderConfig) -> None:
        super().__init__()
        self.config = config

    # -- what a model declares ----------------------------------------------------------------
    @property
    @abstractmethod
    def spatial_compression(self) -> int:
        """Pixels per latent position along H and W."""

    @property
    @abstractmethod
    def temporal_compression(self) -> int:
        """Frames per latent frame (a causal model keeps the first frame on its own)."""

    @property
    @abstractmethod
    def is_causal(self) -> bool:
        """True when ``T_lat = (T - 1) // tc + 1`` (first frame alone), False for ``T // tc``."""

    @abstractmethod
    def _encode_tile(self, x: Tensor) -> Tensor:
        """Pixels ``[B, C, T, H, W]`` to raw encoder output (moments or latent)."""

    @abstractmethod
    def _decode_tile(self, z: Tensor) -> Tensor:
        """Unscaled latent ``[B, latent_channels, T', H', W']`` to pixels."""

    def _posterior(self, moments: Tensor) -> DiagonalGaussianDistribution | None:
        """The posterior from encoder moments; ``None`` for a deterministic autoencoder."""
        return None

    # -- shapes -------------------------------------------------------------------------------
    @property
    def latent_channels(self) -> int:
        """Channels of the latent."""
        return self.config.latent_channels

    def valid_num_frames(self, num_frames: int) -> bool:
        """Whether a clip of ``num_frames`` frames can be encoded (4k+1 causal, 4k otherwise)."""
        tc = self.temporal_compression
        if self.is_causal:
            return num_frames >= 1 and (num_frames - 1) % tc == 0
        return num_frames >= tc and num_frames % tc == 0

    @property
    def num_frames_rule(self) -> str:
        """What :meth:`valid_num_frames` accepts, in words (``"4k+1"``, ``"a multiple of 4"``)."""
        tc = self.temporal_compression
        if tc == 1:
            return "any number of"
        return f"{tc}k+1" if self.is_causal else f"a multiple of {tc}"

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int]:
        """``(T_lat, H_lat, W_lat)`` of a clip; ValueError if the clip cannot be encoded."""
        self._check_pixel_shape(num_frames, height, width)
        tc, s = self.temporal_compression, self.spatial_compression
        frames = (num_frames - 1) // tc + 1 if self.is_causal else num_frames // tc
        return frames, height // s, width // s

    def num_frames_from_latent(self, latent_frames: int) -> int:
        """Frames that ``decode`` produces from ``latent_frames`` latent frames."""
        tc = self.temporal_compression
        return (latent_frames - 1) * tc + 1 if self.is_causal else latent_frames * tc

    def _check_pixel_shape(self, num_frames: int, height: int, width: int) -> None:
        if not self.valid_num_frames(num_frames):
            raise ValueError(
                f"{type(self).__name__} needs T = {self.num_frames_rule} frames, got {num_frames}"
            )
        s = self.spatial_compression
        if height % s or width % s or height < s or width < s:
            raise ValueError(
                f"{type(self).__name__} needs H and W to be multiples of {s}, got {height}x{width}"
            )

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"expected [B, {self.config.in_channels}, T, H, W], got {tuple(x.shape)}"
            )
        self._check_pixel_shape(*x.shape[2:])

    # -- tiling -------------------------------------------------------------------------------
    def set_tiling(self, **fields: object) -> None:
        """Change tiling settings (``use_spatial_tiling``, ``tile_sample_size``, ...)."""
        allowed = {
            "use_spatial_tiling",
            "use_temporal_tiling",
            "tile_sample_size",
            "tile_sample_frames",
            "tile_overlap_factor",
        }
        if unknown := set(fields) - allowed:
            raise ValueError(f"unknown tiling fields {sorted(unknown)}; valid: {sorted(allowed)}")
        config = dataclasses.replace(self.config, **fields)
        self._check_tiling(config)
        self.config = config

    def _check_tiling(self, config: AutoencoderConfig | None = None) -> None:
        c = config or self.config
        if c.tile_sample_size % self.spatial_compression:
            raise ValueError(
                f"tile_sample_size {c.tile_sample_size} must be a multiple of "
                f"{self.spatial_compression}"
            )
        if c.tile_sample_frames % self.temporal_compression:
            raise ValueError(
                f"tile_sample_frames {c.tile_sample_frames} must be a multiple of "
                f"{self.temporal_compression}"
            )

    def _plans(self, latent_thw: tuple[int, int, int], encoding: bool) -> list[AxisPlan]:
        c, s, tc = self.config, self.spatial_compression, self.temporal_compression
        spatial_tile = c.tile_sample_size // s if c.use_spatial_tiling else None
        temporal_tile = None
        if c.use_temporal_tiling:
            # A causal tile also carries its own first frame (64 frames -> 65, as in HunyuanVideo).
            temporal_tile = c.tile_sample_frames // tc + (1 if self.is_causal else 0)

        def spatial(start: int, end: int) -> Span:
            return start * s, end * s

        def temporal(start: int, end: int) -> Span:
            # Causal: latent frame j > 0 encodes frames 4j-3..4j, latent frame 0 frame 0 alone;
            # a tile starting at latent s starts at pixel frame 4s (its own "first frame").
            return (start * tc, (end - 1) * tc + 1) if self.is_causal else (start * tc, end * tc)

        t, h, w = latent_thw
        return [
            plan_axis(t, temporal_tile, c.tile_overlap_factor, temporal, encoding),
            plan_axis(h, spatial_tile, c.tile_overlap_factor, spatial, encoding),
            plan_axis(w, spatial_tile, c.tile_overlap_factor, spatial, encoding),
        ]

    # -- public API ---------------------------------------------------------------------------
    def _encode_unscaled(
        self, x: Tensor, sample: bool, generator: torch.Generator | None
    ) -> tuple[Tensor, DiagonalGaussianDistribution | None]:
        self._check_input(x)
        plans = self._plans(self.latent_shape(*x.shape[2:]), encoding=True)
        moments = run_tiled(self._encode_tile, x, plans)
        posterior = self._posterior(moments)
        if posterior is None:
            return moments, None
        return (posterior.sample(generator) if sample else posterior.mode()), posterior

    def _decode_unscaled(self, z: Tensor) -> Tensor:
        if z.dim() != 5 or z.shape[1] != self.latent_channels:
            raise ValueError(
                f"expected a latent [B, {self.latent_channels}, T, H, W], got {tuple(z.shape)}"
            )
        return run_tiled(self._decode_tile, z, self._plans(tuple(z.shape[2:]), encoding=False))

    def encode(
        self, x: Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> Tensor:
        """Pixels ``[B, C, T, H, W]`` in ``[-1, 1]`` to the scaled latent.

        Args:
            x: the clip.
            sample: draw from the posterior (a VAE; ignored by a deterministic autoencoder)
                instead of taking its mean.
            generator: random source for ``sample``.

        Returns:
            ``(z - shift_factor) * scaling_factor``, shape ``[B, latent_channels, *latent_shape]``.
        """
        z, _ = self._encode_unscaled(x, sample, generator)
        return (z - self.config.shift_factor) * self.config.scaling_factor

    def decode(self, z: Tensor) -> Tensor:
        """A scaled latent (as ``encode`` returns it) to pixels ``[B, C, T, H, W]``."""
        return self._decode_unscaled(z / self.config.scaling_factor + self.config.shift_factor)

    def forward(
        self, x: Tensor, sample: bool = True, generator: torch.Generator | None = None
    ) -> tuple[Tensor, DiagonalGaussianDistribution | None]:
        """Reconstruct ``x`` for training: ``(reconstruction, posterior or None)``.

        ``sample=True`` (the training default, as in Open-Sora) decodes a posterior sample.
        """
        z, posterior = self._encode_unscaled(x, sample, generator)
        return self._decode_unscaled(z), posterior
