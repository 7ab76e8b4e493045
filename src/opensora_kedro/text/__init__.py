"""Text conditioning: T5 / CLIP embedders over transformers, the tiny offline encoder builder,
and the sharded safetensors cache of caption embeddings that training reads by caption hash.

Modules (imported on demand: each pulls in torch):

- ``cache``: :class:`~opensora_kedro.text.cache.EmbeddingCache` (the reader training uses),
  :class:`~opensora_kedro.text.cache.Slot`, :func:`~opensora_kedro.text.cache_writer.write_update`.
- ``embedder``: :class:`~opensora_kedro.text.embedder.TextEmbedder` and
  :func:`~opensora_kedro.text.embedder.prepare_encoder` (path + weights fingerprint).
- ``tiny_encoders``: :func:`~opensora_kedro.text.tiny_encoders.build_tiny_encoder`.
"""
