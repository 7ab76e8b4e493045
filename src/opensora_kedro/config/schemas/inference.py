"""Inference presets (256px, 768px, t2i2v_256px) and the inference pipeline's own group."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from opensora_kedro.models.params import AutoencoderParams, MMDiTParams
from opensora_kedro.params import (
    Dtype,
    NonNegativeInt,
    PositiveInt,
    ResolutionName,
)
from opensora_kedro.runtime.params import PluginConfigParams, WorkerJobParams, plugin_issues
from opensora_kedro.sampling.params import InferenceCondType, SamplingParams
from opensora_kedro.text.params import TextEncoderParams


class InferenceParams(WorkerJobParams):
    """Generation settings; a preset states only what differs from the one it extends."""

    extends: str | None = Field(None, description="the preset this one inherits from")
    save_dir: str = Field("samples", description="folder of generated videos")
    seed: int = Field(42, description="base seed")
    batch_size: PositiveInt = Field(1, description="prompts generated together")
    dtype: Dtype = Field("bf16", description="inference precision ('auto': from the hardware)")
    cond_type: InferenceCondType = Field("t2v", description="conditioning on reference frames")
    sampling_option: SamplingParams = Field(description="sampler settings")
    motion_score: str | int = Field(
        "4",
        description="motion score put into the prompt ('auto': the one most training captions "
        "state, read from the training table)",
    )
    suffix_style: Literal["opensora", "training"] = Field(
        "opensora",
        description="prompt suffix form: Open-Sora's inference form ('24 FPS. 4 motion score.', "
        "for its released weights) or the training captions' form ('24 FPS, 4 motion score.')",
    )
    fps_save: PositiveInt = Field(24, description="frame rate of saved videos")
    model: MMDiTParams = Field(description="the diffusion model")
    ae: AutoencoderParams = Field(description="the video autoencoder")
    t5: TextEncoderParams = Field(description="T5 text encoder")
    clip: TextEncoderParams = Field(description="CLIP text encoder")
    plugin: Literal["hybrid"] | None = Field(None, description="parallel plugin for the model")
    plugin_config: PluginConfigParams | None = Field(None, description="its settings")
    plugin_ae: Literal["hybrid"] | None = Field(None, description="parallel plugin for the VAE")
    plugin_config_ae: PluginConfigParams | None = Field(None, description="its settings")
    use_t2i2v: bool = Field(False, description="make the first frame with an image model first")
    img_flux: MMDiTParams | None = Field(None, description="the image model of t2i2v")
    img_flux_ae: dict[str, Any] | None = Field(None, description="the image model's autoencoder")
    img_resolution: ResolutionName | None = Field(None, description="resolution of t2i2v images")
    prompt: str | None = Field(None, description="one prompt to generate")
    prompt_csv: str | None = Field(None, description="CSV of prompts (columns text, optional ref)")
    ref: str | None = Field(None, description="reference image or video for i2v/v2v")
    num_samples: PositiveInt = Field(1, description="videos per prompt")
    start_index: NonNegativeInt | None = Field(None, description="first prompt of the CSV")
    end_index: NonNegativeInt | None = Field(None, description="prompt after the last one")

    def cross_checks(self, context: dict[str, Any]) -> list[tuple[tuple, Any, str]]:
        issues = []
        frames = self.sampling_option.num_frames
        if self.sampling_option.is_causal_vae and (frames - 1) % 4:
            issues.append(
                (("sampling_option", "num_frames"), frames, "a causal VAE needs 4k+1 frames")
            )
        world = context.get("world_size", 1)
        issues += plugin_issues(self.plugin, self.plugin_config, self.model.num_heads, world)
        issues += [
            (("plugin_config_ae", *path[1:]), value, rule)
            for path, value, rule in plugin_issues(
                self.plugin_ae, self.plugin_config_ae, None, world
            )
            if path[0] == "plugin_config"
        ]
        if self.use_t2i2v and self.img_flux is None:
            issues.append((("img_flux",), None, "t2i2v needs the image model"))
        if self.start_index is not None and self.end_index is not None:
            if self.start_index >= self.end_index:
                issues.append((("start_index",), self.start_index,
                               f"must be below end_index ({self.end_index})"))  # fmt: skip
        return issues

    # At most one of each pair may be set: a --params value replaces the other one set in a
    # file (the explicit choice wins); both set at the same level is an error.
    ALTERNATIVES: ClassVar[tuple[tuple[str, str], ...]] = (("prompt", "prompt_csv"),)

    def inert_fields(self) -> list[tuple[tuple, str]]:
        found = []
        if self.ref and self.cond_type == "t2v":
            found.append((("ref",), "cond_type t2v uses no reference"))
        elif self.ref and self.prompt_csv and not self.prompt:
            found.append((("ref",), "ref goes with prompt; prompt_csv rows have a ref column"))
        if not self.prompt_csv:
            found += [
                ((name,), "only prompt_csv rows are indexed; prompt_csv is not set")
                for name in ("start_index", "end_index")
                if getattr(self, name) is not None
            ]
        if not self.use_t2i2v:
            found += [((name,), "use_t2i2v is false")
                      for name in ("img_flux", "img_flux_ae", "img_resolution")
                      if getattr(self, name) is not None]  # fmt: skip
        return found

    def input_paths(self) -> list[tuple[tuple, str]]:
        named = [(("prompt_csv",), self.prompt_csv)]
        if self.cond_type != "t2v" and self.prompt:
            named.append((("ref",), self.ref))
        return [(path, value) for path, value in named if value]

    def all_input_paths(self) -> list[tuple[tuple, str]]:
        if self.use_t2i2v:
            return super().all_input_paths()
        return [(p, v) for p, v in super().all_input_paths() if p[0] not in ("img_flux",)]
