"""Sampling pipeline: samplers, dual guidance, ensembles, decoding, persistence, input checks.

Everything runs the untrained ``smoke`` generator (16x16) for 1-2 steps: these tests check the
plumbing (shapes, ranges, determinism, which branches run), not picture quality.
"""

import pytest
import torch

from banana.models import BananaGenerator
from banana.pipeline import SCHEDULERS, BananaPipeline, SamplingDefaults, build_scheduler
from banana.world import CANONICAL_PALETTE

RES = 16
PROMPT = "Render the depth of this picture."

# diffusers 0.42's DPM/Euler set_timesteps call np.array(tensor, copy=False): harmless noise.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two OpenMP threads on a shared 2-core machine can be 20x slower than one (spinning
    threads fight other processes); these tiny UNet calls gain nothing from a second thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pipe():
    return BananaPipeline(BananaGenerator.from_preset("smoke", seed=0), scheduler="ddim")


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, RES, RES, generator=torch.Generator().manual_seed(1))


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


class UNetSpy:
    """Records the batch size of every UNet call (forward pre-hook, removed on exit)."""

    def __init__(self, pipe):
        self.unet = pipe.generator.unet
        self.batches = []

    def __enter__(self):
        self.handle = self.unet.register_forward_pre_hook(lambda module, args: self.batches.append(args[0].shape[0]))
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# --------------------------------------------------------------------------- samplers
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_each_scheduler_gives_images_in_range(pipe, images, name):
    out = pipe(images, PROMPT, scheduler=name, num_inference_steps=2, generator=seeded())
    assert out.shape == (2, 3, RES, RES) and out.dtype == torch.float32
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert pipe.last_stats["scheduler"] == name and pipe.last_stats["unet_calls"] == 2
    assert pipe.last_timing > 0


def test_schedulers_follow_the_training_schedule(pipe):
    config = pipe.generator.config
    for name in SCHEDULERS:
        s = build_scheduler(name, config)
        assert s.config.prediction_type == config.prediction_type
        assert s.config.timestep_spacing == "trailing"
        assert s.config.beta_schedule == config.beta_schedule
        s.set_timesteps(1)
        assert int(s.timesteps[0]) == config.num_train_timesteps - 1    # trailing: 1 step starts at pure noise
    assert build_scheduler("ddim", config).config.clip_sample is False
    assert build_scheduler("dpm++", config).config.algorithm_type == "dpmsolver++"
    with pytest.raises(ValueError, match=r"unknown scheduler 'heun'.*ddim.*dpm\+\+.*euler"):
        build_scheduler("heun", config)


def test_one_step_samplers_agree_for_x0_prediction(pipe, images):
    """With x0 prediction one trailing step returns the model's x0 estimate from pure noise,
    whatever the sampler: Euler matches only if init_noise_sigma and scale_model_input are applied
    (its noise is scaled by ~2e4 here, hence the float32 tolerance)."""
    assert pipe.generator.config.prediction_type == "sample"
    out = {n: pipe(images, PROMPT, scheduler=n, num_inference_steps=1, generator=seeded()) for n in SCHEDULERS}
    torch.testing.assert_close(out["dpm++"], out["ddim"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["euler"], out["ddim"], atol=1e-2, rtol=0)


# --------------------------------------------------------------------------- randomness
def test_same_seed_same_output_different_seed_different(pipe, images):
    a = pipe(images, PROMPT, num_inference_steps=2, generator=seeded(3))
    b = pipe(images, PROMPT, num_inference_steps=2, generator=seeded(3))
    c = pipe(images, PROMPT, num_inference_steps=2, generator=seeded(4))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_ensemble_members(pipe, images):
    members = pipe(images, PROMPT, num_inference_steps=1, ensemble_size=3, generator=seeded(), return_members=True)
    assert members.shape == (3, 2, 3, RES, RES)
    assert not torch.allclose(members[0], members[1])
    first = pipe(images, PROMPT, num_inference_steps=1, ensemble_size=3, generator=seeded())
    single = pipe(images, PROMPT, num_inference_steps=1, ensemble_size=1, generator=seeded())
    torch.testing.assert_close(first, members[0])
    torch.testing.assert_close(single, members[0], atol=1e-5, rtol=0)   # member 0 ignores ensemble_size
    # chunking the UNet batch changes nothing but the number of calls
    with UNetSpy(pipe) as spy:
        chunked = pipe(images, PROMPT, num_inference_steps=1, ensemble_size=3, generator=seeded(),
                       return_members=True, max_batch_size=2)
    assert spy.batches == [2, 2, 2]
    torch.testing.assert_close(chunked, members, atol=1e-5, rtol=0)


def test_input_kinds_are_equivalent(pipe, images):
    ref = pipe(images, PROMPT, num_inference_steps=1, generator=seeded())
    from_numpy = pipe(images.numpy(), [PROMPT, PROMPT], num_inference_steps=1, generator=seeded())
    assert torch.equal(ref, from_numpy)
    as_uint8 = (images * 255).round().to(torch.uint8)
    torch.testing.assert_close(pipe(as_uint8.numpy(), PROMPT, num_inference_steps=1, generator=seeded()),
                               pipe(as_uint8.float() / 255, PROMPT, num_inference_steps=1, generator=seeded()))
    one = pipe(images[0], PROMPT, num_inference_steps=1, generator=seeded())
    assert one.shape == (1, 3, RES, RES)


def test_train_mode_is_restored(pipe, images):
    pipe.generator.train()
    try:
        pipe(images, PROMPT, num_inference_steps=1)
        assert pipe.generator.training
    finally:
        pipe.generator.eval()


# --------------------------------------------------------------------------- guidance
@pytest.mark.parametrize("text_g, image_g, rows", [(1.0, 1.0, 1), (7.5, 1.5, 3), (2.0, 1.0, 2)])
def test_guidance_branches_share_one_unet_call(pipe, images, text_g, image_g, rows):
    with UNetSpy(pipe) as spy:
        pipe(images, PROMPT, num_inference_steps=2, text_guidance=text_g, image_guidance=image_g)
    assert spy.batches == [rows * 2, rows * 2]            # 2 steps, one call each, branches batched


@pytest.mark.parametrize("text_g, rows", [(1.0, 1), (3.0, 2)])
def test_text_to_image_guidance(pipe, text_g, rows):
    with UNetSpy(pipe) as spy:
        out = pipe.generate(["a red sphere", "a box"], num_inference_steps=1, text_guidance=text_g)
    assert out.shape == (2, 3, RES, RES)
    assert spy.batches == [rows * 2]


def test_dual_guidance_formula(pipe, images):
    """One DDIM step of an x0 model returns the guided x0 itself, so the pipeline's output must be
    uncond + ig (img - uncond) + tg (full - img), with "" as no text and zeros as no image."""
    tg, ig = 1.3, 0.8
    out = pipe(images, PROMPT, num_inference_steps=1, text_guidance=tg, image_guidance=ig, generator=seeded())
    model = pipe.generator
    noise = torch.randn(images.shape, generator=seeded())
    t = torch.tensor(model.config.num_train_timesteps - 1)
    cond, blank = 2 * images - 1, torch.zeros_like(images)
    with torch.no_grad():
        states, mask = model.encode_prompts([PROMPT, PROMPT, "", ""])
        full = model(noise, t, cond, states[:2], mask[:2])
        img = model(noise, t, cond, states[2:], mask[2:])
        uncond = model(noise, t, blank, states[2:], mask[2:])
    expected = (uncond + ig * (img - uncond) + tg * (full - img)).clamp(-1, 1) / 2 + 0.5
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)
    assert not torch.allclose(out, full.clamp(-1, 1) / 2 + 0.5, atol=1e-3)   # guidance did something


# --------------------------------------------------------------------------- tasks
@pytest.mark.parametrize("task", ["segmentation", "depth", "normals"])
def test_predict_decodes_and_ensembles(pipe, images, task):
    out = pipe.predict(images, task, num_inference_steps=1, ensemble_size=2, generator=seeded())
    assert out["rgb"].shape == (2, 2, 3, RES, RES)
    pred, members = out["prediction"], out["members"]
    assert members.shape[0] == 2 and members.shape[1:] == pred.shape
    if task == "segmentation":
        assert pred.shape == (2, RES, RES) and pred.dtype == torch.int64
        assert set(pred.unique().tolist()) <= set(range(len(CANONICAL_PALETTE))) | {255}
        assert '"sky": <135,206,235>' in out["prompt"]
    elif task == "depth":
        assert pred.shape == (2, RES, RES) and pred.dtype == torch.float32
        assert not torch.isnan(pred).any() and (pred >= 0).all()           # inf (path end) allowed
        assert "depth" in out["prompt"]
    else:
        assert pred.shape == (2, 3, RES, RES) and pred.dtype == torch.float32
        norm = pred.norm(dim=1)
        assert torch.all(((norm - 1).abs() < 1e-4) | (norm == 0))


def test_predict_with_a_custom_palette(pipe, images):
    palette = {"banana": (250, 220, 40), "floor": (20, 20, 120)}
    out = pipe.predict(images, "segmentation", palette=palette, num_inference_steps=1, generator=seeded())
    assert '"banana": <250,220,40>' in out["prompt"]
    assert set(out["prediction"].unique().tolist()) <= {0, 1, 255}


def test_generate_with_unknown_words_is_a_clear_error(pipe):
    # issue 10: a word outside the vocabulary used to be read as <unk> silently; now it is named
    with pytest.raises(ValueError, match="'zorblaxian'"):
        pipe.generate(["a zorblaxian quokka!"], num_inference_steps=1, generator=seeded())
    out = pipe.generate(["a red sphere", "a blue box 42 #ff00aa"], num_inference_steps=1, generator=seeded())
    assert out.shape == (2, 3, RES, RES) and 0 <= out.min() and out.max() <= 1
    assert pipe.generate("a red sphere", num_inference_steps=1).shape == (1, 3, RES, RES)


# --------------------------------------------------------------------------- persistence
def test_save_load_round_trip(pipe, images, tmp_path):
    source = BananaPipeline(pipe.generator, scheduler="dpm++", defaults={"num_inference_steps": 2, "ensemble_size": 2})
    source.save_pretrained(tmp_path / "p")
    loaded = BananaPipeline.from_pretrained(tmp_path / "p")
    assert loaded.scheduler_name == "dpm++" and loaded.defaults == source.defaults
    a = source(images, PROMPT, generator=seeded(7), return_members=True)
    b = loaded(images, PROMPT, generator=seeded(7), return_members=True)
    assert a.shape == (2, 2, 3, RES, RES) and torch.equal(a, b)
    # overrides at load time; a bare generator folder loads with default settings
    assert BananaPipeline.from_pretrained(tmp_path / "p", scheduler="euler", ensemble_size=1).scheduler_name == "euler"
    pipe.generator.save_pretrained(tmp_path / "g")
    bare = BananaPipeline.from_pretrained(tmp_path / "g")
    assert bare.scheduler_name == "ddim" and bare.defaults == SamplingDefaults()


# --------------------------------------------------------------------------- input checks
BAD_CALLS = {
    "channel-last": (lambda x: dict(images=x.permute(0, 2, 3, 1)), r"\[B, 3, H, W\].*channel-last"),
    "5-d": (lambda x: dict(images=x[None]), r"\[B, 3, H, W\]"),
    "resolution": (lambda x: dict(images=torch.rand(2, 3, 8, 8)), r"16x16"),
    "0..255 floats": (lambda x: dict(images=x * 255), r"\[0, 1\].*255"),
    "negative": (lambda x: dict(images=x - 0.5), r"\[0, 1\]"),
    "nan": (lambda x: dict(images=torch.where(x > 0.5, torch.nan, x)), r"NaN"),
    "int32": (lambda x: dict(images=(x * 255).int()), r"uint8"),
    "empty batch": (lambda x: dict(images=x[:0]), r"empty"),
    "prompt count": (lambda x: dict(images=x, prompts=["a", "b", "c"]), r"3 prompts for a batch of 2"),
    "prompt type": (lambda x: dict(images=x, prompts=[1, 2]), r"strings"),
    "ensemble 0": (lambda x: dict(images=x, ensemble_size=0), r"ensemble_size"),
    "steps 0": (lambda x: dict(images=x, num_inference_steps=0), r"num_inference_steps"),
    "steps float": (lambda x: dict(images=x, num_inference_steps=2.5), r"num_inference_steps"),
    "guidance nan": (lambda x: dict(images=x, text_guidance=float("nan")), r"text_guidance"),
    "scheduler": (lambda x: dict(images=x, scheduler="plms"), r"unknown scheduler"),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_inputs_raise(pipe, images, case):
    make, message = BAD_CALLS[case]
    kwargs = {"prompts": PROMPT, **make(images)}
    with pytest.raises(ValueError, match=message):
        pipe(**kwargs)


def test_bad_predict_arguments(pipe, images):
    with pytest.raises(ValueError, match="unknown task 'edges'"):
        pipe.predict(images, "edges")
    with pytest.raises(ValueError, match="generate"):
        pipe.predict(None, "depth")
    with pytest.raises(ValueError, match="ensemble_size"):
        pipe.predict(images, "depth", ensemble_size=-1)
    with pytest.raises(ValueError, match="unknown SamplingDefaults fields"):
        BananaPipeline(pipe.generator, defaults={"steps": 3})


def test_a_generator_with_lora_saves_merged_and_reloads_to_the_same_outputs(tmp_path, one_thread):
    """peft renames adapted weights; save_pretrained must merge them, not lose them on reload."""
    from banana.adapters import add_lora
    from banana.models import BananaGenerator

    torch.manual_seed(0)
    generator = BananaGenerator.from_preset("smoke", seed=0)
    add_lora(generator, rank=4)
    with torch.no_grad():                       # make the adapter matter (LoRA B starts at zero)
        for name, parameter in generator.unet.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    generator.eval()
    r = generator.config.resolution
    noisy, condition = torch.randn(2, 3, r, r), torch.randn(2, 3, r, r)
    states, mask = generator.encode_prompts(["a red sphere", "a box"])
    t = torch.tensor([10, 500])
    with torch.no_grad():
        expected = generator(noisy, t, condition, states, mask)
    generator.save_pretrained(tmp_path / "merged")
    reloaded = BananaGenerator.from_pretrained(tmp_path / "merged")
    with torch.no_grad():
        got = reloaded(noisy, t, condition, *reloaded.encode_prompts(["a red sphere", "a box"]))
    assert torch.allclose(got, expected, atol=1e-5)
    assert getattr(generator.unet, "_hf_peft_config_loaded", False), "the live generator keeps its adapters"
