"""Generation: settings, sizes, seeded determinism, conditioning kept, t2i2v, loading, saving."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from opensora_kedro.config.schemas.inference import InferenceParams
from opensora_kedro.models.loading import TextEncoders, load_generation_models
from opensora_kedro.models.mmdit import build_mmdit
from opensora_kedro.models.vae.registry import build_vae, save_vae_weights
from opensora_kedro.sampling.generate import (
    fit_image,
    generate,
    generate_images,
    generate_latents,
    generate_t2i2v,
    save_sample,
)
from opensora_kedro.sampling.references import encode_frames
from opensora_kedro.sampling.settings import (
    SamplingSettings,
    check_num_frames,
    final_prompts,
    sample_seeds,
    target_size,
)
from opensora_kedro.text.embedder import TextEmbedder
from opensora_kedro.video.codec import encode_image
from opensora_kedro.video.decode import read_frames
from tests.conftest import gradient_frames
from tests.text import MAX_LENGTH, build_encoders, one_torch_thread

SIZE = (32, 32)
SETTINGS = SamplingSettings(
    resolution="32px", aspect_ratio="1:1", num_frames=9, num_steps=3, dtype="fp32"
)
PROMPTS = ["a red circle moving left", "a blue square"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return build_encoders(tmp_path_factory.mktemp("encoders"))


@pytest.fixture(scope="module")
def encoders(folders) -> TextEncoders:
    return TextEncoders(*(TextEmbedder(r, folders[r], MAX_LENGTH) for r in ("t5", "clip")))


def tiny_model(cond_embed: bool = True, guidance_embed: bool = False, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build_mmdit("tiny", cond_embed=cond_embed, guidance_embed=guidance_embed).eval()
    # The zero-initialised output (and condition) layers would make every sample trivial.
    for layer in [model.final_layer.linear] + ([model.cond_in] if cond_embed else []):
        nn.init.normal_(layer.weight, std=0.02)
    return model


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return tiny_model()


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return build_vae("tiny_vae").eval()


# --------------------------------------------------------------------------- settings


def inference_params(fields: dict) -> InferenceParams:
    """An ``inference`` group of ``fields`` (the models it names are not loaded here)."""
    encoder = {"from_pretrained": "encoder", "max_length": MAX_LENGTH}
    required = {"model": {}, "ae": {"type": "tiny_vae"}, "t5": encoder, "clip": encoder,
                "sampling_option": {}}  # fmt: skip
    return InferenceParams.model_validate({**required, **fields})


def test_settings_from_inference_params() -> None:
    params = {
        "seed": 7, "batch_size": 2, "cond_type": "i2v_head", "motion_score": "5",
        "fps_save": 16, "dtype": "fp32", "model": {"patch_size": 1},
        "sampling_option": {"resolution": "96px", "num_frames": 17, "seed": None,
                            "guidance": 5.0, "method": "i2v"},
    }  # fmt: skip
    settings = SamplingSettings.from_inference(inference_params(params))
    assert (settings.seed, settings.batch_size, settings.cond_type) == (7, 2, "i2v_head")
    assert (settings.resolution, settings.num_frames, settings.guidance) == ("96px", 17, 5.0)
    assert (settings.patch_size, settings.fps_save, settings.motion_score) == (1, 16, "5")
    params["sampling_option"]["seed"] = 3
    assert SamplingSettings.from_inference(inference_params(params)).seed == 3
    assert sample_seeds(settings, 2, sample_index=1) == [8, 8]
    params["sampling_option"]["num_frames"] = 16
    with pytest.raises(ValueError, match="4k\\+1"):
        SamplingSettings.from_inference(inference_params(params))


def test_check_num_frames() -> None:
    for ok in (1, 9, 17, 129):
        check_num_frames(ok)
    with pytest.raises(ValueError, match="num_frames must be 4k\\+1 .* got 16"):
        check_num_frames(16)
    check_num_frames(16, causal=False)
    with pytest.raises(ValueError, match="multiple of 4"):
        check_num_frames(17, causal=False)


@pytest.mark.parametrize(
    ("resolution", "ratio", "size"),
    [("256px", "16:9", (192, 336)), ("256px", "1:1", (256, 256)), ("256px", "2.39:1", (160, 384)),
     ("768px", "16:9", (576, 1024)), ("768px", "9:16", (1024, 576)), ("96px", "16:9", (64, 144)),
     ("32px", "1:1", (32, 32))],
)  # fmt: skip
def test_target_size_matches_open_sora_table(resolution, ratio, size) -> None:
    assert target_size(resolution, ratio) == size
    if resolution in ("256px", "768px"):  # DC-AE: 32 px per token
        h, w = target_size(resolution, ratio, spatial_compression=32, patch_size=1)
        assert h % 32 == 0 and w % 32 == 0


def test_final_prompts_suffix() -> None:
    assert final_prompts(["a cat"], SETTINGS) == ["a cat. 24 FPS. 4 motion score."]


# --------------------------------------------------------------------------- generation


def test_same_seed_same_video_other_seed_differs(model, vae, encoders) -> None:
    torch.manual_seed(1)  # the global RNG must not matter
    first = generate(model, vae, encoders, PROMPTS[:1], SETTINGS, [5])
    torch.manual_seed(2)
    again = generate(model, vae, encoders, PROMPTS[:1], SETTINGS, [5])
    other = generate(model, vae, encoders, PROMPTS[:1], SETTINGS, [6])
    assert first[0].shape == (9, 32, 32, 3) and first[0].dtype == np.uint8
    assert np.array_equal(first[0], again[0])
    assert not np.array_equal(first[0], other[0])


def test_batches_and_count_checks(model, vae, encoders) -> None:
    settings = dataclasses.replace(SETTINGS, batch_size=2)
    videos = generate(model, vae, encoders, [*PROMPTS, "x"], settings, [1, 2, 3])
    assert len(videos) == 3
    with pytest.raises(ValueError, match="1 seeds for 2 prompts"):
        generate(model, vae, encoders, PROMPTS, settings, [1])
    with pytest.raises(ValueError, match="4k\\+1"):
        generate(model, vae, encoders, PROMPTS[:1], dataclasses.replace(SETTINGS, num_frames=8),
                 [1])  # fmt: skip


@pytest.mark.parametrize(
    ("cond_type", "frames", "pixels"),
    [("i2v_head", [0], [0]), ("i2v_tail", [2], [8]), ("i2v_loop", [0], [0]),
     ("v2v_head_half", [0, 1], [0, 4]), ("v2v_tail_half", [1, 2], [4, 8])],
)  # fmt: skip
def test_conditioned_frames_hold_the_reference(
    model, vae, encoders, cond_type, frames, pixels
) -> None:
    ref = gradient_frames(9, 32, 32)
    latents = generate_latents(model, vae, encoders, PROMPTS[:1], SETTINGS, [4], [ref], cond_type)
    expected = encode_frames(vae, ref[pixels[0] : pixels[-1] + 1], SIZE)
    assert torch.equal(latents[:, :, frames], expected)
    free = [f for f in range(3) if f not in frames and not (cond_type == "i2v_loop" and f == 2)]
    assert not torch.allclose(latents[:, :, free], torch.zeros_like(latents[:, :, free]))


def test_i2v_head_video_starts_with_the_reconstructed_reference(
    model, vae, encoders, tmp_path
) -> None:
    image = gradient_frames(1, 48, 64)[0]
    path = tmp_path / "ref.png"
    path.write_bytes(encode_image(image, ".png"))
    video = generate(model, vae, encoders, PROMPTS[:1], SETTINGS, [3], [str(path)], "i2v_head")[0]
    with torch.no_grad():  # the tiny VAE is causal: decoded frame 0 sees latent frame 0 only
        recon = vae.decode(encode_frames(vae, image[None], SIZE))[0, :, 0]
    expected = ((recon.clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy()
    assert np.abs(video[0].astype(int) - expected.astype(int)).max() <= 1


def test_missing_reference_and_too_few_latent_frames(model, vae, encoders) -> None:
    with pytest.raises(ValueError, match="needs a reference"):
        generate(model, vae, encoders, PROMPTS[:1], SETTINGS, [1], cond_type="i2v_tail")
    with pytest.raises(ValueError, match="v2v_head conditions 9 latent frames"):
        generate(model, vae, encoders, PROMPTS[:1], SETTINGS, [1], [gradient_frames(40, 32, 32)],
                 "v2v_head")  # fmt: skip


# --------------------------------------------------------------------------- t2i2v


def test_t2i2v_starts_the_video_from_the_generated_image(model, vae, encoders) -> None:
    image_model = tiny_model(cond_embed=False, seed=1)
    settings = dataclasses.replace(SETTINGS, use_t2i2v=True, img_resolution="48px")
    videos, images = generate_t2i2v(model, vae, image_model, vae, encoders, PROMPTS[:1],
                                    settings, [2])  # fmt: skip
    assert images[0].shape == (48, 48, 3) and videos[0].shape == (9, 32, 32, 3)
    first = fit_image(images[0], SIZE)
    assert first.shape == (1, 32, 32, 3)
    with torch.no_grad():
        recon = vae.decode(encode_frames(vae, first, SIZE))[0, :, 0]
    expected = ((recon.clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy()
    assert np.abs(videos[0][0].astype(int) - expected.astype(int)).max() <= 1


def test_distilled_image_model_gets_one_pass_per_step(vae, encoders) -> None:
    image_model = tiny_model(cond_embed=False, guidance_embed=True)
    calls: list[torch.Tensor] = []
    image_model.register_forward_pre_hook(lambda _m, args, kw: calls.append(kw["guidance"]),
                                          with_kwargs=True)  # fmt: skip
    images = generate_images(image_model, vae, encoders, PROMPTS[:1], SETTINGS, [1])
    assert images[0].shape == (32, 32, 3) and len(calls) == SETTINGS.num_steps
    assert all(torch.equal(g, torch.tensor([4.0])) for g in calls)


# --------------------------------------------------------------------------- loading, saving


def _export(tmp_path: Path, folders) -> dict:
    model_dir, vae_dir = tmp_path / "diffusion", tmp_path / "vae"
    model_dir.mkdir()
    t2v = tiny_model(cond_embed=False)  # a t2v export, loaded into the i2v architecture
    save_file(t2v.state_dict(), str(model_dir / "model.safetensors"))
    (model_dir / "config.json").write_text(json.dumps({"cond_embed": False, "size": "tiny"}))
    save_vae_weights(build_vae("tiny_vae"), vae_dir)
    (vae_dir / "config.json").write_text(json.dumps({"type": "tiny_vae", "config": {}}))
    structure = {
        "in_channels": 16,
        "vec_in_dim": 64,
        "context_in_dim": 64,
        "hidden_size": 64,
        "num_heads": 2,
        "depth": 2,
        "depth_single_blocks": 2,
        "axes_dim": [8, 12, 12],
    }
    return {
        "dtype": "fp32",
        "sampling_option": {},
        "model": {"type": "flux", "from_pretrained": "diffusion", "cond_embed": True,
                  "use_liger_rope": False, "strict_load": False, **structure},
        "ae": {"type": "tiny_vae", "from_pretrained": "vae", "latent_channels": 4},
        "t5": {"from_pretrained": str(folders["t5"]), "max_length": MAX_LENGTH},
        "clip": {"from_pretrained": str(folders["clip"]), "max_length": MAX_LENGTH},
        "use_t2i2v": True,
        "img_flux": {"from_pretrained": str(model_dir), **structure},
        "img_flux_ae": {"type": "tiny_vae", "from_pretrained": str(vae_dir)},
    }  # fmt: skip


def test_load_generation_models(tmp_path, folders) -> None:
    params = _export(tmp_path, folders)
    models = load_generation_models(InferenceParams.model_validate(params), "cpu", tmp_path)
    assert models.model.config.cond_embed and not models.model.cond_in.weight.any()
    assert models.image_model is not None and not models.image_model.config.cond_embed
    assert models.vae.latent_channels == 4 and models.image_vae is not None
    assert models.encoders.embed(["a"])[0].shape == (1, MAX_LENGTH, 64)
    params["model"]["hidden_size"], params["model"]["axes_dim"] = 128, [16, 24, 24]
    with pytest.raises(ValueError, match="differ from"):
        load_generation_models(InferenceParams.model_validate(params), "cpu", tmp_path)
    params["model"]["from_pretrained"] = "nowhere"
    with pytest.raises(FileNotFoundError, match="no diffusion model weights"):
        load_generation_models(InferenceParams.model_validate(params), "cpu", tmp_path)


def test_save_sample_is_atomic_and_complete(tmp_path) -> None:
    frames = gradient_frames(9, 32, 32)
    video, text = save_sample(frames, "a cat. 24 FPS.", tmp_path / "out", "sample_0000", 24)
    assert (video.name, text.name) == ("sample_0000.mp4", "sample_0000.txt")
    assert text.read_text() == "a cat. 24 FPS."
    assert read_frames(video).shape == (9, 32, 32, 3)
    assert sorted(p.name for p in video.parent.iterdir()) == ["sample_0000.mp4", "sample_0000.txt"]


def test_t2i2v_from_flux_format_image_files(tmp_path, folders, model, vae, encoders) -> None:
    """img_flux as FLUX.1-dev ships (fused qkv, guidance, interleaved RoPE) and img_flux_ae
    as an autoencoder_2d file load through the inference parameters and generate."""
    from opensora_kedro.models.mmdit import mmdit_config
    from tests.models.mmdit_reference import foreign_state

    flux = mmdit_config("tiny", guidance_embed=True)
    save_file(foreign_state(flux, fused=True), str(tmp_path / "flux1-dev.safetensors"))
    save_vae_weights(build_vae("tiny_autoencoder_2d"), tmp_path / "flux1-dev-ae.safetensors")
    params = _export(tmp_path, folders)
    params["img_flux"] = {
        **params["img_flux"],
        "from_pretrained": "flux1-dev.safetensors",
        "guidance_embed": True,
        "use_liger_rope": False,
        "strict_load": False,
    }
    params["img_flux_ae"] = {"type": "tiny_autoencoder_2d", "from_pretrained": "flux1-dev-ae.safetensors",
                             "in_channels": 3, "out_ch": 3, "z_channels": 4}  # fmt: skip
    models = load_generation_models(InferenceParams.model_validate(params), "cpu", tmp_path)
    assert models.image_model.config.guidance_embed and models.image_vae.spatial_compression == 8
    settings = dataclasses.replace(SETTINGS, use_t2i2v=True, img_resolution="48px")
    videos, images = generate_t2i2v(model, vae, models.image_model, models.image_vae, encoders,
                                    PROMPTS[:1], settings, [3])  # fmt: skip
    assert images[0].shape == (48, 48, 3) and videos[0].shape == (9, 32, 32, 3)
    assert images[0].std() > 0
