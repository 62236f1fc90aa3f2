"""The model interface the core is written against: what `train`, `generate` and scoring use.

`adapters.pipelines.TextToImageModel` (SD 1.x/2.x) and `SDXLModel` implement it over diffusers
pipelines; the core never sees a pipeline. Text states are a tensor [B, L, d] for one text
encoder and an adapter-defined record for SDXL (hidden states and a pooled projection); the
core only passes them from `encode_text` to `predict_noise` and `generate`.
"""

from __future__ import annotations

from typing import Any, Iterator, Protocol

import torch


class TextToImage(Protocol):
    """A frozen text-to-image latent diffusion model with placeholder tokens."""

    name: str  # what the user named (--model)
    family: str  # "sd1", "sd2", "sdxl", ...
    device: torch.device
    dtype: torch.dtype
    prediction_type: str  # "epsilon" or "v_prediction"
    alphas_cumprod: torch.Tensor  # [T] float64 on CPU
    placeholder_tokens: list[str]

    @property
    def embedding_width(self) -> int: ...  # floats in one learned vector

    @property
    def embedding_layout(self) -> tuple[int, ...]: ...  # (d,), or (d_l, d_g) for SDXL

    @property
    def vocabulary_table(self) -> torch.Tensor: ...  # the frozen token table [V, d]

    @property
    def vae_factor(self) -> int: ...  # pixels per latent pixel

    @property
    def latent_channels(self) -> int: ...

    @property
    def native_resolution(self) -> int: ...

    @property
    def cross_attention_layers(self) -> int: ...  # per-layer words' layers; 0: not supported

    def add_placeholder_tokens(self, tokens: list[str]) -> list[int]: ...

    def is_known_token(self, token: str) -> bool: ...

    def token_ids(self, prompts: list[str]) -> torch.Tensor: ...

    def word_token_ids(self, word: str) -> list[int]: ...

    def vocabulary_tokens(self) -> list[str]: ...  # the token string of each table row

    def encode_text(
        self,
        input_ids: torch.Tensor,
        rows: torch.Tensor | None = None,
        candidate: torch.Tensor | None = None,
    ) -> Any: ...  # rows [K, P, d], or per-layer rows [K, layers, P, d]

    def encode_images(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def predict_noise(
        self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, text_states: Any
    ) -> torch.Tensor: ...

    def set_scheduler(self, name: str) -> None: ...

    def speed_up(
        self, channels_last: bool = False, compile_unet: bool = False, low_memory: bool = False
    ) -> None: ...  # execution options; low_memory: gradient checkpointing, VAE slicing

    def generate(
        self,
        text_states: Any,
        negative_states: Any,
        generators: list[torch.Generator],
        steps: int,
        cfg: float,
        size: int,
    ) -> torch.Tensor: ...

    def frozen_tensors(self) -> Iterator[tuple[str, torch.Tensor]]: ...  # every frozen weight

    def base_vocabulary(self) -> dict[str, int]: ...  # the tokenizer's own tokens and ids
