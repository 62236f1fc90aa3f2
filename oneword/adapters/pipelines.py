"""A loaded Stable Diffusion pipeline seen through what oneword needs.

`TextToImageModel` (SD 1.x/2.x) and `SDXLModel` implement `core.interface.TextToImage`:
tokenizing, text encoding with placeholder rows injected, VAE encoding, noise prediction, the
noise schedule and image generation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..core.embeddings import model_family
from ..errors import OnewordError
from .layer_states import cross_attention_names, install_layer_windows
from .schedulers import SCHEDULERS, make_scheduler

__all__ = ["SCHEDULERS", "SDXLModel", "TextToImageModel", "make_scheduler", "wrap_pipeline"]


class PlaceholderEmbedding(nn.Module):
    """The text encoder's token table with the placeholder rows kept outside it.

    Token ids below `base_size` read the frozen table; ids from `base_size` on read row
    `id - base_size` of `rows[candidate[b]]`. Keeping the learned rows out of the table makes the
    Textual Inversion invariant structural: the table has no gradient and is never written.
    """

    def __init__(self, table: nn.Embedding):
        super().__init__()
        self.table = table
        self.base_size = table.num_embeddings
        self.rows: torch.Tensor | None = None  # [K, P, d]
        self.candidate: torch.Tensor | None = None  # [B] index into K

    @property
    def weight(self) -> torch.Tensor:
        return self.table.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        is_new = input_ids >= self.base_size  # [B, L]
        x = self.table(input_ids.masked_fill(is_new, 0))  # [B, L, d]
        if not bool(is_new.any()):
            return x
        if self.rows is None:
            raise RuntimeError("placeholder tokens used but no placeholder rows were given")
        candidate = self.candidate
        if candidate is None:
            candidate = torch.zeros(input_ids.shape[0], dtype=torch.long, device=input_ids.device)
        row = (input_ids - self.base_size).clamp(min=0)
        new = self.rows[candidate[:, None].expand_as(input_ids), row]  # [B, L, d]
        return torch.where(is_new[..., None], new.to(x.dtype), x)


@dataclass
class TextToImageModel:
    """A loaded Stable Diffusion 1.x/2.x pipeline, seen through what oneword needs (SDXL:
    `SDXLModel`)."""

    pipe: object
    name: str
    family: str  # "sd1", "sd2", "sdxl"
    device: torch.device
    dtype: torch.dtype
    prediction_type: str  # "epsilon" or "v_prediction"
    alphas_cumprod: torch.Tensor  # [T] float64 on CPU
    placeholder_tokens: list[str] = field(default_factory=list)
    low_memory: bool = False  # see speed_up
    # an SD 2.x single file loaded as v-prediction without knowing (adapters.prediction)
    prediction_guessed: bool = False

    @property
    def tokenizer(self):
        return self.pipe.tokenizer

    @property
    def text_encoder(self):
        return self.pipe.text_encoder

    @property
    def embedding(self) -> PlaceholderEmbedding:
        return self.pipe.text_encoder.get_input_embeddings()

    @property
    def embedding_width(self) -> int:
        return self.embedding.table.embedding_dim

    @property
    def embedding_layout(self) -> tuple[int, ...]:
        """The widths a learned vector is made of: (d,) here, (d_l, d_g) for SDXL."""
        return (self.embedding_width,)

    @property
    def vocabulary_table(self) -> torch.Tensor:
        """The frozen token table [V, d] (a view: never write to it)."""
        return self.embedding.table.weight

    @property
    def vae_factor(self) -> int:
        return 2 ** (len(self.pipe.vae.config.block_out_channels) - 1)

    @property
    def native_resolution(self) -> int:
        return int(self.pipe.unet.config.sample_size) * self.vae_factor

    @property
    def latent_channels(self) -> int:
        return int(self.pipe.unet.config.in_channels)

    @property
    def max_length(self) -> int:
        return int(self.tokenizer.model_max_length)

    @property
    def cross_attention_layers(self) -> int:
        """Cross-attention layers of the UNet: the layers of a per-layer word (P+)."""
        return len(cross_attention_names(self.pipe.unet))

    # -- tokens --------------------------------------------------------------------------
    def add_placeholder_tokens(self, tokens: list[str]) -> list[int]:
        """Add new tokens to the tokenizer; their rows come from `rows` at encode time."""
        taken = [t for t in tokens if self.is_known_token(t)]
        if taken:
            raise OnewordError(
                f"--token {taken[0]}: this token already exists in the model's vocabulary; "
                "choose a new one, e.g. <my-thing>"
            )
        expected = self.embedding.base_size + len(self.placeholder_tokens)
        if len(self.tokenizer) != expected:
            raise OnewordError(
                f"model {self.name}: its tokenizer has {len(self.tokenizer)} tokens but its text "
                f"encoder has {self.embedding.base_size} rows; resave the pipeline without added "
                "tokens"
            )
        self.tokenizer.add_tokens(tokens)
        ids = self.tokenizer.convert_tokens_to_ids(tokens)
        self.placeholder_tokens += tokens
        return [int(i) for i in ids]

    def is_known_token(self, token: str) -> bool:
        """True if the text already is one token of the vocabulary (e.g. 'cat' is 'cat</w>')."""
        return token in self.tokenizer.get_vocab() or len(self.word_token_ids(token)) == 1

    def vocabulary_tokens(self) -> list[str]:
        """The token string of each row of `vocabulary_table` (e.g. 'cat</w>')."""
        ids = list(range(self.embedding.base_size))
        return [str(t) for t in self.tokenizer.convert_ids_to_tokens(ids)]

    def base_vocabulary(self) -> dict[str, int]:
        """The tokenizer's own tokens (placeholders left out) and their ids."""
        base = self.embedding.base_size
        return {k: v for k, v in self.tokenizer.get_vocab().items() if v < base}

    def frozen_tensors(self):
        """(name, tensor) for every parameter and buffer of the text encoders, UNet and VAE."""
        for part in ("text_encoder", "text_encoder_2", "unet", "vae"):
            module = getattr(self.pipe, part, None)
            if module is not None:
                for name, tensor in module.state_dict().items():
                    yield f"{part}.{name}", tensor

    def token_ids(self, prompts: list[str]) -> torch.Tensor:
        """Token ids [B, L], padded to the full context as Stable Diffusion does."""
        out = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        )
        return out.input_ids.to(self.device)

    def word_token_ids(self, word: str) -> list[int]:
        """Ids of the vocabulary tokens a word is made of (no start/end tokens)."""
        return [int(i) for i in self.tokenizer(word, add_special_tokens=False).input_ids]

    # -- forward passes ------------------------------------------------------------------
    def encode_text(
        self,
        input_ids: torch.Tensor,
        rows: torch.Tensor | None = None,
        candidate: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """All hidden states [B, L, d] of the text encoder (padding included, as SD uses them).

        rows: [K, P, d] placeholder rows; candidate: [B] which of the K each sample uses.
        Per-layer rows [K, layers, P, d] give per-layer states [B, layers × L, d]: the prompt
        encoded once per cross-attention layer (see adapters.layer_states).
        """
        if rows is not None and rows.dim() == 4:
            install_layer_windows(self.pipe.unet, input_ids.shape[-1])
            per_layer = [
                self.encode_text(input_ids, rows[:, i], candidate) for i in range(rows.shape[1])
            ]
            return torch.cat(per_layer, dim=1)
        emb = self.embedding
        emb.rows, emb.candidate = rows, candidate
        try:
            return self.text_encoder(input_ids)[0]
        finally:
            emb.rows, emb.candidate = None, None

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Scaled latent mean and std [B, c, h, w] (fp32) of images in [-1, 1] [B, 3, H, W]."""
        vae = self.pipe.vae
        dist = vae.encode(pixels.to(self.device, self.dtype)).latent_dist
        scale = float(vae.config.scaling_factor)
        return (dist.mean.float() * scale, dist.std.float() * scale)

    def predict_noise(
        self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, text_states: torch.Tensor
    ) -> torch.Tensor:
        """The UNet's output (epsilon or v, see `prediction_type`) in fp32."""
        out = self.pipe.unet(
            noisy_latents.to(self.dtype),
            timesteps,
            encoder_hidden_states=text_states.to(self.dtype),
        ).sample
        return out.float()

    def speed_up(
        self, channels_last: bool = False, compile_unet: bool = False, low_memory: bool = False
    ) -> None:
        """Execution options that leave what is computed unchanged (up to rounding).

        low_memory recomputes UNet and text-encoder activations in the backward pass
        (gradient checkpointing, Chen et al. 2016) instead of keeping them, and runs the VAE
        on one image at a time (slicing); once on, it stays on.
        """
        unet = self.pipe.unet
        if channels_last:
            unet.to(memory_format=torch.channels_last)
        if low_memory and not self.low_memory:
            self.low_memory = True
            unet.enable_gradient_checkpointing()
            self.pipe.vae.enable_slicing()
            self.text_encoder.activation_checkpointing_enable({"use_reentrant": False})
            self.text_encoder.train()  # transformers checkpoints only in train mode; no dropout
        if compile_unet:
            # dynamic=None: one static graph, then one with dynamic shapes once a second batch
            # size comes (dynamic=False recompiled for every micro-batch size)
            self.pipe.unet = torch.compile(unet, dynamic=None)

    # -- generation ----------------------------------------------------------------------
    def set_scheduler(self, name: str) -> None:
        self.pipe.scheduler = make_scheduler(name, self.pipe.scheduler.config)

    @torch.no_grad()
    def generate(
        self,
        text_states: torch.Tensor,
        negative_states: torch.Tensor,
        generators: list[torch.Generator],
        steps: int,
        cfg: float,
        size: int,
    ) -> torch.Tensor:
        """Images [B, 3, size, size] in [0, 1] from prompt hidden states, one generator each."""
        if self.prediction_guessed:
            from .single_file import unknown_prediction

            raise OnewordError(unknown_prediction(self.name))
        out = self.pipe(
            prompt_embeds=text_states.to(self.dtype),
            negative_prompt_embeds=negative_states.to(self.dtype),
            num_inference_steps=steps,
            guidance_scale=cfg,
            height=size,
            width=size,
            generator=generators,
            output_type="pt",
            return_dict=True,
        )
        return out.images.float().cpu()


@dataclass
class SDXLText:
    """What an SDXL UNet is conditioned on: both encoders' penultimate hidden states side by
    side [B, L, d_l + d_g] and text_encoder_2's projected pooled state [B, p]."""

    hidden: torch.Tensor
    pooled: torch.Tensor


class SDXLModel(TextToImageModel):
    """An SDXL base pipeline: two text encoders (CLIP ViT-L and OpenCLIP bigG).

    A learned vector is the concatenation [clip_l | clip_g]: both tokenizers share CLIP's ids,
    so one placeholder id reads row i of each half, and the trainer sees one [N, d_l + d_g]
    tensor per candidate. Token ids are [B, 2, L]: the two tokenizers pad differently.
    """

    @property
    def tokenizer_2(self):
        return self.pipe.tokenizer_2

    @property
    def text_encoder_2(self):
        return self.pipe.text_encoder_2

    @property
    def embedding_2(self) -> PlaceholderEmbedding:
        return self.pipe.text_encoder_2.get_input_embeddings()

    @property
    def embedding_layout(self) -> tuple[int, ...]:
        return (self.embedding.table.embedding_dim, self.embedding_2.table.embedding_dim)

    @property
    def embedding_width(self) -> int:
        return sum(self.embedding_layout)

    @property
    def cross_attention_layers(self) -> int:
        """0: per-layer words are not supported on SDXL (its 70 layers; kohya has them for SD
        1.x only)."""
        return 0

    @property
    def vocabulary_table(self) -> torch.Tensor:
        """Both frozen token tables side by side [V, d_l + d_g] (a copy)."""
        return torch.cat([self.embedding.table.weight, self.embedding_2.table.weight], dim=1)

    def add_placeholder_tokens(self, tokens: list[str]) -> list[int]:
        expected = self.embedding.base_size + len(self.placeholder_tokens)
        if (
            self.embedding_2.base_size != self.embedding.base_size
            or len(self.tokenizer_2) != expected
        ):
            raise OnewordError(
                f"model {self.name}: its two tokenizers or text encoders disagree on the "
                "vocabulary size; resave the pipeline without added tokens"
            )
        ids = super().add_placeholder_tokens(tokens)
        self.tokenizer_2.add_tokens(tokens)
        if [int(i) for i in self.tokenizer_2.convert_tokens_to_ids(tokens)] != ids:
            raise OnewordError(
                f"model {self.name}: its two tokenizers gave {tokens[0]} "
                "different ids; resave the pipeline without added tokens"
            )
        return ids

    def token_ids(self, prompts: list[str]) -> torch.Tensor:
        """Token ids [B, 2, L] of both tokenizers (they differ in padding)."""
        ids = [
            tok(
                prompts,
                padding="max_length",
                max_length=self.max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            for tok in (self.tokenizer, self.tokenizer_2)
        ]
        return torch.stack(ids, dim=1).to(self.device)

    def encode_text(
        self,
        input_ids: torch.Tensor,
        rows: torch.Tensor | None = None,
        candidate: torch.Tensor | None = None,
    ) -> SDXLText:
        """Penultimate states of both encoders and the pooled projection, as SDXL uses them.

        The pooled state is read at the first end-of-text token: SDXL's bigG config has the
        legacy eos id that makes transformers pool at the highest id, a placeholder's.
        An empty prompt encodes as zeros when the pipeline says so (SDXL base's
        force_zeros_for_empty_prompt: its unconditional input, as diffusers draws it)."""
        width_l = self.embedding_layout[0]
        halves = (None, None) if rows is None else (rows[..., :width_l], rows[..., width_l:])
        outs = []
        for i, (encoder, half) in enumerate(zip((self.text_encoder, self.text_encoder_2), halves)):
            emb = encoder.get_input_embeddings()
            emb.rows, emb.candidate = half, candidate
            try:
                outs.append(encoder(input_ids[:, i], output_hidden_states=True))
            finally:
                emb.rows, emb.candidate = None, None
        hidden = torch.cat([outs[0].hidden_states[-2], outs[1].hidden_states[-2]], dim=-1)
        ids_g = input_ids[:, 1]
        end = (ids_g == self.tokenizer_2.eos_token_id).int().argmax(dim=-1)
        last = outs[1].last_hidden_state
        pooled = self.text_encoder_2.text_projection(last[torch.arange(len(last)), end])
        if getattr(self.pipe.config, "force_zeros_for_empty_prompt", False):
            keep = (ids_g[:, 1] != self.tokenizer_2.eos_token_id).to(hidden.dtype)  # [B]
            hidden, pooled = hidden * keep[:, None, None], pooled * keep[:, None]
        return SDXLText(hidden, pooled)

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As for SD; SDXL's VAE overflows in fp16, so it encodes in fp32 then (as diffusers)."""
        vae = self.pipe.vae
        if self.dtype != torch.float16 or not getattr(vae.config, "force_upcast", False):
            return super().encode_images(pixels)
        vae.to(torch.float32)
        try:
            dist = vae.encode(pixels.to(self.device, torch.float32)).latent_dist
        finally:
            vae.to(torch.float16)
        scale = float(vae.config.scaling_factor)
        return (dist.mean.float() * scale, dist.std.float() * scale)

    def time_ids(self, batch: int, height: int, width: int) -> torch.Tensor:
        """SDXL's size conditioning [B, 6]: original size, crop corner (0, 0), target size."""
        row = torch.tensor([height, width, 0, 0, height, width], dtype=self.dtype)
        return row.to(self.device).expand(batch, 6)

    def predict_noise(
        self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, text_states: SDXLText
    ) -> torch.Tensor:
        """The UNet's output in fp32, conditioned on the text and the training size."""
        h, w = (s * self.vae_factor for s in noisy_latents.shape[-2:])
        extra = {
            "text_embeds": text_states.pooled.to(self.dtype),
            "time_ids": self.time_ids(len(noisy_latents), h, w),
        }
        out = self.pipe.unet(
            noisy_latents.to(self.dtype),
            timesteps,
            encoder_hidden_states=text_states.hidden.to(self.dtype),
            added_cond_kwargs=extra,
        ).sample
        return out.float()

    def speed_up(
        self, channels_last: bool = False, compile_unet: bool = False, low_memory: bool = False
    ) -> None:
        was = self.low_memory
        super().speed_up(channels_last, compile_unet, low_memory)
        if low_memory and not was:
            self.text_encoder_2.activation_checkpointing_enable({"use_reentrant": False})
            self.text_encoder_2.train()

    @torch.no_grad()
    def generate(
        self,
        text_states: SDXLText,
        negative_states: SDXLText,
        generators: list[torch.Generator],
        steps: int,
        cfg: float,
        size: int,
    ) -> torch.Tensor:
        """Images [B, 3, size, size] in [0, 1]; SDXL derives the size conditioning itself."""
        out = self.pipe(
            prompt_embeds=text_states.hidden.to(self.dtype),
            pooled_prompt_embeds=text_states.pooled.to(self.dtype),
            negative_prompt_embeds=negative_states.hidden.to(self.dtype),
            negative_pooled_prompt_embeds=negative_states.pooled.to(self.dtype),
            num_inference_steps=steps,
            guidance_scale=cfg,
            height=size,
            width=size,
            generator=generators,
            output_type="pt",
            return_dict=True,
        )
        return out.images.float().cpu()


def wrap_pipeline(pipe, name: str, device: torch.device, dtype: torch.dtype) -> TextToImageModel:
    import diffusers

    pipe.to(device)
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if is_sdxl(pipe) else [])
    for module in (*encoders, pipe.unet, pipe.vae):
        module.requires_grad_(False)
        module.eval()
    for encoder in encoders:
        table = encoder.get_input_embeddings()
        if not isinstance(table, PlaceholderEmbedding):
            encoder.set_input_embeddings(PlaceholderEmbedding(table))
    pipe.set_progress_bar_config(disable=True)
    ddpm = diffusers.DDPMScheduler.from_config(pipe.scheduler.config)
    width = pipe.text_encoder.get_input_embeddings().table.embedding_dim
    cls, family = (SDXLModel, "sdxl") if is_sdxl(pipe) else (TextToImageModel, model_family(width))
    return cls(
        pipe=pipe,
        name=name,
        family=family,
        device=device,
        dtype=dtype,
        prediction_type=ddpm.config.prediction_type,
        alphas_cumprod=ddpm.alphas_cumprod.double().cpu(),
    )


def is_sdxl(pipe) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None
