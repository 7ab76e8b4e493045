"""Open-Sora's VAE training loss: L1 reconstruction + LPIPS perceptual term + KL (brief §9.3).

``VAELoss`` follows ``opensora/models/vae/losses.py``: frames are flattened to images, the
per-pixel L1 and the per-frame LPIPS distance (broadcast over the frame's pixels) are summed and
divided by the batch size, the posterior's KL likewise. Open-Sora divides the NLL by
``exp(logvar)`` and adds ``logvar``, with a ``logvar`` the optimizer never sees, so it stays 0
and the NLL is just ``L1 + w_p * LPIPS``; that constant is left out here.

The perceptual network is never random: :class:`LPIPS` must load weights (VGG16 features plus
the five 1x1 "lin" layers, in the key layout of the ``lpips`` / taming packages) from a local
safetensors file. Without one the perceptual term is switched off with a warning.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from opensora_kedro.models.vae.base import DiagonalGaussianDistribution

logger = logging.getLogger(__name__)

VGG16_CHANNELS = (64, 128, 256, 512, 512)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
# torchvision's vgg16.features cut into LPIPS's five slices: (first index, conv widths).
_VGG16_SLICES = (
    (0, (3, 64, 64)),
    (4, (64, 128, 128)),
    (9, (128, 256, 256, 256)),
    (16, (256, 512, 512, 512)),
    (23, (512, 512, 512, 512)),
)
# LPIPS's input normalisation (ImageNet statistics in [-1, 1] units); constants, not weights.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def _vgg_slice(first_index: int, widths: tuple[int, ...]) -> nn.Sequential:
    """One LPIPS slice with torchvision's module indices (so ``net.slice2.5.weight`` etc.)."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    index = first_index
    if first_index > 0:  # every slice but the first starts with the max-pool
        layers[str(index)] = nn.MaxPool2d(2, 2)
        index += 1
    for c_in, c_out in itertools.pairwise(widths):
        layers[str(index)] = nn.Conv2d(c_in, c_out, 3, padding=1)
        layers[str(index + 1)] = nn.ReLU()
        index += 2
    return nn.Sequential(layers)


class _VGG16Features(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        for number, (first, widths) in enumerate(_VGG16_SLICES, start=1):
            self.add_module(f"slice{number}", _vgg_slice(first, widths))

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for number in range(1, len(_VGG16_SLICES) + 1):
            x = getattr(self, f"slice{number}")(x)
            features.append(x)
        return features


class _NetLinLayer(nn.Module):
    """A 1x1 conv to one channel; index 0 stands where LPIPS has its dropout (unused)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))


class LPIPS(nn.Module):
    """LPIPS distance (Zhang et al. 2018) with a VGG16 backbone; frozen, eval only.

    Build it with :meth:`from_pretrained`: the constructor alone gives an *untrained* network,
    which is not a perceptual metric. Inputs are images ``[N, 3, H, W]`` in ``[-1, 1]``.
    """

    def __init__(self) -> None:
        super().__init__()
        self._register_constants()
        self.net = _VGG16Features()
        for index, channels in enumerate(VGG16_CHANNELS):
            self.add_module(f"lin{index}", _NetLinLayer(channels))
        self.requires_grad_(False)
        self.eval()

    def _register_constants(self) -> None:
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> LPIPS:
        """Load every LPIPS tensor from a safetensors file; raise if any is missing.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: the file lacks some of the network's tensors.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no LPIPS weights at {path}")
        state = load_file(str(path), device="cpu")
        # Some conversions carry LPIPS's normalisation buffers; they are constants here.
        state = {k: v for k, v in state.items() if not k.startswith("scaling_layer.")}
        with torch.device("meta"):  # no random init to throw away: every tensor comes from file
            model = cls()
        result = model.load_state_dict(state, strict=False, assign=True)
        model._register_constants()
        if result.missing_keys:
            raise ValueError(
                f"LPIPS weights {path} lack {len(result.missing_keys)} tensor(s), e.g. "
                f"{result.missing_keys[:5]}; a partly random perceptual network is not used"
            )
        if result.unexpected_keys:
            logger.warning("LPIPS weights %s: ignored keys %s", path, result.unexpected_keys[:5])
        logger.info("loaded LPIPS weights from %s", path)
        return model

    def train(self, mode: bool = True) -> LPIPS:
        """Stay in eval mode: the network is a fixed metric."""
        return super().train(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Distance per image, shape ``[N, 1, 1, 1]`` (differentiable in both inputs)."""
        features_x = self.net((x - self.shift) / self.scale)
        features_y = self.net((y - self.shift) / self.scale)
        total = x.new_zeros(x.shape[0], 1, 1, 1)
        for index, (fx, fy) in enumerate(zip(features_x, features_y, strict=True)):
            diff = (_unit_normalise(fx) - _unit_normalise(fy)).square()
            lin = getattr(self, f"lin{index}").model
            total = total + lin(diff).mean(dim=(2, 3), keepdim=True)
        return total


def _unit_normalise(x: Tensor, eps: float = 1e-10) -> Tensor:
    """Scale each position's feature vector to unit length (LPIPS's ``normalize_tensor``)."""
    return x / (x.square().sum(dim=1, keepdim=True).sqrt() + eps)


def _frames(video: Tensor) -> Tensor:
    """``[B, C, T, H, W]`` -> ``[B*T, C, H, W]``."""
    b, c, t, h, w = video.shape
    return video.transpose(1, 2).reshape(b * t, c, h, w)


class VAELoss(nn.Module):
    """``l1_loss_weight`` * L1 + ``perceptual_loss_weight`` * LPIPS + ``kl_loss_weight`` * KL,
    reduced as Open-Sora does: summed over every element and divided by the batch size.

    Args:
        perceptual_loss_weight: weight of LPIPS (0.5 in Open-Sora's DC-AE config).
        kl_loss_weight: weight of the KL term (brief: class default 5e-4; 0 for DC-AE).
        l2_loss_weight: weight of a squared-error term (not in Open-Sora, 0 there): without
            the perceptual term, L1 alone settles on the background of small-object clips.
        l1_loss_weight: weight of the L1 term (1 in Open-Sora).
        perceptual_weights_path: local safetensors file of LPIPS weights; ``None`` or a
            missing file switches the perceptual term off (with a warning).
    """

    def __init__(
        self,
        perceptual_loss_weight: float = 0.1,
        kl_loss_weight: float = 5e-4,
        perceptual_weights_path: str | Path | None = None,
        l2_loss_weight: float = 0.0,
        l1_loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        self.l1_loss_weight, self.l2_loss_weight = l1_loss_weight, l2_loss_weight
        self.perceptual_loss_weight = perceptual_loss_weight
        self.kl_loss_weight = kl_loss_weight
        self.lpips = self._load_lpips(perceptual_weights_path, perceptual_loss_weight)

    @staticmethod
    def _load_lpips(path: str | Path | None, weight: float) -> LPIPS | None:
        if weight <= 0:
            return None
        if path is None or not Path(path).is_file():
            where = "no path configured" if path is None else f"no file at {path}"
            logger.warning("perceptual (LPIPS) loss is OFF: %s; training uses L1 + KL only", where)
            return None
        return LPIPS.from_pretrained(path)

    @property
    def perceptual_enabled(self) -> bool:
        """Whether the LPIPS term is computed."""
        return self.lpips is not None

    def forward(
        self,
        x: Tensor,
        reconstruction: Tensor,
        posterior: DiagonalGaussianDistribution | None = None,
    ) -> dict[str, Tensor]:
        """Loss terms for a batch of clips ``[B, C, T, H, W]`` in ``[-1, 1]``.

        Returns:
            ``reconstruction`` (L1), ``perceptual`` (LPIPS, 0 when off), ``kl`` (0 without a
            posterior), ``l2``, each unweighted and reduced as sum / B, and ``total``, their
            weighted sum.
        """
        batch = x.shape[0]
        frames, rec_frames = _frames(x), _frames(reconstruction)
        l1 = (frames - rec_frames).abs().sum() / batch
        perceptual = l1.new_zeros(())
        if self.lpips is not None:
            per_frame = self.lpips(_as_rgb(frames), _as_rgb(rec_frames)).flatten()
            # Open-Sora adds the frame's distance to every pixel of that frame before summing.
            perceptual = per_frame.sum() * frames[0].numel() / batch
        kl = l1.new_zeros(())
        if posterior is not None:
            kl = posterior.kl().sum() / batch
        l2 = (
            (frames - rec_frames).square().sum() / batch
            if self.l2_loss_weight
            else l1.new_zeros(())
        )
        total = (
            self.l1_loss_weight * l1
            + self.l2_loss_weight * l2
            + self.perceptual_loss_weight * perceptual
            + self.kl_loss_weight * kl
        )
        return {"reconstruction": l1, "l2": l2, "perceptual": perceptual, "kl": kl, "total": total}


def _as_rgb(images: Tensor) -> Tensor:
    """Grey frames repeated to three channels, as Open-Sora does before LPIPS."""
    if images.shape[1] == 1:
        return images.expand(-1, 3, -1, -1)
    if images.shape[1] != 3:
        raise ValueError(f"LPIPS needs 1 or 3 channels, got {images.shape[1]}")
    return images
