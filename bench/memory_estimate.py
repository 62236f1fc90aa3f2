"""GPU memory of a Textual Inversion training pass per model family, estimated without a GPU.

The family's UNet (the configs oneword writes for single files: SD 1.5, SD 2.1 at 768 px,
SDXL base) is built on PyTorch's meta device, which has shapes and dtypes but no data, and one
training forward pass of one sample at the native size runs there: the text states require
gradients (as the placeholder rows' do), the weights not. Every tensor autograd saves for the
backward pass is counted. This gives
  weights:   parameter bytes of UNet, text encoder(s) and VAE in 16-bit precision;
  saved:     what one sample's UNet forward keeps for the backward pass;
  low mem.:  the same with the UNet's gradient checkpointing (--low-memory): what is saved
             outside the checkpointed blocks (ResNet blocks, transformer blocks), their inputs,
             and the largest one block saves when it is recomputed in the backward pass.
Not counted: the CUDA context (~0.5 GB), the allocator's slack, and the attention kernel's
own workspace. Attention on the meta device saves what PyTorch's math kernel saves unless
--flash is given, which counts a flash-style kernel's saving (output and log-sum-exp) instead.

    python bench/memory_estimate.py            # the three families, a table
    python bench/memory_estimate.py --json bench/results/memory_estimate.json
"""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager

import torch

FAMILIES = ("sd1", "sd2-v", "sdxl")
VAE_PARAMETERS = 83_653_863  # SD's AutoencoderKL, the same in every family
GIB = 2**30


def text_parameters(family: str) -> int:
    """Parameters of the family's text encoder(s), built on the meta device."""
    import transformers

    from oneword.adapters.single_file import FAMILIES as CONFIGS

    total = 0
    for i, encoder in enumerate(CONFIGS[family][3]):
        config = transformers.CLIPTextConfig(**encoder, vocab_size=49408)
        cls = transformers.CLIPTextModelWithProjection if i else transformers.CLIPTextModel
        with torch.device("meta"):
            total += sum(p.numel() for p in cls(config).parameters())
    return total


def build_unet(family: str, dtype: torch.dtype):
    import diffusers

    from oneword.adapters.single_file import FAMILIES as CONFIGS

    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel(**CONFIGS[family][0])
    return unet.to(dtype).requires_grad_(False)


def unet_inputs(unet, family: str, dtype: torch.dtype) -> tuple:
    """A native-size sample, a timestep and text states that require gradients."""
    size = unet.config.sample_size
    meta = dict(device="meta", dtype=dtype)
    latents = torch.empty(1, 4, size, size, **meta)
    text = torch.empty(1, 77, unet.config.cross_attention_dim, **meta).requires_grad_(True)
    extra = {}
    if family.startswith("sdxl"):
        extra = {
            "added_cond_kwargs": {
                "text_embeds": torch.empty(1, 1280, **meta),
                "time_ids": torch.empty(1, 6, **meta),
            }
        }
    return latents, torch.tensor([500], device="meta"), text, extra


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class Saved:
    """Bytes autograd saves, deduplicated per tensor, attributed to the innermost block."""

    def __init__(self):
        self.seen: set[int] = set()
        self.total = 0
        self.by_block: dict[str, int] = {}
        self.current: list[str] = []

    def add(self, t: torch.Tensor) -> None:
        if id(t) in self.seen:
            return
        self.seen.add(id(t))
        self.total += nbytes(t)
        if self.current:
            name = self.current[-1]
            self.by_block[name] = self.by_block.get(name, 0) + nbytes(t)

    @contextmanager
    def counting(self):
        def pack(t):
            self.add(t)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            yield


def checkpointed_blocks(unet):
    """The units diffusers' gradient checkpointing recomputes: ResNet and transformer blocks."""
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.resnet import ResnetBlock2D

    return [
        (name, m)
        for name, m in unet.named_modules()
        if isinstance(m, (ResnetBlock2D, BasicTransformerBlock))
    ]


@contextmanager
def flash_attention(enabled: bool):
    """With `enabled`, attention saves what a flash kernel does: its output and the log-sum-exp
    per query, not the attention matrix."""
    if not enabled:
        yield
        return
    import torch.nn.functional as F

    real = F.scaled_dot_product_attention

    class Flash(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v):
            with torch.no_grad():
                out = real(q, k, v)
            ctx.save_for_backward(q, k, v, out, torch.empty(q.shape[:-1], device=q.device))
            return out

    def sdpa(q, k, v, *args, **kwargs):
        return Flash.apply(q, k, v)

    F.scaled_dot_product_attention = sdpa
    try:
        yield
    finally:
        F.scaled_dot_product_attention = real


def measure(family: str, dtype: torch.dtype, flash: bool) -> dict:
    unet = build_unet(family, dtype)
    latents, t, text, extra = unet_inputs(unet, family, dtype)
    blocks = checkpointed_blocks(unet)
    plain = Saved()
    hooks = []

    def enter(name):
        return lambda module, args: plain.current.append(name)  # returns None: args kept

    def leave(module, args, out):
        plain.current.pop()  # returns None: the output is kept

    for name, block in blocks:
        hooks.append(block.register_forward_pre_hook(enter(name)))
        hooks.append(block.register_forward_hook(leave))
    with flash_attention(flash), plain.counting():
        unet(latents, t, encoder_hidden_states=text, **extra)
    for hook in hooks:
        hook.remove()
    unet.enable_gradient_checkpointing()
    low = Saved()
    inputs = []

    def keep_input(module, args):
        if args and isinstance(args[0], torch.Tensor) and id(args[0]) not in low.seen:
            inputs.append(args[0])

    hooks = [block.register_forward_pre_hook(keep_input) for _, block in blocks]
    with flash_attention(flash), low.counting():
        unet(latents, t, encoder_hidden_states=text, **extra)
    for hook in hooks:
        hook.remove()
    kept = sum(nbytes(x) for x in {id(x): x for x in inputs}.values())
    unet_parameters = sum(p.numel() for p in unet.parameters())
    parameters = unet_parameters + text_parameters(family) + VAE_PARAMETERS
    return {
        "family": family,
        "resolution": unet.config.sample_size * 8,
        "parameters": parameters,
        "weights_gib": parameters * torch.finfo(dtype).bits / 8 / GIB,
        "saved_gib": plain.total / GIB,
        "low_memory_saved_gib": (low.total + kept + max(plain.by_block.values())) / GIB,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--flash", action="store_true", help="count a flash kernel's attention")
    p.add_argument("--json", help="write the figures here too")
    a = p.parse_args(argv)
    rows = [measure(f, torch.bfloat16, a.flash) for f in a.families.split(",")]
    attention = "flash-style" if a.flash else "math kernel"
    print(f"# one training sample at the native size, 16-bit weights; attention: {attention}")
    print(f"{'family':8s} {'px':>5s} {'weights GiB':>12s} {'saved GiB':>10s} {'low-mem GiB':>12s}")
    for r in rows:
        print(
            f"{r['family']:8s} {r['resolution']:5d} {r['weights_gib']:12.2f} "
            f"{r['saved_gib']:10.2f} {r['low_memory_saved_gib']:12.2f}"
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"attention": attention, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
