"""Learned quality scores of clips from a CLIP model: aesthetics and caption match.

Per clip, ``frames`` frames evenly spaced over it go through CLIP's vision tower (a still: its
one frame). Two scores come out:

- ``aesthetic_score``: the LAION aesthetic predictor (christophschuhmann/improved-aesthetic-
  predictor, the "sac+logos+ava1-l14-linearMSE" head on ViT-L/14 image embeddings): an MLP on the
  L2-normalised image embedding, averaged over the sampled frames. NaN where no head is set.
- ``match_score``: as CLIPScore, 100 x the cosine between the caption's text embedding and the
  mean of the normalised frame embeddings, kept raw (not clipped at 0). NaN for a clip without
  a caption.

The released head is a PyTorch ``.pth`` state dict; convert it once with
``safetensors.torch.save_file(torch.load(pth, weights_only=True), "aesthetic.safetensors")``.
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from typing import Any

import torch
from torch import nn

from opensora_kedro.quality.params import QualityParams
from opensora_kedro.text.embedder import resolve_device
from opensora_kedro.video.decode import sample_frames

logger = logging.getLogger(__name__)

RESULT_COLUMNS = ["aesthetic_score", "match_score"]


# The settings stored with each clip's scores (``quality_settings``, and ``embedding_settings``
# of CLIP deduplication): a clip keeps its scores while they are unchanged.
SCORE_SETTINGS = ("clip_model", "aesthetic_head", "frames", "batch_size", "device")


class AestheticHead(nn.Module):
    """The LAION aesthetic predictor's MLP (no activations, as released).

    Its ``layers`` Sequential gives the released checkpoint's keys: ``layers.{0,2,4,6,7}``
    ``.weight`` / ``.bias`` (the dropouts at 1, 3, 5 hold no weights).
    """

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(embed_dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
            nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1),
        )  # fmt: skip

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Scores ``[N]`` of L2-normalised image embeddings ``[N, embed_dim]``."""
        return self.layers(embeddings).squeeze(-1)


def load_aesthetic_head(path: str | Path, embed_dim: int) -> AestheticHead:
    """The head in the safetensors file ``path``, checked against a CLIP of ``embed_dim``.

    A file made for another CLIP (input size) or another architecture (keys) is a
    ``ValueError`` that says which, not a bare size-mismatch trace.
    """
    from safetensors.torch import load_file

    state = load_file(str(path))
    head = AestheticHead(embed_dim)
    first = state.get("layers.0.weight")
    if first is not None and first.ndim == 2 and first.shape[1] != embed_dim:
        raise ValueError(
            f"aesthetic head {path} takes {first.shape[1]}-dim embeddings but the CLIP model's "
            f"projection_dim is {embed_dim}: the head was trained for another CLIP"
        )
    expected = head.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"aesthetic head {path} is not a LAION aesthetic MLP: missing keys {missing}, "
            f"unexpected keys {unexpected}"
        )
    try:
        head.load_state_dict(state, strict=True)
    except RuntimeError as error:  # layer sizes that differ from the released MLP
        raise ValueError(f"aesthetic head {path} does not fit the MLP: {error}") from None
    return head.eval()


def _caption(text: Any) -> str | None:
    """The row's caption, or ``None`` for a missing / NaN / blank one."""
    return text if isinstance(text, str) and text.strip() else None


class QualityScorer:
    """Per-clip scores for the stage engine: ``rows`` (``path``, ``num_frames``, ``text``) in,
    ``{"path", "aesthetic_score", "match_score"}`` out, one per row, in order; a clip that
    cannot be decoded gives ``{"path", "reason": "quality_failed", "detail"}``.

    ``params``: ``clip_model``, a folder holding a transformers ``CLIPModel`` and its
    ``CLIPProcessor`` (image processor + tokenizer), written with ``save_pretrained`` (only local
    files are read); ``aesthetic_head``, a ``.safetensors`` file of the LAION aesthetic MLP for
    this CLIP's projection size (``None``: no aesthetics, NaN); ``frames`` sampled evenly per
    clip (a still gives its one frame); ``batch_size`` clips per vision forward pass
    (``batch_size x frames`` images); ``device`` (``auto``: a GPU where there is one).

    Picklable before and after first use: the models load lazily in the process that scores
    (a Ray worker loads its own copy) and are not pickled.
    """

    uses_model = True
    failure = "quality_failed"

    def __init__(self, params: QualityParams) -> None:
        self.params = params
        self._loaded: tuple[Any, Any, AestheticHead | None, torch.device] | None = None
        self._lock = threading.Lock()  # a thread pool may share one scorer

    @property
    def batch_size(self) -> int:
        """Clips per call the engine passes (its ``batch_size`` attribute): the params'."""
        return self.params.batch_size

    def __getstate__(self) -> dict:
        return {"params": self.params}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["params"])

    def _models(self) -> tuple[Any, Any, AestheticHead | None, torch.device]:
        """CLIP model, processor, aesthetic head (or None) and device, loaded once."""
        with self._lock:
            if self._loaded is None:
                self._loaded = self._load()
            return self._loaded

    def _load(self) -> tuple[Any, Any, AestheticHead | None, torch.device]:
        from transformers import CLIPModel, CLIPProcessor

        folder, device = self.params.clip_model, resolve_device(self.params.device)
        if not Path(folder).is_dir():  # else transformers reads it as a hub name
            raise FileNotFoundError(f"CLIP model folder {folder} does not exist: save a CLIPModel "
                                    "and its CLIPProcessor there with save_pretrained")  # fmt: skip
        model = CLIPModel.from_pretrained(folder, local_files_only=True).to(device).eval()
        processor = CLIPProcessor.from_pretrained(folder, local_files_only=True)
        head = None
        if self.params.aesthetic_head is not None:
            head = load_aesthetic_head(self.params.aesthetic_head, model.config.projection_dim)
            head = head.to(device)
        logger.info("quality scorer: CLIP %s (projection %d) on %s, aesthetic head %s", folder,
                    model.config.projection_dim, device, self.params.aesthetic_head)  # fmt: skip
        return model, processor, head, device

    def __call__(self, rows: list[dict]) -> list[dict]:
        """Scores of ``rows``, ``batch_size`` clips per forward pass."""
        size = self.params.batch_size
        return [out for start in range(0, len(rows), size)
                for out in self._score_batch(rows[start : start + size])]  # fmt: skip

    def _score_batch(self, rows: list[dict]) -> list[dict]:
        pixels, results = self._pixels(rows)
        if pixels:
            texts = {i: _caption(rows[i].get("text")) for i in pixels}
            for index, (aesthetic, match) in self._scores(pixels, texts).items():
                results[index].update(aesthetic_score=aesthetic, match_score=match)
        return results

    def _pixels(self, rows: list[dict]) -> tuple[dict[int, torch.Tensor], list[dict]]:
        """The processed frames of each clip that decodes (by row index), and a result per
        row: ``{"path"}``, or the failure of a clip that does not."""
        _, processor, _, _ = self._models()  # a bad model path raises: setup
        pixels: dict[int, torch.Tensor] = {}
        results: list[dict] = []
        for index, row in enumerate(rows):
            try:  # decoding and preprocessing are per clip: a bad clip fails alone
                frames = sample_frames(row["path"], row["num_frames"], self.params.frames)
                pixels[index] = processor.image_processor(
                    images=frames, return_tensors="pt", input_data_format="channels_last"
                )["pixel_values"]  # channels_last: a 3-pixel-high frame is no channel axis
                results.append({"path": row["path"]})
            except Exception as error:  # noqa: BLE001 - one broken file must not stop the run
                results.append({"path": row["path"], "reason": self.failure,
                                "detail": f"{type(error).__name__}: {error}"})  # fmt: skip
        return pixels, results

    @torch.inference_mode()
    def _scores(
        self, pixels: dict[int, torch.Tensor], texts: dict[int, str | None]
    ) -> dict[int, tuple[float, float]]:
        """(aesthetic, match) per clip: the frames of every clip in one vision pass, the
        captions in one text pass."""
        model, processor, head, device = self._models()
        batch = torch.cat(list(pixels.values())).to(device)
        embeds = nn.functional.normalize(model.get_image_features(pixel_values=batch), dim=-1)
        frame_scores = head(embeds) if head is not None else None
        captioned = [i for i in pixels if texts[i] is not None]
        text_embeds = {}
        if captioned:
            tokens = processor.tokenizer(
                [texts[i] for i in captioned], padding=True, truncation=True,
                max_length=model.config.text_config.max_position_embeddings, return_tensors="pt",
            ).to(device)  # fmt: skip
            features = nn.functional.normalize(model.get_text_features(**tokens), dim=-1)
            text_embeds = dict(zip(captioned, features, strict=True))
        out, start = {}, 0
        for index, clip_pixels in pixels.items():
            span = slice(start, start + len(clip_pixels))
            start += len(clip_pixels)
            aesthetic = float(frame_scores[span].mean()) if frame_scores is not None else math.nan
            match = math.nan
            if index in text_embeds:
                clip_embed = nn.functional.normalize(embeds[span].mean(0), dim=-1)
                match = 100.0 * float(clip_embed @ text_embeds[index])
            out[index] = (aesthetic, match)
        return out


class ClipEmbedder(QualityScorer):
    """Clip embeddings for near-duplicate search: the normalised mean of a clip's normalised
    CLIP frame embeddings, ``{"path", "clip_embedding"}`` per row (the same engine contract,
    loading and frame sampling as :class:`QualityScorer`; the aesthetic head is not used)."""

    failure = "embedding_failed"

    def _score_batch(self, rows: list[dict]) -> list[dict]:
        pixels, results = self._pixels(rows)
        if pixels:
            for index, embedding in self._embeddings(pixels).items():
                results[index]["clip_embedding"] = embedding
        return results

    @torch.inference_mode()
    def _embeddings(self, pixels: dict[int, torch.Tensor]) -> dict[int, list[float]]:
        model, _, _, device = self._models()
        batch = torch.cat(list(pixels.values())).to(device)
        embeds = nn.functional.normalize(model.get_image_features(pixel_values=batch), dim=-1)
        out, start = {}, 0
        for index, clip_pixels in pixels.items():
            clip = embeds[start : start + len(clip_pixels)].mean(0)
            start += len(clip_pixels)
            out[index] = nn.functional.normalize(clip, dim=-1).float().cpu().tolist()
        return out
