"""Sampling: turn a :class:`~banana.models.BananaGenerator` into pictures, and pictures into answers.

Public API::

    from banana.pipeline import BananaPipeline, SCHEDULERS, SamplingDefaults, build_scheduler

    pipe = BananaPipeline(generator, scheduler="ddim")        # any BananaGenerator instance
    rgb = pipe(images, "Generate a metric depth map of this image.", num_inference_steps=4)
    out = pipe.predict(images, task="depth", ensemble_size=3, generator=torch.Generator().manual_seed(0))
    imgs = pipe.generate(["a red sphere on a checkered floor"])
    pipe.save_pretrained("runs/x/pipeline"); pipe = BananaPipeline.from_pretrained("runs/x/pipeline")

Why the pieces look the way they do:

* **One generator, many tasks.** Vision Banana adds no heads: segmentation, depth and normals
  are pictures the generator draws when asked. So there is one sampling loop (:meth:`__call__`),
  and :meth:`predict` only adds the task's prompt before it and the codec's decoder and the
  ensemble rule after it (both from :mod:`banana.tasks`, the same functions training uses).
* **Samplers are swappable, the noise schedule is not.** The generator was trained on one DDPM
  noise schedule (:func:`banana.models.build_noise_scheduler`); every sampler here is built from
  that schedule's config, so DDIM, DPM-Solver++ and Euler all integrate the *same* diffusion
  process, only with different numerical schemes. ``timestep_spacing="trailing"`` makes the first
  step start at the last training timestep (pure noise): with the older "leading" spacing a
  1-4 step sampler starts from a partly-noised state the model never saw at that noise level
  and produces washed-out images (Marigold v1.1, E2E-FT).
* **Dual classifier-free guidance** (InstructPix2Pix). The model was trained with the prompt and
  the condition image sometimes dropped, so it can answer three questions per step: with both
  (``full``), with the image only (``img``), with neither (``uncond``). Extrapolating away from
  the weaker answers strengthens the instruction (``text_guidance``) and faithfulness to the
  input image (``image_guidance``)::

      out = uncond + image_guidance * (img - uncond) + text_guidance * (full - img)

  Guidance combines *model outputs*; it is valid for epsilon, v and x0 (sample) prediction alike,
  because at a fixed noisy input each of these is an affine function of the others.
* **Ensembles** (Marigold): a prediction from one noise draw is one plausible answer; sampling
  ``E`` members from different noise and combining the *decoded* answers (vote / median /
  nearest-to-mean, :func:`banana.tasks.ensemble`) cancels drift that no single draw can.
* **Reproducibility.** All randomness comes from the ``generator`` argument (a
  ``torch.Generator``), drawn in a fixed order, so a seed names an output exactly.

Naming: following diffusers, the call argument ``generator`` is the *random-number* generator;
the image generator model lives in :attr:`BananaPipeline.generator` (set at construction).
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch

from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from banana.models import BananaGenerator
from banana.models.images import from_model_range, to_model_range
from banana.sampling import (SCHEDULERS, SamplingDefaults, build_scheduler, check_guidance, check_positive_int,
                             fresh_copy, load_scheduler, prepare_images, prepare_prompts, scheduler_name)
from banana.tasks import ALL_TASKS, QUERY_TASKS, decode_prediction, ensemble, query_prompts, task_prompt

__all__ = ["BananaPipeline", "SCHEDULERS", "SamplingDefaults", "build_scheduler", "PIPELINE_CONFIG_FILE",
           "SCHEDULER_FOLDER"]

PIPELINE_CONFIG_FILE = "pipeline_config.json"
SCHEDULER_FOLDER = "scheduler"


# --------------------------------------------------------------------------- the pipeline
class BananaPipeline:
    """Sampling loop, dual classifier-free guidance and ensembling around a :class:`BananaGenerator`.

    Args:
        generator: the model. Any :class:`~banana.models.BananaGenerator` instance, whatever
            weights it carries (freshly initialised, trained, with LoRA adapters injected in its
            UNet): the pipeline only calls ``generator.encode_prompts`` and ``generator(...)``, and
            never copies it, so weights updated in place (e.g. during training) are used at once.
        scheduler: a name from :data:`SCHEDULERS` (built from the generator's training noise
            schedule) or a ready diffusers scheduler instance (diffusers' way to customise one).
        defaults: :class:`SamplingDefaults` (or a dict of its fields) for arguments a call omits.

    After every call, :attr:`last_timing` holds the wall-clock seconds per input image (all
    ensemble members and guidance branches included: the cost of one answer) and
    :attr:`last_stats` the details (steps, branches, UNet calls, total seconds).
    """

    def __init__(self, generator: BananaGenerator, scheduler: str | SchedulerMixin = "ddim",
                 defaults: SamplingDefaults | Mapping | None = None):
        if not (hasattr(generator, "encode_prompts") and hasattr(generator, "config") and callable(generator)):
            raise ValueError(f"generator must be a BananaGenerator (or expose its interface), got "
                             f"{type(generator).__name__}")
        self.generator = generator
        if isinstance(scheduler, str):
            scheduler = build_scheduler(scheduler, generator.config)
        elif not isinstance(scheduler, SchedulerMixin):
            raise ValueError(f"scheduler must be a name from {sorted(SCHEDULERS)} or a diffusers scheduler, "
                             f"got {type(scheduler).__name__}")
        if scheduler.config.prediction_type != generator.config.prediction_type:
            raise ValueError(f"scheduler prediction_type {scheduler.config.prediction_type!r} does not match the "
                             f"generator's {generator.config.prediction_type!r}")
        self.scheduler = scheduler
        if defaults is None:
            defaults = SamplingDefaults()
        elif isinstance(defaults, Mapping):
            defaults = SamplingDefaults.from_dict(defaults)
        self.defaults: SamplingDefaults = defaults
        self.last_timing: float | None = None
        self.last_stats: dict = {}

    # ------------------------------------------------------------------ convenience
    @property
    def scheduler_name(self) -> str:
        return scheduler_name(self.scheduler)

    @property
    def resolution(self) -> int:
        return int(self.generator.config.resolution)

    @property
    def device(self) -> torch.device:
        return next(self.generator.parameters()).device

    def to(self, device) -> "BananaPipeline":
        self.generator.to(device)
        return self

    def __repr__(self) -> str:
        return (f"BananaPipeline(scheduler={self.scheduler_name!r}, resolution={self.resolution}, "
                f"prediction_type={self.generator.config.prediction_type!r}, defaults={self.defaults})")

    def _sampler(self, scheduler: str | SchedulerMixin | None) -> SchedulerMixin:
        """The scheduler instance for one run (always a fresh copy, see :func:`fresh_copy`)."""
        if scheduler is None or (isinstance(scheduler, str) and scheduler == self.scheduler_name):
            return fresh_copy(self.scheduler)   # keeps any customisation of the pipeline's own one
        if isinstance(scheduler, str):
            return build_scheduler(scheduler, self.generator.config)
        if isinstance(scheduler, SchedulerMixin):
            return fresh_copy(scheduler)
        raise ValueError(f"scheduler must be a name from {sorted(SCHEDULERS)} or a diffusers scheduler, "
                         f"got {type(scheduler).__name__}")

    # ------------------------------------------------------------------ sampling
    def __call__(self, images=None, prompts: str | Sequence[str] = "", *,
                 scheduler: str | SchedulerMixin | None = None, num_inference_steps: int | None = None,
                 text_guidance: float | None = None, image_guidance: float | None = None,
                 ensemble_size: int | None = None, generator: torch.Generator | None = None,
                 return_members: bool = False, progress: bool = False,
                 max_batch_size: int | None = None) -> torch.Tensor:
        """Sample pictures for ``prompts`` conditioned on ``images``.

        Args:
            images: ``None`` (text -> image: the condition is all zeros, i.e. "no image") or
                ``[B, 3, H, W]`` / ``[3, H, W]``, torch or numpy, uint8 0..255 or float in [0, 1],
                at the generator's resolution.
            prompts: one string for every image, or one per image. With ``images=None`` the
                batch size is the number of prompts. The default ``""`` is the "no text" prompt
                of classifier-free guidance (unconditional on text).
            scheduler: ``"ddim"`` | ``"dpm++"`` | ``"euler"`` or a scheduler instance; default the
                pipeline's own.
            num_inference_steps, text_guidance, image_guidance, ensemble_size, max_batch_size:
                default :attr:`defaults`. ``image_guidance`` is ignored for text -> image.
            generator: the ``torch.Generator`` all noise is drawn from (``None``: torch's global
                RNG). Same seed -> identical output; member ``e`` is drawn after members ``0..e-1``,
                so member 0 does not depend on ``ensemble_size``.
            return_members: return all members ``[E, B, 3, H, W]`` instead of the first ``[B, 3, H, W]``.
            progress: show a tqdm bar over the denoising steps.

        Returns:
            float32 torch tensor in [0, 1] on the generator's device.
        """
        start = time.perf_counter()
        d = self.defaults
        steps = check_positive_int(d.num_inference_steps if num_inference_steps is None else num_inference_steps,
                                    "num_inference_steps")
        members = check_positive_int(d.ensemble_size if ensemble_size is None else ensemble_size, "ensemble_size")
        text_g = check_guidance(d.text_guidance if text_guidance is None else text_guidance, "text_guidance")
        image_g = check_guidance(d.image_guidance if image_guidance is None else image_guidance, "image_guidance")
        max_batch = d.max_batch_size if max_batch_size is None else max_batch_size
        if max_batch is not None:
            max_batch = check_positive_int(max_batch, "max_batch_size")
        sampler = self._sampler(scheduler)
        num_train = sampler.config.num_train_timesteps
        if steps > num_train:
            raise ValueError(f"num_inference_steps={steps} exceeds the {num_train} training timesteps")

        if images is None:
            prompt_list = prepare_prompts(prompts, None)
            cond = None
        else:
            cond = prepare_images(images, self.resolution)
            prompt_list = prepare_prompts(prompts, cond.shape[0])
        batch = len(prompt_list)

        # Which guidance branches are needed. The combination is linear in the branches:
        #   with an image:  out = (1 - ig) * uncond + (ig - tg) * img + tg * full
        #   text -> image:  out = (1 - tg) * uncond + tg * full   (there is no "img" branch)
        # A branch whose weight is exactly 0 is never computed: guidance 1/1 costs one UNet pass
        # per step, image_guidance == 1 skips the unconditional branch, and so on.
        if cond is None:
            weights = {"full": text_g, "uncond": 1.0 - text_g}
        else:
            weights = {"full": text_g, "img": image_g - text_g, "uncond": 1.0 - image_g}
        branches = [name for name, w in weights.items() if w != 0.0]

        model = self.generator
        was_training = model.training
        model.eval()   # restored below: a pipeline used for validation samples mid-training must not
        try:           # leave the model in eval mode (that would silently switch off dropout)
            with torch.no_grad():
                rgb, unet_calls = self._sample(sampler, cond, prompt_list, members, steps, branches, weights,
                                               generator, max_batch, progress)
        finally:
            model.train(was_training)

        rgb = rgb.view(members, batch, *rgb.shape[1:])
        elapsed = time.perf_counter() - start
        self.last_timing = elapsed / batch
        self.last_stats = {"seconds": elapsed, "seconds_per_image": elapsed / batch,
                           "seconds_per_member": elapsed / (batch * members), "images": batch,
                           "ensemble_size": members, "num_inference_steps": steps,
                           "scheduler": scheduler_name(sampler), "branches": branches, "unet_calls": unet_calls,
                           "device": str(self.device)}
        return rgb if return_members else rgb[0]

    def _sample(self, sampler, cond, prompts, members, steps, branches, weights, generator, max_batch, progress):
        """The denoising loop over all ``members * B`` rows, in chunks of at most ``max_batch``
        UNet rows. Returns (images in [0, 1] ``[E*B, 3, H, W]`` float32, number of UNet calls)."""
        model = self.generator
        device = self.device
        dtype = next(model.unet.parameters()).dtype
        batch = len(prompts)
        shape = tuple(model.sample_shape(batch))     # model space: [B, 3, H, W] pixels or [B, C, h, w] latents

        # All noise first, member by member: the output then depends only on the seed, not on
        # chunking, and member 0 is the same whatever ensemble_size is.
        noise = torch.cat([randn_tensor(shape, generator=generator, device=device, dtype=dtype)
                           for _ in range(members)])                                      # [E*B, 3, H, W]

        # Text: the prompts and the empty prompt ("no text") in one tokenizer/encoder call, so
        # both come out padded to the same length and can share one UNet batch.
        states, mask = model.encode_prompts(list(prompts) + [""])
        states = states.to(dtype)
        text = {"full": (states[:batch], mask[:batch]),
                "empty": (states[batch:].expand(batch, -1, -1), mask[batch:].expand(batch, -1))}
        # Condition images in the model's [-1, 1], then in model space (identity for pixels, VAE
        # latents for a latent generator); "no image" is an all-zeros condition in model space
        # (that is also what the text -> image task is trained with).
        if cond is None:
            image_cond = torch.zeros(shape, device=device, dtype=dtype)
            blank = image_cond
        else:
            image_cond = model.to_model_space(to_model_range(cond).to(device=device, dtype=dtype)).to(dtype)
            blank = torch.zeros_like(image_cond)
        branch_inputs = {"full": (text["full"], image_cond), "img": (text["empty"], image_cond),
                         "uncond": (text["empty"], blank)}

        # Row r of the E*B rows is member r // B of image r % B.
        rows = members * batch
        per_row = len(branches)
        chunk = rows if max_batch is None else max(1, max_batch // per_row)
        out, unet_calls = [], 0
        for lo in range(0, rows, chunk):
            index = torch.arange(lo, min(rows, lo + chunk), device=device) % batch
            # Per-branch inputs for this chunk, concatenated branch after branch: one UNet call.
            conds = torch.cat([branch_inputs[b][1][index] for b in branches])
            tstates = torch.cat([branch_inputs[b][0][0][index] for b in branches])
            tmask = torch.cat([branch_inputs[b][0][1][index] for b in branches])
            run = fresh_copy(sampler)
            run.set_timesteps(steps, device=device)
            x = noise[lo:lo + chunk] * run.init_noise_sigma
            step_kwargs = {"generator": generator} if "generator" in inspect.signature(run.step).parameters else {}
            timesteps = run.timesteps
            if progress:
                from tqdm.auto import tqdm
                timesteps = tqdm(timesteps, desc=f"sampling rows {lo}-{lo + len(x) - 1}", leave=False)
            for t in timesteps:
                model_in = run.scale_model_input(x, t)           # identity for DDIM / DPM++, not Euler
                raw = model(model_in.repeat(per_row, 1, 1, 1), t, conds, tstates, tmask)
                unet_calls += 1
                parts = dict(zip(branches, raw.chunk(per_row)))
                guided = sum(weights[b] * parts[b] for b in branches) if per_row > 1 else parts[branches[0]]
                x = run.step(guided, t, x, **step_kwargs).prev_sample
            out.append(model.to_image_space(x))              # identity for pixels, VAE decode for latents
        images = torch.cat(out).clamp(-1.0, 1.0)     # samplers may overshoot; the image space is [-1, 1]
        return from_model_range(images), unet_calls

    def generate(self, prompts: str | Sequence[str], **kwargs) -> torch.Tensor:
        """Text -> image (the generator's original job, kept to check retention): ``[B, 3, H, W]``
        in [0, 1]. A prompt with a word outside the tokenizer's vocabulary, or longer than its
        ``max_tokens``, is a ValueError naming the problem (never silently cut or read as ``<unk>``).
        ``kwargs`` are :meth:`__call__`'s (``image_guidance`` does not apply)."""
        return self(None, prompts, **kwargs)

    def predict(self, images, task: str, palette: Mapping | None = None, depth_codec: str = "metric",
                query: str | Sequence[str] | None = None, **kwargs) -> dict:
        """Solve a vision ``task`` on ``images``: prompt -> sample ``E`` members -> decode -> ensemble.

        Args:
            images: as in :meth:`__call__` (required).
            task: one of :data:`banana.tasks.ALL_TASKS`.
            palette: ``{class name: (r, g, b)}`` named in the segmentation prompt and used to
                decode it; default :data:`banana.world.CANONICAL_PALETTE`. Ignored by other tasks.
            depth_codec: the depth codec the generator was trained with (``TrainConfig.depth_codec``;
                :data:`banana.tasks.DEPTH_CODECS`): ``"affine-gray"`` decodes to relative depth in [0, 1].
            query: the query tasks' class (``instance``) or expression (``referring``): one string
                for every image or one per image (each image then gets its own prompt).
            kwargs: sampling arguments of :meth:`__call__` (``ensemble_size``, ``generator``,
                ``num_inference_steps``, guidance, ``scheduler``, ...).

        Returns a dict of **torch tensors** (on the generator's device):
            ``prediction``: ensembled answer: labels ``[B, H, W]`` int64 (class ids of the palette
            order, 255 = rejected colour), metres ``[B, H, W]`` float32 (``inf`` = path end), or
            unit normals ``[B, 3, H, W]`` float32 (zero where undecidable);
            instance ids ``[B, H, W]`` int64 (0 = background) or the referred mask ``[B, H, W]`` bool;
            ``members``: each member's decoded answer ``[E, ...]``; ``rgb``: the members' pictures
            ``[E, B, 3, H, W]``; ``prompt``: the instruction used (a list, one per image, for the
            query tasks). :attr:`last_timing` then covers
            sampling, decoding and ensembling.
        """
        if task not in ALL_TASKS:
            raise ValueError(f"unknown task {task!r}; choose from {ALL_TASKS}")
        if images is None:
            raise ValueError("predict needs input images; use generate() for text -> image")
        if task in QUERY_TASKS:              # one prompt per image (raises on a missing query)
            prompts = query_prompts(task, query, int(images.shape[0]) if images.ndim == 4 else 1)
        elif query is not None:
            raise ValueError(f"the {task} task takes no query (only {QUERY_TASKS} do)")
        if kwargs.pop("return_members", True) is not True:
            raise ValueError("predict always returns the members (out['rgb']); do not pass return_members")
        start = time.perf_counter()
        if task == "segmentation":
            if palette is None:
                from banana.world import CANONICAL_PALETTE
                palette = CANONICAL_PALETTE
            palette = dict(palette)
        else:
            palette = None
        prompt = prompts if task in QUERY_TASKS else task_prompt(task, None, palette)
        rgb = self(images, prompt, return_members=True, **kwargs)            # [E, B, 3, H, W]
        decoded = decode_prediction(task, rgb, palette, depth=depth_codec)   # [E, B, ...]
        prediction = ensemble(task, decoded)
        elapsed = time.perf_counter() - start
        self.last_timing = elapsed / rgb.shape[1]
        self.last_stats.update(seconds=elapsed, seconds_per_image=self.last_timing, task=task)
        return {"prediction": prediction, "members": decoded, "rgb": rgb, "prompt": prompt}

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path) -> Path:
        """Save the generator's folders (``generator_config.json``, ``unet/``, ``text_encoder/``,
        ``tokenizer.json``), the sampler's ``scheduler/scheduler_config.json`` and
        ``pipeline_config.json`` (sampler name and :class:`SamplingDefaults`).

        The generator files sit at the top level, so the folder is also a valid
        ``BananaGenerator.from_pretrained`` folder, and any saved generator folder (e.g. a
        training checkpoint) loads as a pipeline with default settings.
        """
        directory = Path(directory)
        self.generator.save_pretrained(directory)
        self.scheduler.save_pretrained(directory / SCHEDULER_FOLDER)
        from banana import __version__
        (directory / PIPELINE_CONFIG_FILE).write_text(json.dumps(
            {"_class_name": type(self).__name__, "banana_version": __version__, "scheduler": self.scheduler_name,
             "defaults": self.defaults.to_dict()}, indent=1))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, scheduler: str | SchedulerMixin | None = None,
                        load_generator: Callable[[Path], BananaGenerator] | None = None,
                        **defaults) -> "BananaPipeline":
        """Load a pipeline saved by :meth:`save_pretrained` (or a bare generator folder).

        ``scheduler`` overrides the saved sampler, ``defaults`` override saved
        :class:`SamplingDefaults` fields. ``load_generator`` is the hook for generators that need
        more than loading a saved folder (e.g. attaching LoRA adapters): any callable
        ``folder -> BananaGenerator``; default :func:`banana.models.registry.load_generator` (a
        ``BananaGenerator`` or a ``LatentGenerator``, by the saved config's ``kind``).
        """
        directory = Path(directory)
        if load_generator is None:       # BananaGenerator or LatentGenerator, by the saved config's kind
            from banana.models.registry import load_generator
        model = load_generator(directory)
        saved_defaults: dict = {}
        config_path = directory / PIPELINE_CONFIG_FILE
        if config_path.is_file():
            saved_defaults = json.loads(config_path.read_text()).get("defaults", {})
        if scheduler is None and (directory / SCHEDULER_FOLDER / "scheduler_config.json").is_file():
            scheduler = load_scheduler(directory / SCHEDULER_FOLDER)
        return cls(model, scheduler="ddim" if scheduler is None else scheduler,
                   defaults=SamplingDefaults.from_dict({**saved_defaults, **defaults}))
