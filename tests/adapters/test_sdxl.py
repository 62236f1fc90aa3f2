"""SDXL: a word is a pair of embeddings (clip_l | clip_g), on a tiny SDXL-architecture model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from oneword.adapters.loading import load_model
from oneword.adapters.pipelines import SDXLModel
from oneword.cli import main
from oneword.core.embeddings import (
    LearnedEmbedding,
    check_width,
    layout_metadata,
    load_embeddings,
    save_embedding,
    write_embedding_files,
)
from oneword.core.prompts import placeholder_names
from oneword.errors import OnewordError

L, G = 32, 48  # the tiny model's clip_l and clip_g widths


@pytest.fixture(scope="module")
def sdxl_dir(tmp_path_factory):
    from oneword.adapters.tiny import build_tiny_sdxl_pipeline

    return build_tiny_sdxl_pipeline(tmp_path_factory.mktemp("models") / "tiny-sdxl", seed=0)


@pytest.fixture
def sdxl(sdxl_dir) -> SDXLModel:
    return load_model(str(sdxl_dir), "cpu")


def _pair(
    n: int = 2, seed: int = 0, token: str = "<zq-pair>", layout: tuple[int, int] = (L, G)
) -> LearnedEmbedding:
    gen = torch.Generator().manual_seed(seed)
    return LearnedEmbedding(
        token,
        torch.randn(n, sum(layout), generator=gen),
        {"model": "tiny-sdxl", **layout_metadata(layout)},
    )


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# -- the model ------------------------------------------------------------------------------
def test_tiny_sdxl_loads_as_a_pair_of_encoders(sdxl):
    assert isinstance(sdxl, SDXLModel) and sdxl.family == "sdxl"
    assert sdxl.embedding_layout == (L, G) and sdxl.embedding_width == L + G
    assert sdxl.native_resolution == 32  # sample_size x VAE factor (1024 on real SDXL)
    table = sdxl.vocabulary_table
    assert torch.equal(table[:, :L], sdxl.embedding.table.weight)
    assert torch.equal(table[:, L:], sdxl.embedding_2.table.weight)
    ids = sdxl.add_placeholder_tokens(["<zq-a>", "<zq-b>"])
    assert ids == sdxl.tokenizer_2.convert_tokens_to_ids(["<zq-a>", "<zq-b>"])
    two = sdxl.token_ids(["a photo of <zq-a>"])
    assert two.shape == (1, 2, 77) and torch.equal(two[0, 0, :6], two[0, 1, :6])
    assert two[0, 0, -1] != two[0, 1, -1]  # the two tokenizers pad differently


def test_the_built_in_tiny_sdxl_and_the_real_shapes():
    from bench.full_size import build_sdxl_base_components

    model = load_model("tiny-sdxl", "cpu")
    assert model.family == "sdxl" and model.embedding_layout == (L, G)
    parts = build_sdxl_base_components(device="meta")  # SDXL base 1.0's architecture
    millions = {
        k: sum(p.numel() for p in parts[k].parameters()) // 10**6
        for k in ("text_encoder", "text_encoder_2", "unet")
    }
    assert millions == {"text_encoder": 123, "text_encoder_2": 694, "unet": 2567}


def test_mix_by_layout_keeps_each_halfs_norm():
    from oneword.search.embedding_ops import mix, mix_by_layout

    a, b = _pair(2, seed=1).vectors, _pair(2, seed=2).vectors * 3
    out = mix_by_layout([a, b], (L, G), [1, 1], "slerp")
    for half in (slice(0, L), slice(L, L + G)):
        torch.testing.assert_close(out[:, half], mix([a[:, half], b[:, half]], [1, 1], "slerp"))
    torch.testing.assert_close(mix_by_layout([a, b], (L + G,)), mix([a, b]))


def test_placeholder_rows_feed_both_encoders_and_the_pooled_state(sdxl):
    """A placeholder whose pair is the word 'cat''s rows encodes exactly as 'cat' does, pooled
    state included (transformers would pool at the placeholder: bigG's legacy eos id)."""
    sdxl.add_placeholder_tokens(["<zq-cat>"])
    (cat,) = sdxl.word_token_ids("cat")
    rows = sdxl.vocabulary_table[cat][None, None]  # [K=1, P=1, L+G]
    with torch.no_grad():
        learned = sdxl.encode_text(sdxl.token_ids(["a photo of <zq-cat>"]), rows)
        word = sdxl.encode_text(sdxl.token_ids(["a photo of cat"]))
    assert learned.hidden.shape == (1, 77, L + G) and learned.pooled.shape == (1, G)
    torch.testing.assert_close(learned.hidden, word.hidden)
    torch.testing.assert_close(learned.pooled, word.pooled)
    with torch.no_grad():  # SDXL's unconditional input: zeros for the empty prompt
        empty = sdxl.encode_text(sdxl.token_ids(["", "cat"]))
    assert not empty.hidden[0].any() and not empty.pooled[0].any() and empty.pooled[1].any()


def test_drawing_matches_diffusers_sdxl_pipeline(sdxl):
    """Without learned words our conditioning is exactly what diffusers' SDXL pipeline
    computes itself (both encoders, pooled embeds, zeroed empty negative, time ids)."""
    from oneword.core.generate import Sampling, draw

    ours = draw(sdxl, ["a photo of cat"], [3], None, Sampling(steps=3, cfg=5.0))
    sdxl.set_scheduler("ddim")
    theirs = sdxl.pipe(
        prompt="a photo of cat",
        num_inference_steps=3,
        guidance_scale=5.0,
        height=32,
        width=32,
        output_type="pt",
        generator=[torch.Generator().manual_seed(3)],
    ).images
    torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=1e-4)


def test_fp16_sdxl_encodes_photos_with_an_fp32_vae(sdxl_dir):
    """SDXL's VAE overflows in fp16: photos are encoded in fp32, the VAE put back after."""
    model = load_model(str(sdxl_dir), "cpu", "fp16")
    mean, std = model.encode_images(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert mean.dtype == torch.float32 and mean.shape == (2, 4, 8, 8)
    assert bool(mean.isfinite().all()) and model.pipe.vae.dtype == torch.float16


def test_the_loss_trains_both_halves_and_nothing_else(sdxl):
    from oneword.core.invariant import TextualInversionInvariant
    from oneword.core.train import Batch, batch_loss

    sdxl.add_placeholder_tokens(["<zq-t>"])
    invariant = TextualInversionInvariant(sdxl)
    rows = torch.randn(2, 1, L + G, requires_grad=True)
    ids = sdxl.token_ids(["a photo of <zq-t>"] * 4)
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(4, 4, 8, 8, generator=gen)
    batch = Batch(
        torch.tensor([0, 0, 1, 1]),
        ids,
        latents,
        torch.randn_like(latents),
        torch.tensor([10, 300, 600, 900]),
    )
    losses = batch_loss(sdxl, rows, batch, 0.25, max_batch=3)
    assert losses.shape == (4,) and bool(losses.isfinite().all())
    grad = rows.grad
    assert float(grad[:, :, :L].abs().sum()) > 0 and float(grad[:, :, L:].abs().sum()) > 0
    invariant.check()


def test_batched_sdxl_candidates_equal_separate_runs_and_start_per_half(sdxl, tmp_path):
    from oneword.core.train import Candidate, TrainConfig, start_state, train

    sdxl.add_placeholder_tokens(["<zq-k>"])
    photos = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def config(**kw):
        return TrainConfig(
            token="<zq-k>", init_word="cat", steps=2, batch_size=2, grad_accum=1, lr=1e-2, **kw
        )

    cands = (Candidate(5), Candidate(6, init="random"))
    batched = train(sdxl, photos, config(candidates=cands), tmp_path / "batched")
    for k, cand in enumerate(cands):
        single = train(sdxl, photos, config(candidates=(cand,)), tmp_path / f"single{k}")
        torch.testing.assert_close(batched.rows()[k], single.rows()[0], atol=1e-5, rtol=1e-5)
    start = start_state(sdxl, config(candidates=(Candidate(0, init="random"),))).rows()[0]
    for half, table in (
        (start[:, :L], sdxl.embedding.table.weight),
        (start[:, L:], sdxl.embedding_2.table.weight),
    ):  # each half's own norm
        torch.testing.assert_close(half.norm(dim=-1), table.norm(dim=-1).mean().expand(1))


def test_an_sdxl_single_file_loads_through_the_sdxl_pipeline(sdxl_dir, tmp_path, monkeypatch):
    import diffusers

    monkeypatch.setenv("ONEWORD_CACHE", str(tmp_path / "cache"))
    vocabulary = tmp_path / "cache" / "single-file" / "clip-tokenizer"
    vocabulary.mkdir(parents=True)
    (vocabulary / "vocab.json").write_text("{}")
    (vocabulary / "merges.txt").write_text("#version: 0.2\n")
    checkpoint = tmp_path / "sd_xl_base.safetensors"
    keys = (
        "model.diffusion_model.out.2.bias",
        "conditioner.embedders.1.model.token_embedding.weight",
    )
    save_file({key: torch.zeros(2) for key in keys}, checkpoint)
    called = []

    def from_single_file(path, **kw):
        called.append((path, kw["local_files_only"], Path(kw["config"]).name))
        return diffusers.StableDiffusionXLPipeline.from_pretrained(sdxl_dir)

    monkeypatch.setattr(diffusers.StableDiffusionXLPipeline, "from_single_file", from_single_file)
    model = load_model(str(checkpoint), "cpu")
    assert called == [(str(checkpoint), True, "sdxl")] and isinstance(model, SDXLModel)


# -- files ----------------------------------------------------------------------------------
def test_sdxl_files_hold_clip_l_and_clip_g(tmp_path):
    emb = _pair(3)
    files = write_embedding_files(emb, tmp_path, "zq-pair")
    assert list(files) == ["sdxl"] and files["sdxl"].name == "zq-pair.safetensors"
    with safe_open(str(files["sdxl"]), framework="pt") as f:
        assert sorted(f.keys()) == ["clip_g", "clip_l"]
        assert torch.equal(f.get_tensor("clip_l"), emb.vectors[:, :L])
        assert torch.equal(f.get_tensor("clip_g"), emb.vectors[:, L:])
        assert f.metadata()["token"] == "<zq-pair>"
    (back,) = load_embeddings(files["sdxl"])
    assert back.token == "<zq-pair>" and back.layout == (L, G)
    assert torch.equal(back.vectors, emb.vectors) and back.metadata["family"] == "sdxl"
    with pytest.raises(OnewordError, match="SDXL embeddings are written as .safetensors"):
        save_embedding(emb, tmp_path / "x.pt", "a1111-pt")
    one = LearnedEmbedding("<one>", torch.zeros(1, 768))
    with pytest.raises(OnewordError, match="--format sdxl"):
        save_embedding(one, tmp_path / "one.safetensors", "sdxl")


def test_a_foreign_sdxl_file_reads_as_a_pair(tmp_path):
    save_file(
        {"clip_l": torch.ones(2, 768), "clip_g": torch.zeros(2, 1280)},
        tmp_path / "civitai-style.safetensors",
    )
    (emb,) = load_embeddings(tmp_path / "civitai-style.safetensors")
    assert emb.token == "<civitai-style>" and emb.layout == (768, 1280)
    assert emb.vectors.shape == (2, 2048) and float(emb.vectors[:, :768].min()) == 1.0


@pytest.mark.parametrize("n", [1, 2])
def test_diffusers_sdxl_loading_reads_our_file(tmp_path, sdxl_dir, n):
    import diffusers
    from safetensors.torch import load_file

    pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(sdxl_dir)
    emb = _pair(n, seed=n, token="<zq-xl>")
    path = write_embedding_files(emb, tmp_path, "zq-xl")["sdxl"]
    state = load_file(path)
    pipe.load_textual_inversion(
        state["clip_l"], token=emb.token, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer
    )
    pipe.load_textual_inversion(
        state["clip_g"],
        token=emb.token,
        text_encoder=pipe.text_encoder_2,
        tokenizer=pipe.tokenizer_2,
    )
    names = placeholder_names(emb.token, n)
    for tok, enc, half in (
        (pipe.tokenizer, pipe.text_encoder, emb.vectors[:, :L]),
        (pipe.tokenizer_2, pipe.text_encoder_2, emb.vectors[:, L:]),
    ):
        ids = tok.convert_tokens_to_ids(names)
        assert tok.unk_token_id not in ids
        assert torch.equal(enc.get_input_embeddings().weight[ids].detach(), half)


def test_family_mismatch_is_one_line_naming_both():
    sd15 = LearnedEmbedding("<a>", torch.zeros(1, 768))
    xl = _pair(1, layout=(768, 1280))
    check_width(xl, (768, 1280), "sdxl", "xl.safetensors")
    for emb, layout, mine, theirs in (
        (sd15, (768, 1280), "Stable Diffusion 1.x (768-d)", "SDXL (clip_l 768 + clip_g 1280)"),
        (xl, 768, "SDXL (clip_l 768 + clip_g 1280)", "Stable Diffusion 1.x (768-d)"),
    ):
        with pytest.raises(OnewordError) as info:
            check_width(emb, layout, "some/model", "kitty.safetensors")
        message = str(info.value)
        assert "\n" not in message and "kitty.safetensors" in message
        assert mine in message and theirs in message and "some/model" in message
        assert message.index(mine) < message.index(theirs)


# -- end to end through the command ------------------------------------------------------------
def test_learn_generate_mix_inspect_on_sdxl(capsys, tmp_path, sdxl_dir, tiny_model_dir, photo_dir):
    common = ("--init", "cat", "--steps", "2", "--grad-accum", "1", "--model", sdxl_dir)
    for seed in (0, 1):
        code, _, err = run(
            capsys,
            "learn",
            photo_dir,
            "--token",
            "<zq-cat>",
            "--seed",
            seed,
            "--out",
            tmp_path / f"run{seed}",
            "--vectors",
            "2",
            *common,
        )
        assert code == 0, err
    files = [tmp_path / f"run{s}" / "zq-cat.safetensors" for s in (0, 1)]
    (learned,) = load_embeddings(files[0])
    assert learned.layout == (L, G) and learned.num_vectors == 2
    assert learned.metadata["family"] == "sdxl" and learned.metadata["steps"] == "2"

    code, out, err = run(
        capsys,
        "generate",
        "a photo of <zq-cat>",
        "--embedding",
        files[0],
        "-n",
        "2",
        "--steps",
        "2",
        "--model",
        sdxl_dir,
        "--out",
        tmp_path / "im",
    )
    assert code == 0, err
    from PIL import Image

    assert Image.open(tmp_path / "im" / "a-photo-of-zq-cat-0.png").size == (32, 32)

    code, out, err = run(capsys, "mix", *files, "-o", tmp_path / "mixed.safetensors")
    assert code == 0, err
    (mixed,) = load_embeddings(tmp_path / "mixed.safetensors")
    assert mixed.layout == (L, G)
    for half in (slice(0, L), slice(L, L + G)):  # norm-mean keeps each half's norm
        want = (
            learned.vectors[:, half].norm(dim=-1)
            + load_embeddings(files[1])[0].vectors[:, half].norm(dim=-1)
        ) / 2
        torch.testing.assert_close(mixed.vectors[:, half].norm(dim=-1), want)

    code, out, err = run(
        capsys, "inspect", files[0], tmp_path / "mixed.safetensors", "--model", sdxl_dir
    )
    assert code == 0, err
    assert "nearest:" in out
    code, out, err = run(
        capsys, "arith", "cat + 0.5*dog", "--model", sdxl_dir, "-o", tmp_path / "catdog.safetensors"
    )
    assert code == 0, err
    assert load_embeddings(tmp_path / "catdog.safetensors")[0].layout == (L, G)

    sd_file = tmp_path / "sd.safetensors"
    save_embedding(LearnedEmbedding("<zq-sd>", torch.zeros(1, 32)), sd_file)
    code, _, err = run(
        capsys,
        "generate",
        "<zq-sd>",
        "--embedding",
        sd_file,
        "-n",
        "1",
        "--steps",
        "1",
        "--model",
        sdxl_dir,
        "--out",
        tmp_path / "bad",
    )
    assert code == 2 and "32-d" in err and "clip_l 32 + clip_g 48" in err
    code, _, err = run(capsys, "mix", files[0], sd_file, "-o", tmp_path / "x.safetensors")
    assert code == 2 and "clip_l 32 + clip_g 48" in err and "32-d" in err
    code, _, err = run(capsys, "inspect", sd_file, "--model", sdxl_dir)
    assert code == 2 and "clip_l 32 + clip_g 48" in err and err.count("\n") == 1
    code, _, err = run(
        capsys,
        "generate",
        "<zq-cat>",
        "--embedding",
        files[0],
        "-n",
        "1",
        "--sample-steps",
        "1",
        "--model",
        tiny_model_dir,
        "--out",
        tmp_path / "bad",
    )
    assert code == 2 and "clip_l 32 + clip_g 48" in err and err.count("\n") == 1


def test_sweep_and_score_on_sdxl(capsys, tmp_path, sdxl_dir, photo_dir, tiny_evaluators):
    code, out, err = run(
        capsys,
        "sweep",
        photo_dir,
        "--token",
        "<zq-s>",
        "--init",
        "cat",
        "--candidates",
        "2",
        "--steps",
        "2",
        "--grad-accum",
        "1",
        "--model",
        sdxl_dir,
    )
    assert code == 0, err
    code, out, err = run(
        capsys,
        "score",
        "r1",
        "--images",
        "2",
        "--steps",
        "2",
        "--clip-model",
        tiny_evaluators["clip"],
        "--dino-model",
        tiny_evaluators["dino"],
    )
    assert code == 0, err
    assert "c00" in out and "c01" in out
    code, out, err = run(
        capsys,
        "evolve",
        "r1",
        "--generations",
        "1",
        "--population",
        "2",
        "--images",
        "2",
        "--steps",
        "2",
        "--crossover",
        "slerp",
        "--clip-model",
        tiny_evaluators["clip"],
        "--dino-model",
        tiny_evaluators["dino"],
    )
    assert code == 0, err
    assert "generation 1: r2" in out
    from oneword.experiments.scoring import candidate_embedding
    from oneword.experiments.store import Store

    with Store.open() as store:
        run2 = store.run(2)
        children = [candidate_embedding(store, run2, c) for c in store.candidates(2)]
    assert [c.layout for c in children] == [(L, G), (L, G)]
    from oneword.search.evolve import mix_candidates

    with Store.open() as store:
        ids = [c.id for c in store.candidates(1)]
    mixed = mix_candidates(ids, [1, 1], "norm-mean")
    with Store.open() as store:
        (child,) = store.candidates(mixed.id)
        assert candidate_embedding(store, store.run(mixed.id), child).layout == (L, G)


def test_per_layer_words_on_sdxl_are_one_line_and_write_nothing(capsys, tmp_path, sdxl_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    from PIL import Image

    Image.new("RGB", (32, 32), (10, 200, 30)).save(photos / "p.png")
    out = tmp_path / "run"
    argv = ["learn", photos, "--token", "<p>", "--init", "cat", "--per-layer", "--out", out]
    code, _, err = run(capsys, *argv, "--model", sdxl_dir)
    assert code == 2 and err.strip().splitlines()[-1].startswith("oneword: error: --per-layer")
    assert "leave --per-layer out" in err and "Traceback" not in err
    assert not list(out.glob("*.safetensors"))
