"""Captions from a vision-language model: a few frames per clip, one prompt, greedy decoding.

Any image-text-to-text model that transformers' ``AutoModelForImageTextToText`` loads (LLaVA,
LLaVA-NeXT, Qwen2-VL, ...) together with its ``AutoProcessor``: each clip's frames go in as
that many images of one user turn, followed by the instruction, formatted by the processor's
own chat template so every model gets the prompt format it was trained on. The rows of a batch
are generated together (left padding, so every prompt ends where generation starts) and
greedily, so a clip's caption does not depend on the batch it fell in or on the run.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from opensora_kedro.video.decode import NoFramesError, sample_frames

if TYPE_CHECKING:  # the schemas import torch, which this module does without
    from opensora_kedro.captioning.params import CaptioningParams

logger = logging.getLogger(__name__)

DEFAULT_PROMPT = "Describe this video in one sentence."
# The settings stored with each caption (``captioning_settings``): a clip keeps its caption
# while they are unchanged.
CAPTION_SETTINGS = ("model", "prompt", "frames", "max_new_tokens", "batch_size", "device", "dtype")


class ClipFailure(Exception):
    """A clip that cannot be captioned, with the reason recorded for it."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def read_clip(path: str | os.PathLike, num_frames: int, frames: int) -> list[np.ndarray]:
    """:func:`~opensora_kedro.video.decode.sample_frames`, failing with the clip's reason."""
    try:
        return sample_frames(path, num_frames, frames)
    except NoFramesError as error:
        raise ClipFailure("no_frames", f"ValueError: {error}") from error
    except Exception as error:  # noqa: BLE001 - PyAV raises many kinds for a bad file
        raise ClipFailure("decode_failed", f"{type(error).__name__}: {error}") from error


def _failure(path: str, reason: str, detail: str) -> dict:
    return {"path": path, "reason": reason, "detail": detail}


class VlmCaptioner:
    """Captions clips: rows hold ``path`` and ``num_frames``; each gets back ``path``,
    ``caption`` and ``caption_model`` (the model folder's name), or a ``reason``.

    ``params``: the model folder (an image-text-to-text model and its processor, saved with
    ``save_pretrained``; nothing is downloaded), the prompt, the frames sampled evenly per clip
    (given as that many images in one prompt; a still, or a clip shorter than that, gives each
    of its frames once), the longest caption, the clips per ``generate`` call, the device and
    the weights' dtype (``auto``: as saved). LLaVA and LLaVA-NeXT take any number of
    ``<image>`` tokens in a turn (each is filled with its image's features in order), though
    LLaVA-1.5 was trained on one; Qwen2-VL and LLaVA-OneVision are trained on several.

    Picklable before first use: the processor and model load on the first call, inside the
    worker that runs it (and are left out of a pickle taken afterwards).
    """

    uses_model = True

    def __init__(self, params: CaptioningParams) -> None:
        self.params = params
        self.model_name = Path(params.model).name or str(params.model)
        self._processor: Any = None
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def batch_size(self) -> int:
        """Clips per call the engine should hand over: one ``generate`` batch."""
        return self.params.batch_size

    def __getstate__(self) -> dict:
        return {"params": self.params, "model_name": self.model_name}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["params"])

    def load(self) -> None:
        """Load the processor and the model (once; a bad folder raises here)."""
        with self._lock:  # threads of one pool share one model
            if self._model is not None:
                return
            from transformers import AutoModelForImageTextToText, AutoProcessor

            folder = self.params.model
            if not Path(folder).is_dir():  # else transformers reads it as a hub repo id
                raise FileNotFoundError(f"no VLM folder at {folder} (captioning.model)")
            processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
            # Left padding: every row's prompt ends at the last column, where generation starts.
            processor.tokenizer.padding_side = "left"
            model = AutoModelForImageTextToText.from_pretrained(
                folder, local_files_only=True, torch_dtype=self.params.dtype
            )
            self._processor, self._model = processor, model.to(self.params.device).eval()
            logger.info("captioning with %s (%s) on %s", self.model_name,
                        type(model).__name__, self.params.device)  # fmt: skip

    def prompt_text(self, images: int) -> str:
        """The model's prompt for ``images`` frames and the instruction (its chat template)."""
        content = [{"type": "image"}] * images + [{"type": "text", "text": self.params.prompt}]
        conversation = [{"role": "user", "content": content}]
        return self._processor.apply_chat_template(conversation, add_generation_prompt=True)

    def generate(self, clips: list[list[np.ndarray]]) -> list[str]:
        """One caption per clip (its frames), from one ``generate`` call; prompt stripped."""
        import torch

        texts = [self.prompt_text(len(frames)) for frames in clips]
        images = [frame for frames in clips for frame in frames]
        inputs = self._processor(images=images, text=texts, padding=True, return_tensors="pt")
        inputs = inputs.to(self._model.device, dtype=self._model.dtype)  # casts floats only
        tokenizer = self._processor.tokenizer
        pad = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        with torch.inference_mode():
            output = self._model.generate(
                **inputs, max_new_tokens=self.params.max_new_tokens, do_sample=False,
                pad_token_id=pad,
            )  # fmt: skip
        new_tokens = output[:, inputs["input_ids"].shape[1] :]  # the prompt ends there for all
        captions = self._processor.batch_decode(new_tokens, skip_special_tokens=True)
        return [caption.strip() for caption in captions]

    def caption_batch(self, clips: list[list[np.ndarray]]) -> list[str | ClipFailure]:
        """:meth:`generate` for ``clips``; when the batch fails, each clip alone, so one clip
        the processor rejects (e.g. too small for Qwen2-VL's patches) fails by itself."""
        import torch

        try:
            return list(self.generate(clips))
        except torch.OutOfMemoryError:
            raise  # the device, not a clip: a smaller batch_size is the fix
        except Exception as error:  # noqa: BLE001 - one bad clip must not stop the run
            if len(clips) > 1:
                return [self.caption_batch([frames])[0] for frames in clips]
            return [ClipFailure("caption_failed", f"{type(error).__name__}: {error}")]

    def __call__(self, rows: list[dict]) -> list[dict]:
        """Caption ``rows`` (``path``, ``num_frames``): one result per row, in order."""
        self.load()
        results: list[dict] = [{} for _ in rows]
        ready: list[tuple[int, list[np.ndarray]]] = []
        for position, row in enumerate(rows):
            try:
                frames = read_clip(row["path"], int(row["num_frames"]), self.params.frames)
                ready.append((position, frames))
            except ClipFailure as failure:
                results[position] = _failure(row["path"], failure.reason, failure.detail)
            except (KeyError, TypeError, ValueError) as error:  # a row without a frame count
                results[position] = _failure(row.get("path"), "bad_row",
                                             f"{type(error).__name__}: {error}")  # fmt: skip
        size = self.params.batch_size
        for start in range(0, len(ready), size):
            chunk = ready[start : start + size]
            captions = self.caption_batch([frames for _, frames in chunk])
            for (position, _), caption in zip(chunk, captions, strict=True):
                results[position] = self._result(rows[position]["path"], caption)
        failed = sum("reason" in result for result in results)
        logger.debug("captioned %d clip(s), %d failed", len(rows) - failed, failed)
        return results

    def _result(self, path: str, caption: str | ClipFailure) -> dict:
        if isinstance(caption, ClipFailure):
            return _failure(path, caption.reason, caption.detail)
        if not caption:
            return _failure(path, "empty_caption", "ValueError: the model wrote no text")
        return {"path": path, "caption": caption, "caption_model": self.model_name}
