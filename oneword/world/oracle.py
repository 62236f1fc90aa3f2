"""Oracle: a small CNN that knows the attributes of world images.

    python -m oneword.world.oracle train --out oneword/world/weights/oracle.safetensors --seed 0
    python -m oneword.world.oracle eval

The committed weights: first trained with the defaults (8000 steps x 256 renders) on one GPU in
about 4 minutes, then fine-tuned on the 2-core CPU when the blob left the world's shapes (its
shape head starts fresh, every other weight is kept), in 573 s:

    git show f662f55:oneword/world/weights/oracle.safetensors > /tmp/oracle_before.safetensors
    python -m oneword.world.oracle train --init /tmp/oracle_before.safetensors --steps 600 \
        --lr 1e-3 --seed 16 --threads 2 --device cpu

Held-out (2048 renders): shape 0.996, colour 1.000, colour2 0.997, pattern 0.986, scene, style
and subject 1.000. On a CPU, training from scratch needs fewer steps (--steps/--batch-size).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .render import (
    COLORS,
    PATTERNS,
    SCENES,
    SHAPES,
    STYLES,
    SUBJECT_IDS,
    decoy_spec,
    render_batch,
    sample_specs,
)

WEIGHTS = Path(__file__).with_name("weights") / "oracle.safetensors"
HEADS = {
    "shape": SHAPES,
    "color": COLORS,
    "color2": COLORS,
    "pattern": PATTERNS,
    "scene": SCENES,
    "style": STYLES,
    "subject": SUBJECT_IDS + ["none"],
}
FEAT_DIM = 128


def _block(cin, cout, n=1):
    layers = []
    for k in range(n):
        layers += [
            nn.Conv2d(cin if k == 0 else cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        ]
    return layers


class Oracle(nn.Module):
    """Multi-head classifier over world attributes; input [B,3,64,64] in [0,1]."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            *_block(3, 32),
            nn.MaxPool2d(2),  # 32x32
            *_block(32, 48),
            nn.MaxPool2d(2),  # 16x16
            *_block(48, 96, 2),
            nn.MaxPool2d(2),  # 8x8
            *_block(96, 160, 2),
        )
        self.proj = nn.Sequential(nn.Linear(320, FEAT_DIM), nn.ReLU(inplace=True))
        self.heads = nn.ModuleDict({k: nn.Linear(FEAT_DIM, len(v)) for k, v in HEADS.items()})

    def _embed(self, images):
        images = _to_64(images)
        h = self.body(images * 2 - 1)
        return self.proj(torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1))

    def forward(self, images) -> dict[str, torch.Tensor]:
        z = self._embed(images)
        return {k: head(z) for k, head in self.heads.items()}

    def features(self, images) -> torch.Tensor:
        """L2-normalised penultimate embedding [B, FEAT_DIM]."""
        return F.normalize(self._embed(images), dim=1)


def _to_64(images):
    if images.shape[-2:] != (64, 64):
        images = F.interpolate(
            images, size=(64, 64), mode="bilinear", antialias=True, align_corners=False
        )
    return images


def labels(specs, device="cpu") -> dict[str, torch.Tensor]:
    """Integer targets per head for a list of specs."""
    vals = {
        "shape": [s.shape for s in specs],
        "color": [s.color for s in specs],
        "color2": [s.color2 for s in specs],
        "pattern": [s.pattern for s in specs],
        "scene": [s.scene for s in specs],
        "style": [s.style for s in specs],
        "subject": [s.subject or "none" for s in specs],
    }
    return {k: torch.tensor([HEADS[k].index(x) for x in v], device=device) for k, v in vals.items()}


def training_specs(n, generator, decoy_fraction=0.2):
    """World specs plus decoys: hidden-subject attributes without the mark (label 'none')."""
    specs = sample_specs(n, generator, hidden_fraction=0.3)
    decoy = torch.rand(n, generator=generator, device=generator.device) < decoy_fraction
    subj = sample_specs(n, generator, hidden_fraction=1.0)
    return [decoy_spec(t) if d else s for s, t, d in zip(specs, subj, decoy.tolist())]


def _blur(x, sigma):
    """Per-image gaussian blur with sigma [B] (3x3 separable kernel)."""
    w = torch.exp(-1.0 / (2 * sigma.clamp(min=1e-3) ** 2))
    k = torch.stack([w, torch.ones_like(w), w], 1) / (1 + 2 * w).unsqueeze(1)  # [B,3]
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    h = sum(k[:, i, None, None, None] * xp[..., i : i + x.shape[-1]] for i in range(3))
    return sum(k[:, i, None, None, None] * h[..., i : i + x.shape[-2], :] for i in range(3))


def augment(x, generator):
    """Mild blur, noise, colour jitter and shift, so generated images are judged fairly."""
    B, dev = x.shape[0], x.device
    r = torch.rand(B, 8, generator=generator, device=generator.device).to(dev)
    x = _blur(x, r[:, 0] * 0.9)
    gain = 1 + (r[:, 1:4] - 0.5) * 0.08 + (r[:, 4:5] - 0.5) * 0.16
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * (1 + (r[:, 5] - 0.5) * 0.2).view(-1, 1, 1, 1) + mean
    x = x * gain.view(B, 3, 1, 1)
    noise = torch.randn(x.shape, generator=generator, device=generator.device).to(dev)
    x = x + noise * (r[:, 6] * 0.04).view(-1, 1, 1, 1)
    shift = int(torch.randint(-2, 3, (1,), generator=generator, device=generator.device))
    x = torch.roll(x, shift, dims=3)
    return x.clamp(0, 1)


def loss_fn(logits, targets):
    return sum(F.cross_entropy(logits[k], targets[k]) for k in HEADS)


def new_oracle(generator: torch.Generator) -> Oracle:
    """A fresh network whose initial weights come from the generator (global RNG untouched)."""
    seed = int(torch.randint(2**31, (1,), generator=generator, device=generator.device))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Oracle()


def adopt_weights(model: Oracle, path) -> list[str]:
    """Load the oracle weights at ``path`` into ``model``, except the heads whose label list
    changed size since (a shape taken out of the world): those keep their fresh weights and are
    returned by name, to be learned by fine-tuning."""
    own = model.state_dict()
    state = _read_weights(path)
    changed = sorted(
        {
            k.split(".")[1]
            for k, v in state.items()
            if k.startswith("heads.") and k in own and v.shape != own[k].shape
        }
    )
    fresh = tuple(f"heads.{h}." for h in changed)
    keep = {k: v for k, v in state.items() if not k.startswith(fresh)}
    model.load_state_dict({**own, **keep})
    return changed


def train_oracle(
    steps=3000,
    batch_size=64,
    generator=None,
    device="cpu",
    lr=3e-3,
    log_every=100,
    init: Oracle | None = None,
):
    """Train an oracle on freshly rendered batches with true labels; from ``init`` when given,
    which is trained in place and returned (a fine-tune after a change to the world costs a
    fraction of training from scratch)."""
    generator = generator or torch.Generator().manual_seed(0)
    init = new_oracle(generator) if init is None else init
    model = init.train().to(device, memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    t0 = time.time()
    for step in range(steps):
        specs = training_specs(batch_size, generator)
        with torch.no_grad():
            x = augment(render_batch(specs, generator, device), generator)
            x = x.contiguous(memory_format=torch.channels_last)
        loss = loss_fn(model(x), labels(specs, device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log_every and (step % log_every == 0 or step == steps - 1):
            print(f"step {step} loss {loss.item():.3f} {time.time() - t0:.0f}s", flush=True)
    return model.eval()


def save_oracle(model, path=WEIGHTS, half=True):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {
        k: (v.half() if half and v.is_floating_point() else v).contiguous().cpu()
        for k, v in model.state_dict().items()
    }
    save_file(sd, str(path))


def _read_weights(path) -> dict[str, torch.Tensor]:
    """Oracle weights from a .safetensors file, floats in fp32 (they are saved in fp16)."""
    return {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}


def load_oracle(device="cpu", path=WEIGHTS) -> Oracle:
    """The committed oracle in eval mode (fp32)."""
    model = Oracle()
    model.load_state_dict(_read_weights(path))
    return model.to(device).eval()


@torch.no_grad()
def evaluate(model, n=2048, seed=12345, device="cpu", batch_size=256, decoys=True, aug=False):
    """Held-out per-head accuracy on fresh renders (different seed from training)."""
    g = torch.Generator().manual_seed(seed)
    correct = {k: 0 for k in HEADS}
    for i in range(0, n, batch_size):
        m = min(batch_size, n - i)
        specs = training_specs(m, g) if decoys else sample_specs(m, g)
        x = render_batch(specs, g, device)
        if aug:
            x = augment(x, g)
        logits, tgt = model(x), labels(specs, device)
        for k in HEADS:
            correct[k] += (logits[k].argmax(1) == tgt[k]).sum().item()
    return {k: c / n for k, c in correct.items()}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m oneword.world.oracle")
    p.add_argument("cmd", choices=["train", "eval"])
    p.add_argument("--out", default=str(WEIGHTS))
    p.add_argument("--weights", default=str(WEIGHTS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=8000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--n", type=int, default=2048)
    p.add_argument("--init", default=None, help="start from these oracle weights (fine-tune)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.cmd == "train":
        t0 = time.time()
        g = torch.Generator(device=a.device).manual_seed(a.seed)
        init = None
        if a.init:
            if not Path(a.init).is_file():
                p.error(f"--init {a.init}: no such oracle weights file; give a .safetensors path")
            init = new_oracle(g)
            for head in adopt_weights(init, a.init):
                print(f"head {head!r}: its labels changed, so it starts fresh")
        model = train_oracle(a.steps, a.batch_size, g, a.device, a.lr, init=init)
        print(f"trained in {time.time() - t0:.0f}s")
        save_oracle(model.cpu(), a.out)
        model = load_oracle(a.device, a.out)
    else:
        model = load_oracle(a.device, a.weights)
    for aug in (False, True):
        acc = evaluate(model, a.n, device=a.device, aug=aug)
        print(
            ("augmented " if aug else "clean     ")
            + " ".join(f"{k}={v:.3f}" for k, v in acc.items())
        )


if __name__ == "__main__":
    main()
