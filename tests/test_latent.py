"""Latent-space generators on a local SD-family checkpoint (banana.models.latent).

A tiny random Stable-Diffusion-family checkpoint is built from configs with a fixed seed (as
diffusers' own tests do) and saved with ``StableDiffusionPipeline.save_pretrained`` into the real
on-disk layout (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/). Its
tokenizer is a byte-level CLIP BPE with no merges, written here from a generated vocab.json. The
VAE downsamples 2x, so the smoke world's 16 px images become 4-channel 8x8 latents.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from banana.adapters import add_lora, has_lora, read_adapter_config, trainable_parameters
from banana.models.latent import CONV_IN_WEIGHTS, LORA_WEIGHTS, LatentGenerator, LatentGeneratorConfig
from banana.models.registry import is_sd_checkpoint, load_generator
from banana.pipeline import BananaPipeline
from banana.tasks import TASKS
from banana.training import TrainConfig, load_run, read_config, train
from banana.world import CANONICAL_PALETTE, load_world

pytestmark = pytest.mark.usefixtures("one_thread")

RES = 16          # the smoke world's resolution
PROMPTS = ["a red sphere on a checkered floor", "Generate a metric depth map of this image."]


# ------------------------------------------------------------------------------------- the checkpoint
def _byte_level_vocab() -> dict[str, int]:
    """CLIP's byte-to-unicode alphabet, each symbol also with the end-of-word suffix: every text
    tokenizes (one token per character) without any merges."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            codes.append(256 + extra)
            extra += 1
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for code in codes:
            vocab[chr(code) + suffix] = len(vocab)
    return vocab


def make_tiny_sd(out: Path, seed: int = 0) -> Path:
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    source = out.parent / f"{out.name}-tokenizer-source"
    source.mkdir(parents=True, exist_ok=True)
    vocab = _byte_level_vocab()
    (source / "vocab.json").write_text(json.dumps(vocab))
    (source / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer.from_pretrained(source, model_max_length=77)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                layers_per_block=1, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=32)
    torch.manual_seed(seed)
    vae = AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, sample_size=RES)
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=77, vocab_size=len(vocab), layer_norm_eps=1e-5))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
                            safety_checker=None, feature_extractor=None, requires_safety_checker=False
                            ).save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    return make_tiny_sd(tmp_path_factory.mktemp("checkpoint") / "tiny-sd")


@pytest.fixture(scope="module")
def val_images(world_dir):
    return np.asarray(load_world(world_dir)["val"][0:2]["image"])


def _outputs(generator) -> torch.Tensor:
    """The UNet's answer to fixed latents, conditions, timesteps and prompts."""
    rng = torch.Generator().manual_seed(0)
    noisy, cond = torch.randn(2, 4, 8, 8, generator=rng), torch.randn(2, 4, 8, 8, generator=rng)
    with torch.no_grad():
        states, mask = generator.encode_prompts(PROMPTS)
        return generator(noisy, torch.tensor([10, 700]), cond, states, mask)


def _frozen_state(generator) -> dict[str, torch.Tensor]:
    return {f"{part}.{k}": v.clone() for part in ("vae", "text_encoder")
            for k, v in getattr(generator, part).state_dict().items()}


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, sd_dir, world_dir):
    """One LoRA tuning step of a latent generator; -> (run_dir, the trained generator, frozen weights before)."""
    generator = LatentGenerator.from_checkpoint(sd_dir, resolution=RES)
    before = _frozen_state(generator)
    config = TrainConfig(tuning="lora", lora_rank=4, batch_size=4, max_steps=1, log_every=1, ema_decay=0.9)
    run = train(config, tmp_path_factory.mktemp("runs") / "lora", generator=generator, world_dir=world_dir,
                progress=False)
    return run, generator, before


# ------------------------------------------------------------------------------------- construction
def test_checkpoint_is_detected_and_conv_in_widened(sd_dir):
    from diffusers import UNet2DConditionModel

    assert is_sd_checkpoint(sd_dir) and (sd_dir / "model_index.json").is_file()
    zeros = LatentGenerator.from_checkpoint(sd_dir)
    c = zeros.config
    assert (c.resolution, c.latent_size, c.latent_channels, c.vae_scale_factor) == (RES, 8, 4, 2)
    assert (c.prediction_type, c.beta_schedule, c.beta_start, c.beta_end) == ("epsilon", "scaled_linear", 0.00085, 0.012)
    assert c.scaling_factor == zeros.vae.config.scaling_factor and c.text_max_length == 77
    assert zeros.unet.conv_in.in_channels == zeros.unet.config.in_channels == 8
    assert zeros.sample_shape(3) == (3, 4, 8, 8)

    base = UNet2DConditionModel.from_pretrained(sd_dir / "unet").eval()
    w = base.conv_in.weight
    assert torch.equal(zeros.unet.conv_in.weight[:, :4], w) and not zeros.unet.conv_in.weight[:, 4:].any()
    half = LatentGenerator.from_checkpoint(sd_dir, conv_in_init="copy-half")
    assert torch.equal(half.unet.conv_in.weight, torch.cat([w, w], 1) * 0.5)
    assert torch.equal(half.unet.conv_in.bias, base.conv_in.bias)

    # zeros: the widened UNet starts as exactly the base, whatever the condition
    zeros.eval()
    rng = torch.Generator().manual_seed(1)
    x, cond = torch.randn(2, 4, 8, 8, generator=rng), torch.randn(2, 4, 8, 8, generator=rng)
    with torch.no_grad():
        states, mask = zeros.encode_prompts(PROMPTS)
        assert mask.shape == (2, 77) and mask.all() and states.shape == (2, 77, 32)
        widened = zeros(x, torch.tensor([5, 900]), cond, states, mask)
        original = base(x, torch.tensor([5, 900]), encoder_hidden_states=states).sample
    torch.testing.assert_close(widened, original, atol=1e-5, rtol=1e-5)


def test_model_space_is_the_vae_latent_space(sd_dir):
    g = LatentGenerator.from_checkpoint(sd_dir).eval()
    images = torch.rand(3, 3, RES, RES) * 2 - 1
    images[1] = 0.0                                             # "no image"
    latents = g.to_model_space(images)
    assert latents.shape == (3, 4, 8, 8) and not latents[1].any() and latents[0].abs().sum() > 0
    expected = g.vae.encode(images[:1]).latent_dist.mean * g.config.scaling_factor
    torch.testing.assert_close(latents[:1], expected)
    assert g.to_image_space(latents).shape == (3, 3, RES, RES)


def test_what_trains_lora_and_full(sd_dir):
    from banana.training import BananaModule

    g = add_lora(LatentGenerator.from_checkpoint(sd_dir))
    names = set(trainable_parameters(g))
    assert names and all(".lora_" in n or n.startswith("unet.conv_in.") for n in names)
    assert {"unet.conv_in.weight", "unet.conv_in.bias"} <= names          # the widened conv_in trains
    module = BananaModule(LatentGenerator.from_checkpoint(sd_dir), TrainConfig(tuning="full", ema_decay=0))
    full = set(module.trainable)
    assert full == {f"unet.{n}" for n, _ in module.generator.unet.named_parameters()}   # VAE and CLIP frozen


# ------------------------------------------------------------------------------------- training
def test_lora_tuning_step_saves_diffusers_format_and_reloads_exactly(lora_run, sd_dir):
    run, trained, before = lora_run
    after = _frozen_state(trained)
    assert all(torch.equal(before[k], after[k]) for k in before)          # VAE and CLIP untouched
    _, generator_config = read_config(run)
    assert isinstance(generator_config, LatentGeneratorConfig) and generator_config == trained.config

    adapter = run / "adapter"
    assert sorted(p.name for p in adapter.iterdir()) == sorted(["adapter_config.json", LORA_WEIGHTS, CONV_IN_WEIGHTS])
    record = read_adapter_config(adapter)
    assert record["weights_format"] == "diffusers-lora" and record["metadata"]["base_model"] == str(sd_dir.resolve())
    from safetensors import safe_open

    with safe_open(str(adapter / LORA_WEIGHTS), "pt") as f:
        keys, metadata = list(f.keys()), f.metadata()
    assert keys and all(k.startswith("unet.") and ".lora" in k for k in keys)
    assert any(k.startswith("unet") for k in json.loads(metadata["lora_adapter_metadata"]))

    reloaded = load_run(run)
    assert isinstance(reloaded, LatentGenerator) and has_lora(reloaded)
    assert torch.equal(_outputs(reloaded), _outputs(trained.eval()))
    # ...and the conv_in that trained is the one reloaded, not the initial one
    assert not torch.equal(reloaded.unet.conv_in.weight, LatentGenerator.from_checkpoint(sd_dir).unet.conv_in.weight)


def test_diffusers_lora_file_loads_into_a_stock_sd_pipeline(lora_run, sd_dir):
    """pipe.load_lora_weights reads the export; with the widened conv_in put in, the stock UNet
    answers exactly as banana's."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    from banana.models.latent import widen_conv_in

    run, _, _ = lora_run
    ours = load_run(run)
    pipe = StableDiffusionPipeline.from_pretrained(sd_dir, safety_checker=None, requires_safety_checker=False)
    pipe.load_lora_weights(run / "adapter", weight_name=LORA_WEIGHTS, adapter_name="banana")
    widen_conv_in(pipe.unet, 4, "zeros")
    conv = load_file(str(run / "adapter" / CONV_IN_WEIGHTS))
    pipe.unet.conv_in.load_state_dict({k.removeprefix("unet.conv_in."): v for k, v in conv.items()})
    pipe.unet.eval()
    rng = torch.Generator().manual_seed(0)
    noisy, cond = torch.randn(2, 4, 8, 8, generator=rng), torch.randn(2, 4, 8, 8, generator=rng)
    with torch.no_grad():
        states, mask = ours.encode_prompts(PROMPTS)
        stock = pipe.unet(torch.cat([noisy, cond], 1), torch.tensor([10, 700]), encoder_hidden_states=states).sample
    assert torch.equal(stock, _outputs(ours))


def test_full_tuning_from_a_checkpoint_path_and_save_load_round_trip(tmp_path, sd_dir, world_dir):
    config = TrainConfig(tuning="full", batch_size=4, max_steps=1, log_every=1, ema_decay=0)
    run = train(config, tmp_path / "full", generator=str(sd_dir), world_dir=world_dir, progress=False)
    tuned = load_run(run)
    fresh = LatentGenerator.from_checkpoint(sd_dir, resolution=RES)
    assert isinstance(tuned, LatentGenerator) and not has_lora(tuned)
    assert not torch.equal(tuned.unet.conv_in.weight, fresh.unet.conv_in.weight)             # the UNet trained
    assert all(torch.equal(a, b) for a, b in zip(tuned.vae.state_dict().values(), fresh.vae.state_dict().values()))
    assert json.loads((run / "model" / "generator_config.json").read_text())["kind"] == "latent"

    tuned.save_pretrained(tmp_path / "saved")
    again = load_generator(tmp_path / "saved")
    assert isinstance(again, LatentGenerator) and again.config == tuned.config
    assert torch.equal(_outputs(again), _outputs(tuned))


# ------------------------------------------------------------------------------------- sampling
def test_pipeline_predicts_every_task_and_round_trips(lora_run, val_images, tmp_path):
    _, trained, _ = lora_run
    pipe = BananaPipeline(trained, scheduler="ddim")
    for task in TASKS:
        out = pipe.predict(val_images, task, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
        assert out["rgb"].shape == (1, 2, 3, RES, RES) and 0 <= float(out["rgb"].min()) <= float(out["rgb"].max()) <= 1
        prediction = out["prediction"]
        if task == "segmentation":
            assert prediction.shape == (2, RES, RES) and set(prediction.unique().tolist()) <= set(
                range(len(CANONICAL_PALETTE))) | {255}
        elif task == "depth":
            assert prediction.shape == (2, RES, RES) and not torch.isnan(prediction).any()
        else:
            norms = prediction.norm(dim=1)
            assert prediction.shape == (2, 3, RES, RES) and torch.all(((norms - 1).abs() < 1e-4) | (norms == 0))
    # every sampler, dual guidance and an ensemble, from latent noise
    for name in ("dpm++", "euler"):
        rgb = pipe(val_images, PROMPTS[1], scheduler=name, num_inference_steps=2, text_guidance=2.0,
                   image_guidance=1.5, ensemble_size=2, return_members=True, generator=torch.Generator().manual_seed(0))
        assert rgb.shape == (2, 2, 3, RES, RES) and torch.isfinite(rgb).all()
        assert pipe.last_stats["branches"] == ["full", "img", "uncond"]
    assert pipe.generate(PROMPTS[:1], num_inference_steps=2).shape == (1, 3, RES, RES)

    first = pipe(val_images, PROMPTS[1], num_inference_steps=2, generator=torch.Generator().manual_seed(3))
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = BananaPipeline.from_pretrained(tmp_path / "pipe")
    assert isinstance(loaded.generator, LatentGenerator)
    second = loaded(val_images, PROMPTS[1], num_inference_steps=2, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first, second)


def test_retention_denoising_loss_runs_in_latent_space(split, sd_dir):
    from banana.evaluation.retention import denoising_loss

    result = denoising_loss(LatentGenerator.from_checkpoint(sd_dir), split, timesteps=(100, 900), n=3)
    assert np.isfinite(result["mean"]) and result["prediction_type"] == "epsilon"


# ------------------------------------------------------------------------------------- errors
def test_malformed_or_missing_checkpoints_fail_clearly(tmp_path, sd_dir, world_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LatentGenerator.from_checkpoint(tmp_path / "nowhere")
    partial = tmp_path / "partial"
    shutil.copytree(sd_dir, partial, ignore=shutil.ignore_patterns("text_encoder"))
    shutil.rmtree(partial / "vae")
    (partial / "vae").mkdir()
    with pytest.raises(FileNotFoundError, match=r"missing vae/config.json, text_encoder/"):
        LatentGenerator.from_checkpoint(partial)
    broken = tmp_path / "broken"
    shutil.copytree(sd_dir, broken)
    (broken / "scheduler" / "scheduler_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        LatentGenerator.from_checkpoint(broken)
    xl = tmp_path / "xl"
    shutil.copytree(sd_dir, xl)
    (xl / "text_encoder_2").mkdir()
    with pytest.raises(ValueError, match="SDXL"):
        LatentGenerator.from_checkpoint(xl)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a saved banana generator"):
        load_generator(tmp_path / "empty")
    with pytest.raises(ValueError, match="multiple of 4"):
        LatentGenerator.from_checkpoint(sd_dir, resolution=6)
    with pytest.raises(ValueError, match="conv_in_init"):
        LatentGenerator.from_checkpoint(sd_dir, conv_in_init="random")


def test_adapter_refuses_another_config(lora_run, sd_dir):
    run, _, _ = lora_run
    other = LatentGenerator.from_checkpoint(sd_dir, resolution=RES, conv_in_init="copy-half")
    from banana.adapters import load_adapter

    with pytest.raises(ValueError, match="different config"):
        load_adapter(other, run / "adapter")


# ------------------------------------------------------------------------------------- VAE codec ceiling
def test_vae_codec_ceiling_on_the_tiny_vae(sd_dir, world_dir):
    from banana.evaluation.ceiling import codec_ceiling, vae_codec_ceiling

    test = load_world(world_dir)["test"]
    rows = test[0:8]
    semantic, depth, normals = (np.asarray(rows[k]) for k in ("semantic", "depth", "normals"))
    frame = vae_codec_ceiling(sd_dir, semantic, depth, normals, CANONICAL_PALETTE)
    assert set(frame["bits"]) == {"8", "8 + vae"}
    plain = codec_ceiling(semantic, depth, normals, CANONICAL_PALETTE, bits=(8,))
    key = ["task", "codec", "metric"]
    merged = frame[frame["bits"] == "8"].merge(plain, on=key, suffixes=("", "_plain"))
    assert len(merged) == len(plain) and np.allclose(merged["value"], merged["value_plain"])   # same 8-bit ceiling
    vae = frame[frame["bits"] == "8 + vae"].set_index(key)["value"]
    assert 0 <= vae[("segmentation", "palette, nearest colour", "miou")] <= 1
    assert np.isfinite(vae[("normals", "(1-x, 1+y, 1+z)/2", "mean")])
    # a random VAE destroys the codes: far below the 8-bit ceiling (an honest, bad number)
    assert vae[("segmentation", "palette, nearest colour", "miou")] < 0.9
