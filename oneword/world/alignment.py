"""Representation alignment (REPA, Yu et al. 2024): a loss that pulls the UNet's hidden states
towards the oracle's features of the clean image. It only steers training and is not saved."""

from functools import partial

import torch
import torch.nn.functional as F

from ..errors import OnewordError
from .oracle import WEIGHTS, load_oracle
from .training_config import IMAGE_SIZE, WorldModelConfig


class FeatureAlignment:
    """Representation alignment (REPA; Yu et al. 2024, "Representation Alignment for
    Generation: Training Diffusion Transformers Is Easier Than You Think").

    For each UNet down block in `blocks`, a small projector maps the block's hidden states (from
    the noisy input; for 16x16 latents block 0 works at 16x16, block 1 at 8x8) to a frozen
    encoder's features of the clean image at the same resolution (its last convolution there);
    the loss is 1 - their cosine similarity, averaged over positions and blocks. It only shapes
    what the UNet learns: the projectors are dropped after training and the saved UNet is a plain
    SD UNet. The encoder here is the world's oracle (the part of REPA that DINOv2 plays); it
    knows shapes, which the UNet otherwise learns slowly. Its features enter no sampling path.
    """

    def __init__(
        self,
        unet,
        oracle,
        device: torch.device,
        seed: int = 0,
        blocks: tuple[int, ...] = (1,),
        latent_size: int = 16,
    ):
        self.oracle = oracle.eval().requires_grad_(False)
        self.blocks = tuple(blocks)
        self.teacher = {b: _last_conv_at(self.oracle.body, latent_size // 2**b) for b in blocks}
        if any(width % 4**b for b, (_, width) in self.teacher.items()):
            raise OnewordError(
                f"--align-blocks {blocks}: the oracle's widths do not fold onto the latent grid"
            )
        self.hidden: dict[int, torch.Tensor] = {}
        self.handles, projectors = [], []
        with torch.random.fork_rng(devices=[]):  # torch.nn initialises from the global RNG
            torch.manual_seed(seed)
            for b in self.blocks:
                block = unet.down_blocks[b]
                site = (
                    block.attentions[0] if getattr(block, "attentions", None) else block.resnets[0]
                )
                self.handles.append(site.register_forward_hook(partial(self._keep, b)))
                projectors.append(
                    torch.nn.Sequential(
                        torch.nn.Conv2d(block.resnets[0].out_channels, 256, 1),
                        torch.nn.SiLU(),
                        torch.nn.Conv2d(256, 256, 1),
                        torch.nn.SiLU(),
                        torch.nn.Conv2d(256, self.teacher[b][1], 1),
                    )
                )
        self.projectors = torch.nn.ModuleList(projectors).to(device)

    def _keep(self, block: int, _module, _inputs, output) -> None:
        self.hidden[block] = (
            output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
        )

    @torch.no_grad()
    def targets(self, images: torch.Tensor, size: int) -> torch.Tensor:
        """Oracle features of clean renders [B,3,64,64] in [0,1] for every block, concatenated
        along channels on the latents' `size` x `size` grid (fp32), so they are pooled with the
        latents: block b's [C, size/2^b, size/2^b] features are folded depth-to-space into
        [C/4^b, size, size] (`loss` unfolds them; no copy, no interpolation)."""
        wanted = {layer: b for b, (layer, _) in self.teacher.items()}
        x, found = images.float() * 2 - 1, {}
        for i, layer in enumerate(self.oracle.body[: max(wanted) + 1]):
            x = layer(x)
            if i in wanted:
                found[wanted[i]] = F.pixel_shuffle(x, size // x.shape[-1])
        return torch.cat([found[b] for b in self.blocks], 1)

    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        """1 - cosine similarity of the projected hidden states and the targets, averaged."""
        teachers = targets.split([self.teacher[b][1] // 4**b for b in self.blocks], dim=1)
        losses = []
        for b, projector, teacher in zip(self.blocks, self.projectors, teachers):
            student = projector(self.hidden[b].float())
            teacher = F.pixel_unshuffle(teacher, 2**b)
            losses.append(1 - F.cosine_similarity(student, teacher, dim=1).mean())
        return torch.stack(losses).mean()

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.hidden = {}


def _last_conv_at(body: torch.nn.Sequential, size: int) -> tuple[int, int]:
    """(index, channels) of the last convolution in `body` with a `size` x `size` output for a
    64 px input."""
    x, found = (
        torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE, device=next(body.parameters()).device),
        None,
    )
    with torch.no_grad():
        for i, layer in enumerate(body):
            x = layer(x)
            if isinstance(layer, torch.nn.Conv2d) and x.shape[-1] == size:
                found = (i, x.shape[1])
    if found is None:
        raise OnewordError(f"--align-blocks: the oracle has no {size}x{size} features to align to")
    return found


def make_alignment(unet, config: WorldModelConfig, device: torch.device):
    """The REPA helper when `align_weight` > 0 (needs the oracle's weights), else None."""
    if not config.align_weight:
        return None
    oracle = oracle_or_none(device)
    if oracle is None:
        from .oracle import WEIGHTS

        raise OnewordError(
            f"--align-weight {config.align_weight}: needs the oracle at {WEIGHTS}; "
            "train it (python -m oneword.world.oracle train) or pass 0"
        )
    return FeatureAlignment(
        unet,
        oracle,
        device,
        seed=config.seed,
        blocks=config.align_blocks,
        latent_size=config.latent_size,
    )


def oracle_or_none(device: torch.device):
    """The committed oracle on `device`, or None where its weights are missing."""
    return load_oracle(device) if WEIGHTS.exists() else None
