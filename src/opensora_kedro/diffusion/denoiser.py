"""Open-Sora 2.0's sampler (brief §8.2): Euler steps over the shifted schedule with three-branch
classifier-free guidance, as ``opensora/utils/sampling.py::I2VDenoiser`` does it.

Convention (as in training): ``t = 1`` is noise, ``t = 0`` is data and the model predicts the
velocity ``dx/dt``, so one step is ``x <- x + (t_next - t) * v`` with ``t_next < t``.

Per step the model sees three branches, batched into one forward pass:

* ``v_c``: the prompt and the visual condition;
* ``v_u``: the negative (null) prompt and the visual condition;
* ``v_u2``: the negative prompt and no visual condition;

and the guided velocity is ``v_u2 + g_img·(v_u − v_u2) + g_txt·(v_c − v_u)``. Without a visual
condition ``v_u == v_u2`` and this is ordinary CFG, so only two branches are run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from opensora_kedro.diffusion.rectified_flow import shift_timesteps, time_shift_alpha

logger = logging.getLogger(__name__)

# Open-Sora's ``get_oscillation_gs(..., force_num=10)``: full guidance for the first 10 steps.
OSCILLATION_FORCE_STEPS = 10

VelocityModel = Callable[..., Tensor]


# --------------------------------------------------------------------------- schedule


def num_latent_frames(num_frames: int, temporal_reduction: int = 4, causal: bool = True) -> int:
    """Latent frames of a ``num_frames`` clip: ``(n − 1)//r + 1`` (causal VAE) or ``n//r``.

    A single frame is always one latent frame.
    """
    if num_frames == 1:
        return 1
    if causal:
        return (num_frames - 1) // temporal_reduction + 1
    return num_frames // temporal_reduction


def sampling_timesteps(
    num_steps: int,
    latent_hw: tuple[int, int],
    latent_frames: int,
    patch_size: int = 2,
    shift: bool = True,
    flow_shift: float | None = None,
) -> Tensor:
    """The ``num_steps + 1`` timesteps from 1 (noise) down to 0 (data), float32.

    ``linspace(1, 0, num_steps + 1)`` pushed towards noise with the training shift
    ``α = lin(tokens per frame)·sqrt(T_lat)`` (:func:`time_shift_alpha`); ``flow_shift``
    overrides α and ``shift=False`` keeps the schedule linear.

    Raises:
        ValueError: ``num_steps < 1``.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    t = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64)
    if shift:
        alpha = (
            flow_shift
            if flow_shift is not None
            else time_shift_alpha(latent_hw, latent_frames, patch_size)
        )
        t = shift_timesteps(t, alpha)
        logger.debug("sampling schedule: %d steps, shift alpha %.4f", num_steps, alpha)
    # The shift fixes 0 and 1 mathematically; pin them so rounding cannot leave residual noise.
    t[0], t[-1] = 1.0, 0.0
    return t.float()


# --------------------------------------------------------------------------- guidance scales


def oscillation_scale(scale: float, step: int, force_steps: int = OSCILLATION_FORCE_STEPS) -> float:
    """Open-Sora's oscillating guidance (``get_oscillation_gs``) for 0-based step ``step``.

    ``scale`` for ``step < force_steps``; afterwards ``scale`` on even steps and 1.0 (no
    guidance) on odd ones.
    """
    if step < force_steps or step % 2 == 0:
        return scale
    return 1.0


def guidance_scales(
    scale: float,
    num_steps: int,
    oscillate: bool,
    force_steps: int = OSCILLATION_FORCE_STEPS,
) -> list[float]:
    """The guidance scale of each of ``num_steps`` steps (constant unless ``oscillate``)."""
    if not oscillate:
        return [scale] * num_steps
    return [oscillation_scale(scale, i, force_steps) for i in range(num_steps)]


def temporal_image_guidance(
    image_scale: float, step: int, num_steps: int, latent_frames: int
) -> Tensor:
    """Per-latent-frame image guidance of ``scale_temporal_osci`` -> float32 ``[latent_frames]``.

    The step's upper bound ``linspace(image_scale, 1, num_steps + 1)[step]`` decays over
    denoising; within the step the scale ramps ``linspace(1, upper, latent_frames)`` so frame 0
    (next to the reference image) gets 1.0 and the last frame the most guidance.
    """
    upper = torch.linspace(image_scale, 1.0, num_steps + 1)[step]
    return torch.linspace(1.0, float(upper), latent_frames)


# --------------------------------------------------------------------------- noise


def seeded_noise(
    shape: Sequence[int],
    seed: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``N(0, I)`` noise of ``shape`` from a private generator: the same seed (on the same
    device type) gives the same noise, whatever the global RNG state."""
    generator = torch.Generator(device=device).manual_seed(seed)
    return torch.randn(*shape, generator=generator, device=device, dtype=dtype)


# --------------------------------------------------------------------------- denoising


def _batch(x: Tensor, batch: int) -> Tensor:
    """Broadcast a batch-1 null embedding to the prompts' batch."""
    if x.shape[0] == batch:
        return x
    if x.shape[0] == 1:
        return x.expand(batch, *x.shape[1:])
    raise ValueError(f"null embedding batch {x.shape[0]} does not match {batch}")


def _pin(x: Tensor, cond: Tensor) -> Tensor:
    """Overwrite the conditioned latent frames of ``x`` with the reference latent in ``cond``."""
    mask = cond[:, :1] > 0  # [B, 1, T, H, W], broadcast over channels
    return torch.where(mask, cond[:, 1:].to(x.dtype), x)


def _forward(
    model: VelocityModel,
    x: Tensor,
    txts: list[Tensor],
    ys: list[Tensor],
    conds: list[Tensor | None],
    t: Tensor,
    guidance_vec: Tensor,
) -> list[Tensor]:
    """All branches in one batched pass when their shapes allow it (as Open-Sora does), else
    one pass per branch (e.g. a null prompt embedded to a different length)."""
    n = len(txts)
    same_txt = all(tx.shape == txts[0].shape for tx in txts)
    all_cond = all(c is not None for c in conds)
    no_cond = all(c is None for c in conds)
    if same_txt and (all_cond or no_cond):
        cond = torch.cat(conds) if all_cond else None  # type: ignore[arg-type]
        out = model(
            x.repeat(n, *([1] * (x.dim() - 1))),
            torch.cat(txts),
            torch.cat(ys),
            t.repeat(n),
            cond=cond,
            guidance=guidance_vec.repeat(n),
        )
        return list(out.chunk(n))
    return [
        model(x, tx, y, t, cond=c, guidance=guidance_vec)
        for tx, y, c in zip(txts, ys, conds, strict=True)
    ]


@torch.no_grad()
def denoise(
    model: VelocityModel,
    noise: Tensor,
    txt: Tensor,
    y: Tensor,
    null_txt: Tensor,
    null_y: Tensor,
    timesteps: Tensor | Sequence[float],
    guidance: float = 7.5,
    guidance_img: float = 3.0,
    cond: Tensor | None = None,
    *,
    text_osci: bool = False,
    image_osci: bool = False,
    scale_temporal_osci: bool = False,
    guidance_img_frames: Tensor | None = None,
    pin_condition_every_step: bool = True,
    force_steps: int = OSCILLATION_FORCE_STEPS,
) -> Tensor:
    """Integrate the model's velocity from ``noise`` (t = 1) to a latent (t = 0).

    Args:
        model: ``model(img, txt, y, timesteps, cond=..., guidance=...)`` -> velocity, e.g.
            :class:`~opensora_kedro.models.mmdit.MMDiT`.
        noise: starting latent ``[B, C, T, H, W]`` (see :func:`seeded_noise`).
        txt, y: prompt T5 tokens ``[B, L, D]`` and pooled CLIP vector ``[B, D']``.
        null_txt, null_y: the negative prompt's (Open-Sora: the empty string's) embeddings;
            batch 1 is broadcast.
        timesteps: ``[num_steps + 1]`` from 1 to 0 (:func:`sampling_timesteps`).
        guidance: text guidance ``g_txt``.
        guidance_img: image guidance ``g_img``; unused without ``cond``.
        cond: visual condition ``[B, C + 1, T, H, W]`` = ``cat([mask, mask·ref_latent])``
            (:func:`~opensora_kedro.diffusion.rectified_flow.prepare_visual_condition`), or
            ``None`` for t2v (plain CFG).
        text_osci, image_osci: oscillate the text / image guidance (:func:`oscillation_scale`).
        scale_temporal_osci: ramp the image guidance over latent frames
            (:func:`temporal_image_guidance`) on steps whose image scale is > 1. Open-Sora turns
            this on only for i2v condition types (not v2v, not t2v); the caller decides.
        guidance_img_frames: a fixed per-latent-frame image guidance ``[T]`` used at every step
            instead of ``guidance_img`` and its oscillation/temporal schedules.
        pin_condition_every_step: overwrite the conditioned frames with the reference latent
            after every step (so the model always sees the clean reference there). ``False``
            is Open-Sora's behaviour: the frames evolve freely and are overwritten once at the
            end. Either way the returned latent holds the reference on every conditioned frame
            (Open-Sora's final overwrite covers the i2v types only, not v2v).
        force_steps: steps before oscillation starts.

    Returns:
        The denoised latent, same shape and dtype as ``noise``.
    """
    ts = torch.as_tensor(timesteps, dtype=torch.float64).tolist()
    num_steps = len(ts) - 1
    b, _, frames = noise.shape[:3]
    if cond is not None and cond.shape[2] != frames:
        raise ValueError(f"cond has {cond.shape[2]} frames, the latent {frames}")
    null_txt, null_y = _batch(null_txt, b), _batch(null_y, b)
    text_scales = guidance_scales(guidance, num_steps, text_osci, force_steps)
    image_scales = guidance_scales(guidance_img, num_steps, image_osci, force_steps)
    guidance_vec = torch.full((b,), guidance, device=noise.device, dtype=noise.dtype)

    x = noise
    if cond is not None and pin_condition_every_step:
        x = _pin(x, cond)
    for i, (t_curr, t_next) in enumerate(zip(ts[:-1], ts[1:], strict=True)):
        t_vec = torch.full((b,), t_curr, device=x.device, dtype=x.dtype)
        g_txt = text_scales[i]
        if cond is None:
            v_c, v_u = _forward(
                model, x, [txt, null_txt], [y, null_y], [None, None], t_vec, guidance_vec
            )
            v = v_u + g_txt * (v_c - v_u)
        else:
            v_c, v_u, v_u2 = _forward(
                model,
                x,
                [txt, null_txt, null_txt],
                [y, null_y, null_y],
                [cond, cond, torch.zeros_like(cond)],
                t_vec,
                guidance_vec,
            )
            g_img: float | Tensor = image_scales[i]
            if guidance_img_frames is not None:
                g_img = guidance_img_frames.to(x)[None, None, :, None, None]
            elif scale_temporal_osci and g_img > 1.0:
                ramp = temporal_image_guidance(g_img, i, num_steps, frames)
                g_img = ramp.to(x)[None, None, :, None, None]
            v = v_u2 + g_img * (v_u - v_u2) + g_txt * (v_c - v_u)
        x = x + (t_next - t_curr) * v
        if cond is not None and pin_condition_every_step:
            x = _pin(x, cond)
    if cond is not None:
        x = _pin(x, cond)
    logger.debug("denoised %s in %d steps", tuple(x.shape), num_steps)
    return x
