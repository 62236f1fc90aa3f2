"""What the first user with a GPU and a real checkpoint meets: sampler settings of every family,
the precision chosen per card, the fp16 weight files, SDXL's watermark, the model ids the README
gives, and the adapters' imports."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import torch

from oneword.adapters.device import cuda_dtype, pick_dtype
from oneword.adapters.loading import load_model
from oneword.adapters.pipelines import SCHEDULERS, make_scheduler
from oneword.adapters.single_file import FAMILIES, write_family_config

ROOT = Path(__file__).parents[2]


def _unclipped(config) -> bool:
    return config.get("clip_sample") is False and config.get("set_alpha_to_one") is False


@pytest.fixture(scope="module")
def vocabulary(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    (folder / "vocab.json").write_text("{}")
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


# -- 1. no sampler clips its predicted x0 ----------------------------------------------------
@pytest.mark.parametrize("name", ["tiny", "tiny-sdxl", "world"])
def test_every_sampler_of_the_built_in_models_leaves_x0_unclipped(name):
    model = load_model(name, "cpu")
    assert _unclipped(model.pipe.scheduler.config), name  # what the folder carries
    for scheduler in (s for s in SCHEDULERS if s != "lms"):  # lms needs scipy
        model.set_scheduler(scheduler)
        config = model.pipe.scheduler.config
        assert getattr(model.pipe.scheduler.config, "clip_sample", False) is False, scheduler
        if scheduler == "ddim":
            assert config.set_alpha_to_one is False


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_single_file_family_writes_an_unclipped_scheduler(family, vocabulary, tmp_path):
    folder = write_family_config(family, tmp_path / family, vocabulary)
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert _unclipped(config), family
    for name in ("ddim", "ddpm"):
        made = make_scheduler(name, config).config
        assert made.clip_sample is False, (family, name)


def test_a_scheduler_config_without_the_keys_does_not_clip():
    """An SDXL folder made before these keys were written (or a hub model without them)."""
    bare = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    ddim = make_scheduler("ddim", bare).config
    assert ddim.clip_sample is False and ddim.set_alpha_to_one is False
    assert make_scheduler("ddpm", bare).config.clip_sample is False
    said = make_scheduler("ddim", {**bare, "clip_sample": True}).config  # a config's own say
    assert said.clip_sample is True


# -- 2. bf16 only where the card computes it -------------------------------------------------
@pytest.mark.parametrize(
    "capability, dtype",
    [
        ((7, 5), torch.float16),  # T4, RTX 20xx (Colab's free card): bf16 only emulated
        ((7, 0), torch.float16),  # V100
        ((6, 1), torch.float16),  # GTX 10xx
        ((8, 0), torch.bfloat16),  # A100
        ((8, 6), torch.bfloat16),  # RTX 30xx
        ((9, 0), torch.bfloat16),  # H100
    ],
)
def test_bf16_only_on_cards_that_compute_it(capability, dtype, monkeypatch):
    assert cuda_dtype(capability) == dtype
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulation
    assert pick_dtype(torch.device("cuda")) == dtype
    assert pick_dtype(torch.device("cuda"), "fp32") == torch.float32  # --dtype decides
    assert cuda_dtype(capability, rocm=True) == torch.bfloat16


# -- 7. the README's model ids exist ---------------------------------------------------------
def test_the_readme_names_the_stable_diffusion_1_5_id_that_exists():
    """runwayml/stable-diffusion-v1-5 left the hub in 2024; its weights live on under
    stable-diffusion-v1-5/stable-diffusion-v1-5."""
    texts = [ROOT / "README.md", *sorted((ROOT / "oneword").rglob("*.py"))]
    for path in texts:
        assert "runwayml/" not in path.read_text(), path
    readme = (ROOT / "README.md").read_text()
    ids = set(re.findall(r"--model ([\w.-]+/[\w.-]+)(?![\w./-])", readme))
    assert "stable-diffusion-v1-5/stable-diffusion-v1-5" in ids
    assert ids <= {
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        "stabilityai/stable-diffusion-xl-base-1.0",
        "stabilityai/stable-diffusion-2-1-base",
        "stabilityai/stable-diffusion-2-1",
    }, ids


# -- 8. fp16 weight files, no watermark, no import cycle -------------------------------------
def test_half_precision_loads_the_fp16_files_where_there_are_some(tiny_model_dir, tmp_path):
    import diffusers

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(tiny_model_dir)
    folder = tmp_path / "with-fp16-files"
    pipe.save_pretrained(folder)
    with torch.no_grad():
        pipe.unet.conv_in.weight.fill_(0.25)  # marks the fp16 files apart from the plain ones
    pipe.unet.save_pretrained(folder / "unet", variant="fp16")
    half = load_model(str(folder), "cpu", "fp16")
    assert half.dtype == torch.float16
    assert bool((half.pipe.unet.conv_in.weight == 0.25).all())
    full = load_model(str(folder), "cpu", "fp32")
    assert not bool((full.pipe.unet.conv_in.weight == 0.25).any())
    plain = load_model(str(tiny_model_dir), "cpu", "bf16")  # no fp16 files: the plain ones
    assert plain.pipe.unet.dtype == torch.bfloat16


def test_sdxl_never_watermarks_even_with_the_package_installed(monkeypatch):
    from diffusers.pipelines.stable_diffusion_xl import pipeline_stable_diffusion_xl as xl

    class Watermarker:  # stands in for invisible-watermark's, which is not installed here
        def apply_watermark(self, images):
            return images * 0

    monkeypatch.setattr(xl, "is_invisible_watermark_available", lambda: True)
    monkeypatch.setattr(xl, "StableDiffusionXLWatermarker", Watermarker, raising=False)
    model = load_model("tiny-sdxl", "cpu")
    assert model.pipe.watermark is None


def _imports(path: Path, package: str) -> set[str]:
    """Modules of `package` that the module at `path` imports (at the top or in a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            found.add(f"{package}.{node.module.split('.')[0]}")
    return found


def test_the_adapters_import_no_module_that_imports_them_back():
    folder = ROOT / "oneword" / "adapters"
    graph = {f"adapters.{p.stem}": _imports(p, "adapters") for p in folder.glob("*.py")}

    def reaches(start: str, goal: str, seen: set) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    cycles = [m for m in graph if reaches(m, m, {m})]
    assert cycles == []
    assert "adapters.single_file" not in graph["adapters.builtin"]


# -- 5. what the README promises about exactness ---------------------------------------------
def test_the_readme_promises_gpu_results_only_up_to_rounding():
    """On CUDA kernels are chosen by batch shape and attention's backward pass adds with
    atomics: a claim of the same result holds bit for bit on a CPU only."""
    readme = (ROOT / "README.md").read_text()
    chunks = [" ".join(c.split()) for c in re.split(r"\n\s*\n|\n(?=\s*- )", readme)]
    claims = ("exactly what", "to the same result", "never changes the result", "identical")
    promising = [c for c in chunks if any(claim in c for claim in claims)]
    assert len(promising) >= 4
    for chunk in promising:
        if "two steps' install" in chunk:  # "exactly these commands": not a numeric claim
            continue
        assert "up to rounding" in chunk, chunk
    gpus = readme[readme.index("## GPUs") :]
    assert "bit-identical" in gpus and "no deterministic mode" in gpus
