"""bench/train_speed.py's rows 1a and 1b follow diffusers' textual_inversion example script:
checked on tiny random parts, one optimizer step at a time."""

from __future__ import annotations

import copy
import importlib.util
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

RES = 32  # tiny parts: latents of 8 x 8


def _load_bench():
    path = Path(__file__).resolve().parent.parent / "bench" / "train_speed.py"
    spec = importlib.util.spec_from_file_location("train_speed_bench", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


@pytest.fixture(scope="module")
def parts():
    from oneword.adapters.tiny import TinyShapes, build_components
    from oneword.core.prompts import template_words

    return build_components(template_words(), TinyShapes(latent_size=RES // 4), seed=0)


@contextmanager
def script_run(parts, mode, device=torch.device("cpu")):
    try:
        run = bench.start_script_run(parts, mode, device, RES)
        try:
            yield run
        finally:
            bench.end_script_run(run)
    finally:
        bench.forget_accelerate_state()


def table_of(run) -> torch.Tensor:
    return run.accelerator.unwrap_model(run.text_encoder).get_input_embeddings().weight


def test_a_step_moves_only_the_added_token_and_steps_once(parts):
    tokens, rows_before = len(parts.tokenizer), parts.text_encoder.get_input_embeddings().weight
    rows_before = rows_before.detach().clone()
    with script_run(parts, "no") as run:
        (token_id,) = run.placeholder_ids
        assert token_id == tokens  # an added token, in a row added to the table
        assert table_of(run).shape[0] == tokens + 1
        before = table_of(run).detach().clone()
        bench.script_step(run)
        after = table_of(run).detach()
        changed = (after != before).any(dim=1).nonzero().flatten().tolist()
        assert changed == [token_id]
        assert run.global_step == 1
        (state,) = run.optimizer.state.values()
        assert int(state["step"]) == 1  # four micro-batches, one optimizer step
        assert run.lr_scheduler.get_last_lr() == [pytest.approx(bench.SCRIPT_LR)]
    # the parts come back as they were, for oneword's rows
    assert len(parts.tokenizer) == tokens
    assert torch.equal(parts.text_encoder.get_input_embeddings().weight, rows_before)
    assert next(parts.unet.parameters()).dtype == torch.float32


def test_the_noise_schedule_is_stable_diffusions_ddpm(parts):
    from diffusers import DDPMScheduler

    with script_run(parts, "no") as run:
        schedule = run.noise_scheduler
    assert isinstance(schedule, DDPMScheduler)
    assert schedule.config.num_train_timesteps == 1000
    assert schedule.config.beta_schedule == "scaled_linear"
    scaled_linear = torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2
    assert torch.allclose(schedule.betas, scaled_linear)
    assert torch.allclose(schedule.alphas_cumprod, torch.cumprod(1 - scaled_linear, 0))


def test_the_photos_go_through_the_scripts_pipeline(parts, tmp_path):
    tokenizer = copy.deepcopy(parts.tokenizer)
    tokenizer.add_tokens([bench.SCRIPT_TOKEN])
    paths = bench.write_photos(tmp_path, RES, count=1)
    photos = bench.ScriptPhotos(paths, tokenizer, RES, bench.SCRIPT_TOKEN)
    assert len(photos) == bench.SCRIPT_REPEATS
    samples = [photos[0] for _ in range(16)]
    pixels = samples[0]["pixel_values"]
    assert pixels.shape == (3, RES, RES) and pixels.dtype == torch.float32
    assert pixels.min() >= -1 and pixels.max() <= 1
    ids = samples[0]["input_ids"]
    assert ids.shape == (tokenizer.model_max_length,)
    assert tokenizer.convert_tokens_to_ids(bench.SCRIPT_TOKEN) in ids.tolist()
    mirrored = [torch.equal(s["pixel_values"], pixels.flip(-1)) for s in samples]
    assert any(mirrored) and not all(mirrored)  # a coin flip per sample


def test_fp16_mode_runs_unet_and_vae_in_fp16_and_both_modes_run_in_one_process(parts):
    rows, skipped = bench.baseline_rows(parts, RES, torch.device("cpu"), 0, 1)
    assert skipped == {}
    assert [r.name.split()[-1] for r in rows] == ["no", "fp16"]
    with script_run(parts, "fp16") as run:
        assert next(run.unet.parameters()).dtype == torch.float16
        assert next(run.vae.parameters()).dtype == torch.float16
        assert table_of(run).dtype == torch.float32
        assert run.accelerator.scaler is None  # accelerate gives a CPU no GradScaler
    assert next(parts.unet.parameters()).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fp16 GradScaler exists on a GPU")
def test_fp16_grad_scaler_skips_a_step_with_inf_gradients(parts):
    cuda = torch.device("cuda")
    modules = (parts.unet, parts.vae, parts.text_encoder)
    for module in modules:
        module.to(cuda)
    try:
        with script_run(parts, "fp16", cuda) as run:
            assert run.accelerator.scaler is not None
            scale = run.accelerator.scaler.get_scale()
            before = table_of(run).detach().clone()
            # an overflow in every micro-batch: the scaler must drop the step and back off
            hook = table_of(run).register_hook(lambda grad: grad * float("inf"))
            bench.script_step(run)
            hook.remove()
            assert run.accelerator.optimizer_step_was_skipped
            assert torch.equal(table_of(run).detach(), before)
            assert run.accelerator.scaler.get_scale() < scale
    finally:
        for module in modules:
            module.cpu()
