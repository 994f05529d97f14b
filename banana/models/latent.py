"""Latent-space generators: banana's recipe on a local Stable-Diffusion-family checkpoint.

:class:`LatentGenerator` wraps a diffusers SD-family directory (``unet/`` UNet2DConditionModel,
``vae/`` AutoencoderKL, ``text_encoder/`` CLIPTextModel, ``tokenizer/`` CLIPTokenizer,
``scheduler/``; the layout ``StableDiffusionPipeline.save_pretrained`` writes, SD 1.x / 2.x)
behind exactly the interface of :class:`banana.models.BananaGenerator`, so training (full or
LoRA, EMA, the mixing ratio), the pipeline (every sampler, dual guidance, ensembles), evaluation
and the codecs work unchanged. Nothing is downloaded: the checkpoint must be on disk.

What changes against the pixel generator
----------------------------------------
* **Model space is latent space.** Targets and condition images (in [-1, 1]) go through the
  VAE: ``latents = (mean of the posterior - shift_factor) * scaling_factor`` (the posterior mean,
  as Marigold does, so encoding is deterministic); :meth:`to_image_space` decodes. The consumers
  call :meth:`to_model_space` / :meth:`to_image_space` / :meth:`sample_shape` (identities and the
  pixel shape for :class:`BananaGenerator`), so the denoising loss, the sampling loop (its initial
  noise has the latent shape) and the retention loss all run in latent space.
* **"No image" is an all-zero latent** (InstructPix2Pix): a condition that is exactly zero
  everywhere in [-1, 1] (what banana's text -> image examples and condition dropout use; a
  uint8 image never maps to exactly 0) becomes zero latents instead of the latents of a grey image.
* **conv_in is widened** from ``C`` to ``2C`` input channels (noisy latents + condition latents,
  ``C`` = the VAE's latent channels, 4 for SD). ``conv_in_init="zeros"`` (InstructPix2Pix) keeps the
  pretrained weights on the noisy half and zeros on the condition half, so the widened UNet starts
  as exactly the base; ``"copy-half"`` (Marigold) puts ``w / 2`` on both halves, so an input equal
  to its condition gives the pretrained activation. A checkpoint whose UNet already has ``2C``
  inputs (e.g. an InstructPix2Pix UNet) is used as it is (``conv_in_init="pretrained"``).
* **Prompts go through the checkpoint's own CLIP** text encoder, padded to its 77 tokens with
  no attention mask, exactly as SD was trained. The text encoder is **frozen** by default, in
  full and in LoRA tuning (``train_text_encoder=False``): InstructPix2Pix and Marigold freeze it,
  it is ~123 M parameters for SD 1.5, and an adapter stays a few MB. Numbers in palette prompts
  are read by CLIP's BPE, not by banana's numeral tokens.
* **The noise schedule is the checkpoint's** (``scaled_linear``, beta 0.00085 -> 0.012 and
  ``epsilon`` for SD 1.5; ``v_prediction`` for SD 2.x 768); ``prediction_type`` may be overridden
  (Marigold fine-tunes SD 2 with v-prediction), and samplers use trailing timesteps as everywhere.
* **What trains.** Full tuning: the UNet (VAE and text encoder frozen). LoRA: LoRA on the
  attention projections + the widened ``conv_in`` (:func:`banana.adapters.add_lora`).
* **Adapters export in the diffusers LoRA format**: ``pytorch_lora_weights.safetensors`` (written by
  ``StableDiffusionPipeline.save_lora_weights``, ``unet.``-prefixed keys, the LoRA config in its
  metadata: ``pipe.load_lora_weights(dir)`` reads it), ``conv_in.safetensors`` (the widened input
  conv, which no diffusers LoRA loader handles) and banana's ``adapter_config.json``.

Usage::

    from banana.models.latent import LatentGenerator
    gen = LatentGenerator.from_checkpoint("/models/stable-diffusion-v1-5", resolution=512)
    train(TrainConfig(tuning="lora", ...), "runs/sd-lora", generator=gen, world_dir="data/world/sd512")
    # or simply: train(config, run_dir, generator="/models/stable-diffusion-v1-5", world_dir=...)
    # (an SD directory is detected by model_index.json / vae/; its resolution is the world's)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from banana.config import SerializableConfig
from banana.models.checkpoint import check_sd_checkpoint, load_vae, widen_conv_in
from banana.models.io import GENERATOR_CONFIG, load_component, read_json, read_model_config, save_model_folder

__all__ = ["LatentGeneratorConfig", "LatentGenerator", "CONV_IN_INITS", "LORA_WEIGHTS", "CONV_IN_WEIGHTS",
           "check_sd_checkpoint", "widen_conv_in", "load_vae"]

CONV_IN_INITS = ("zeros", "copy-half", "pretrained")
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"   # diffusers' LORA_WEIGHT_NAME_SAFE
CONV_IN_WEIGHTS = "conv_in.safetensors"
_ADAPTER_FORMAT_VERSION = 2


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class LatentGeneratorConfig(SerializableConfig):
    """What fixes a latent generator's behaviour (saved as ``generator_config.json``).

    ``resolution`` is the **pixel** side (what worlds, the pipeline and the codecs see); latents
    are ``resolution / vae_scale_factor`` on a side. The architecture itself lives in the
    components' own diffusers configs; the source checkpoint's path is deliberately not part of
    the config (moving a checkpoint must not invalidate adapters trained on it).
    """

    kind: str = "latent"                     # tells saved configs apart from GeneratorConfig
    resolution: int = 512                    # image side in pixels
    latent_channels: int = 4
    vae_scale_factor: int = 8                # pixels per latent, per side
    scaling_factor: float = 0.18215          # vae.config.scaling_factor
    shift_factor: float = 0.0                # vae.config.shift_factor (None in SD -> 0)
    conv_in_init: str = "zeros"              # "zeros" (InstructPix2Pix) | "copy-half" (Marigold) | "pretrained"
    text_max_length: int = 77                # CLIP's context: prompts are padded / truncated to it
    train_text_encoder: bool = False         # CLIP frozen in full and LoRA tuning
    prediction_type: str = "epsilon"         # "epsilon" | "v_prediction" | "sample"
    num_train_timesteps: int = 1000
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    timestep_spacing: str = "trailing"

    def __post_init__(self):
        if self.kind != "latent":
            raise ValueError(f"LatentGeneratorConfig.kind must be 'latent', got {self.kind!r}")
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"prediction_type must be epsilon, v_prediction or sample, got {self.prediction_type!r}")
        if self.timestep_spacing not in ("leading", "trailing", "linspace"):
            raise ValueError(f"timestep_spacing must be leading, trailing or linspace, got {self.timestep_spacing!r}")
        if self.conv_in_init not in CONV_IN_INITS:
            raise ValueError(f"conv_in_init must be one of {CONV_IN_INITS}, got {self.conv_in_init!r}")
        if self.resolution < 1 or self.resolution % self.vae_scale_factor:
            raise ValueError(f"resolution {self.resolution} must be a positive multiple of the VAE's "
                             f"scale factor {self.vae_scale_factor}")

    @property
    def latent_size(self) -> int:
        return self.resolution // self.vae_scale_factor


# --------------------------------------------------------------------------- the generator
class LatentGenerator(nn.Module):
    """UNet (widened conv_in) + VAE + CLIP text encoder + tokenizer, with the config that fixes
    their use. Same interface as :class:`banana.models.BananaGenerator`."""

    def __init__(self, config: LatentGeneratorConfig, unet, vae, text_encoder, tokenizer):
        super().__init__()
        c = config.latent_channels
        if unet.config.in_channels != 2 * c or unet.config.out_channels != c:
            raise ValueError(f"the UNet must read {2 * c} channels (noisy + condition latents) and write {c}; it has "
                             f"in_channels={unet.config.in_channels}, out_channels={unet.config.out_channels}")
        if vae.config.latent_channels != c:
            raise ValueError(f"the VAE has {vae.config.latent_channels} latent channels, the config says {c}")
        if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
            raise ValueError(f"the UNet's cross_attention_dim {unet.config.cross_attention_dim} != the text "
                             f"encoder's hidden size {text_encoder.config.hidden_size}")
        down = 2 ** (len(unet.config.block_out_channels) - 1)
        if config.latent_size % down:
            raise ValueError(f"resolution {config.resolution} gives {config.latent_size}px latents, not divisible by "
                             f"the UNet's downsampling factor {down}: use a multiple of {down * config.vae_scale_factor}")
        self.config = config
        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        self.source: str | None = None          # the checkpoint it was built from (recorded as base_model)
        self.requires_grad_(True)               # applies the frozen-component rule below

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_checkpoint(cls, directory: str | Path, resolution: int | None = None, conv_in_init: str = "zeros",
                        prediction_type: str | None = None, train_text_encoder: bool = False,
                        torch_dtype: torch.dtype | None = None) -> "LatentGenerator":
        """Build from a local SD-family diffusers directory (nothing is downloaded).

        Args:
            directory: holds ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``.
            resolution: pixel side (default: the UNet's ``sample_size`` x the VAE's scale factor,
                512 for SD 1.5); must be a multiple of the VAE factor x the UNet's downsampling.
            conv_in_init: ``"zeros"`` | ``"copy-half"`` (ignored, and recorded as ``"pretrained"``, when
                the UNet already reads ``2C`` channels).
            prediction_type: default the checkpoint scheduler's.
            train_text_encoder: unfreeze CLIP (default frozen).
            torch_dtype: passed to every ``from_pretrained`` (default float32).
        """
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        directory = check_sd_checkpoint(directory)
        scheduler = read_json(directory / "scheduler" / "scheduler_config.json")
        if scheduler.get("trained_betas") is not None:
            raise ValueError(f"{directory}/scheduler uses trained_betas, which banana's schedules do not support")
        kwargs = {} if torch_dtype is None else {"torch_dtype": torch_dtype}
        try:
            unet = UNet2DConditionModel.from_pretrained(directory / "unet", **kwargs)
            vae = AutoencoderKL.from_pretrained(directory / "vae", **kwargs)
            text_encoder = CLIPTextModel.from_pretrained(directory / "text_encoder", **kwargs)
            tokenizer = CLIPTokenizer.from_pretrained(directory / "tokenizer")
        except (OSError, EnvironmentError) as error:
            raise FileNotFoundError(f"could not load the components of {directory}: {error}") from error
        if getattr(unet.config, "addition_embed_type", None) is not None:
            raise ValueError(f"{directory}/unet needs added conditions ({unet.config.addition_embed_type}, SDXL-style); "
                             "not supported")
        c = int(vae.config.latent_channels)
        if unet.config.in_channels == c:
            if conv_in_init not in ("zeros", "copy-half"):
                raise ValueError(f"conv_in_init must be 'zeros' or 'copy-half' for a {c}-channel UNet, got {conv_in_init!r}")
            widen_conv_in(unet, c, conv_in_init)
        elif unet.config.in_channels == 2 * c:
            conv_in_init = "pretrained"
        else:
            raise ValueError(f"{directory}/unet reads {unet.config.in_channels} channels; expected {c} (to widen) or {2 * c}")
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        config = LatentGeneratorConfig(
            resolution=int(resolution) if resolution is not None else int(unet.config.sample_size) * factor,
            latent_channels=c, vae_scale_factor=factor, scaling_factor=float(vae.config.scaling_factor),
            shift_factor=float(getattr(vae.config, "shift_factor", None) or 0.0), conv_in_init=conv_in_init,
            text_max_length=int(min(tokenizer.model_max_length, text_encoder.config.max_position_embeddings)),
            train_text_encoder=bool(train_text_encoder),
            prediction_type=prediction_type or scheduler.get("prediction_type", "epsilon"),
            num_train_timesteps=int(scheduler.get("num_train_timesteps", 1000)),
            beta_schedule=scheduler.get("beta_schedule", "scaled_linear"),
            beta_start=float(scheduler.get("beta_start", 0.00085)), beta_end=float(scheduler.get("beta_end", 0.012)))
        generator = cls(config, unet, vae, text_encoder, tokenizer)
        generator.source = str(directory.resolve())
        return generator

    @classmethod
    def for_config(cls, directory: str | Path, config: LatentGeneratorConfig | Mapping) -> "LatentGenerator":
        """Rebuild the base a saved config was made from (e.g. the base of a LoRA adapter):
        ``from_checkpoint`` with the config's resolution, conv_in init, prediction type and text
        encoder rule; raises if the rebuilt config still differs (another checkpoint)."""
        if isinstance(config, Mapping):
            config = LatentGeneratorConfig.from_dict(config)
        generator = cls.from_checkpoint(directory, resolution=config.resolution,
                                        conv_in_init="zeros" if config.conv_in_init == "pretrained" else config.conv_in_init,
                                        prediction_type=config.prediction_type,
                                        train_text_encoder=config.train_text_encoder)
        if generator.config != config:
            diffs = [k for k, v in config.to_dict().items() if generator.config.to_dict()[k] != v]
            raise ValueError(f"the checkpoint {directory} does not give the saved generator config (fields differ: {diffs})")
        return generator

    # ------------------------------------------------------------------ module behaviour
    def requires_grad_(self, requires_grad: bool = True) -> "LatentGenerator":
        """As ``nn.Module.requires_grad_``, but the VAE always stays frozen, and the text encoder
        unless ``config.train_text_encoder``. (Full tuning calls ``requires_grad_(True)``.)"""
        super().requires_grad_(requires_grad)
        self.vae.requires_grad_(False)
        if not self.config.train_text_encoder:
            self.text_encoder.requires_grad_(False)
        return self

    @property
    def lora_trains_text_encoder(self) -> bool:
        """Read by :func:`banana.adapters.add_lora`."""
        return bool(self.config.train_text_encoder)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> dict[str, int]:
        return {name: sum(p.numel() for p in getattr(self, name).parameters())
                for name in ("unet", "text_encoder", "vae")}

    # ------------------------------------------------------------------ the interface
    def encode_prompts(self, prompts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (CLIP last hidden states [B, 77, D], mask [B, 77]). As in SD, every prompt is
        padded to the full context and the UNet attends to all positions: the mask is all True."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.config.text_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.device)
        states = self.text_encoder(ids)[0]
        return states, torch.ones(ids.shape, dtype=torch.bool, device=ids.device)

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, condition: torch.Tensor,
                text_states: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Model output for noisy latents ``[B, C, h, w]`` given condition latents of the same shape."""
        c = self.config.latent_channels
        if noisy.shape != condition.shape or noisy.ndim != 4 or noisy.shape[1] != c:
            raise ValueError(f"noisy and condition latents must both be [B, {c}, h, w], got "
                             f"{tuple(noisy.shape)} and {tuple(condition.shape)}")
        mask = None if text_mask is None or bool(text_mask.all()) else text_mask
        return self.unet(torch.cat([noisy, condition], dim=1), timesteps, encoder_hidden_states=text_states,
                         encoder_attention_mask=mask).sample

    def sample_shape(self, batch_size: int) -> tuple[int, int, int, int]:
        """Shape of ``batch_size`` model-space samples (the sampler's initial noise)."""
        s = self.config.latent_size
        return (int(batch_size), self.config.latent_channels, s, s)

    @torch.no_grad()
    def to_model_space(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in [-1, 1] -> scaled VAE latents (posterior mean). Rows that are
        exactly zero everywhere ("no image") become zero latents without touching the VAE."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W] in [-1, 1], got {tuple(images.shape)}")
        s = self.config.latent_size
        latents = torch.zeros((images.shape[0], self.config.latent_channels, s, s), device=images.device,
                              dtype=images.dtype)
        present = images.flatten(1).ne(0).any(1)
        if bool(present.any()):
            vae_dtype = next(self.vae.parameters()).dtype
            encoded = self.vae.encode(images[present].to(vae_dtype)).latent_dist.mean
            latents[present] = ((encoded - self.config.shift_factor) * self.config.scaling_factor).to(images.dtype)
        return latents

    @torch.no_grad()
    def to_image_space(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images ``[B, 3, H, W]`` in about [-1, 1] (not clamped)."""
        vae_dtype = next(self.vae.parameters()).dtype
        z = latents.to(vae_dtype) / self.config.scaling_factor + self.config.shift_factor
        return self.vae.decode(z).sample.to(latents.dtype)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path) -> Path:
        """``generator_config.json`` + ``unet/`` (widened) + ``vae/`` + ``text_encoder/`` +
        ``tokenizer/``, all safetensors: self-contained (the source checkpoint is not needed).

        A generator carrying LoRA is saved unmerged, so it reloads exactly: ``unet/`` holds the
        base weights and ``adapter/`` the adapter (:meth:`save_adapter`), which
        :meth:`from_pretrained` puts back."""
        from banana.adapters import has_lora

        components = {"vae": self.vae, "text_encoder": self.text_encoder, "tokenizer": self.tokenizer}
        if has_lora(self):       # the base weights, in the file diffusers' from_pretrained reads
            base = {k.replace(".base_layer", ""): v for k, v in self.unet.state_dict().items() if ".lora_" not in k}
            directory = save_model_folder(directory, GENERATOR_CONFIG, self.config.to_dict(), components,
                                          {"unet/diffusion_pytorch_model.safetensors": base},
                                          tensor_metadata={"format": "pt"})
            self.unet.save_config(directory / "unet")
            self.save_adapter(directory / "adapter")
        else:
            directory = save_model_folder(directory, GENERATOR_CONFIG, self.config.to_dict(),
                                          {"unet": self.unet, **components})
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "LatentGenerator":
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        directory = Path(directory)
        data = read_model_config(directory, GENERATOR_CONFIG, "LatentGenerator")
        if data.get("kind") != "latent":
            raise ValueError(f"{directory} holds a pixel BananaGenerator, not a LatentGenerator")
        config = LatentGeneratorConfig.from_dict(data)
        unet = load_component(UNet2DConditionModel, directory, "unet")
        vae = load_component(AutoencoderKL, directory, "vae")
        text_encoder = load_component(CLIPTextModel, directory, "text_encoder")
        tokenizer = load_component(CLIPTokenizer, directory, "tokenizer")
        generator = cls(config, unet, vae, text_encoder, tokenizer)
        if (directory / "adapter").is_dir():              # saved with LoRA (see save_pretrained)
            generator.load_adapter(directory / "adapter")
        return generator.eval()

    # ------------------------------------------------------------------ LoRA adapters (diffusers format)
    def save_adapter(self, directory: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
        """Write the LoRA adapter in the diffusers format (called by :func:`banana.adapters.save_adapter`).

        Files: ``pytorch_lora_weights.safetensors`` (``StableDiffusionPipeline.save_lora_weights`` of
        ``convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))``, with the LoraConfig as
        metadata), ``conv_in.safetensors`` (``unet.conv_in.weight`` / ``.bias``, widened), optionally
        ``text_encoder.safetensors`` (only if the text encoder trains) and ``adapter_config.json``.
        """
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        from banana.adapters import ADAPTER_CONFIG, ADAPTER_NAME, ADAPTER_FORMAT, base_fingerprint, codec_settings, has_lora
        from banana.provenance import jsonable

        if not has_lora(self):
            raise ValueError("the generator has no LoRA adapter: call banana.adapters.add_lora first")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        peft_config = self.unet.peft_config[ADAPTER_NAME]
        lora_state = get_peft_model_state_dict(self.unet, adapter_name=ADAPTER_NAME)
        lora_state = {k: v.detach().to("cpu").contiguous().clone()
                      for k, v in convert_state_dict_to_diffusers(lora_state).items()}
        StableDiffusionPipeline.save_lora_weights(directory, unet_lora_layers=lora_state, weight_name=LORA_WEIGHTS,
                                                  safe_serialization=True,
                                                  unet_lora_adapter_metadata=peft_config.to_dict())
        conv = {f"unet.conv_in.{k}": v.detach().to("cpu").contiguous().clone()
                for k, v in self.unet.conv_in.state_dict().items()}
        save_file(conv, str(directory / CONV_IN_WEIGHTS), metadata={"format": ADAPTER_FORMAT})
        files = {"lora": LORA_WEIGHTS, "conv_in": CONV_IN_WEIGHTS}
        if self.config.train_text_encoder:
            text = {k: v.detach().to("cpu").contiguous().clone() for k, v in self.text_encoder.state_dict().items()}
            save_file(text, str(directory / "text_encoder.safetensors"), metadata={"format": ADAPTER_FORMAT})
            files["text_encoder"] = "text_encoder.safetensors"
        metadata = dict(metadata or {})
        metadata.setdefault("codecs", codec_settings())
        metadata.setdefault("base_model", self.source)
        record = {
            "format": ADAPTER_FORMAT, "format_version": _ADAPTER_FORMAT_VERSION, "weights_format": "diffusers-lora",
            "files": files,
            "rank": int(peft_config.r), "alpha": int(peft_config.lora_alpha),
            "targets": sorted(peft_config.target_modules), "init": peft_config.init_lora_weights,
            "trains": ["lora", "unet.conv_in"] + (["text_encoder"] if self.config.train_text_encoder else []),
            "base_fingerprint": base_fingerprint(self),
            "generator_config": self.config.to_dict(),
            "num_tensors": {"lora": len(lora_state), "conv_in": len(conv)},
            "metadata": jsonable(metadata),
            "diffusers_usage": ("pipe.load_lora_weights(dir) loads the LoRA into an SD pipeline; the widened conv_in "
                                "(conv_in.safetensors) must be put into a UNet whose conv_in reads 2x the latent "
                                "channels"),
        }
        (directory / ADAPTER_CONFIG).write_text(json.dumps(record, indent=1) + "\n")
        return directory

    def load_adapter(self, directory: str | Path, check_base: bool = True) -> "LatentGenerator":
        """Add a saved adapter (diffusers format) to this base generator, in place; eval mode.
        Reproduces the saved generator's outputs exactly (called by :func:`banana.adapters.load_adapter`)."""
        from diffusers import StableDiffusionPipeline
        from safetensors.torch import load_file

        from banana.adapters import ADAPTER_NAME, base_fingerprint, has_lora, read_adapter_config

        directory = Path(directory)
        record = read_adapter_config(directory)
        if record.get("weights_format") != "diffusers-lora":
            raise ValueError(f"{directory} holds a pixel-generator adapter, not a latent generator's")
        saved_config = LatentGeneratorConfig.from_dict(record["generator_config"])
        if saved_config != self.config:
            diffs = [k for k, v in saved_config.to_dict().items() if self.config.to_dict().get(k) != v]
            raise ValueError(f"the adapter in {directory} was trained on a generator with a different config "
                             f"(fields differ: {diffs})")
        if has_lora(self):
            raise ValueError("the generator already has a LoRA adapter")
        if check_base:
            fingerprint = base_fingerprint(self)
            if fingerprint != record["base_fingerprint"]:
                raise ValueError(f"the base UNet's weights are not the ones the adapter in {directory} was trained on "
                                 f"(fingerprint {fingerprint[:12]} != {record['base_fingerprint'][:12]}); base model "
                                 f"recorded: {record['metadata'].get('base_model')!r}. Pass check_base=False to load anyway.")
        files = record["files"]
        state, network_alphas, lora_metadata = StableDiffusionPipeline.lora_state_dict(
            str(directory), weight_name=files["lora"], return_lora_metadata=True)
        self.unet.load_lora_adapter(state, prefix="unet", network_alphas=None if lora_metadata else network_alphas,
                                    adapter_name=ADAPTER_NAME, metadata=lora_metadata)
        conv = load_file(str(directory / files["conv_in"]))
        self.unet.conv_in.load_state_dict({k.removeprefix("unet.conv_in."): v for k, v in conv.items()}, strict=True)
        if "text_encoder" in files:
            self.text_encoder.load_state_dict(load_file(str(directory / files["text_encoder"])), strict=True)
        # the same trainable set as add_lora: LoRA matrices + conv_in (+ text encoder if configured)
        for name, p in self.unet.named_parameters():
            p.requires_grad_(".lora_" in name or name.startswith("conv_in."))
        self.text_encoder.requires_grad_(self.config.train_text_encoder)
        return self.eval()
