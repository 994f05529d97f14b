"""The pixel-space generator: :class:`BananaGenerator` is InstructPix2Pix-shaped: the UNet's input
is the noisy target (3 channels) concatenated with a conditioning image (3 channels; zeros when
generating from text alone), the instruction enters through cross-attention. :func:`build_unet`
and :func:`build_noise_scheduler` build its UNet and training schedule from a
:class:`~banana.models.config.GeneratorConfig`.

Images live in [-1, 1] inside the model (``2 * rgb - 1``), in [0, 1] outside it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from banana.models.config import GENERATOR_PRESETS, GeneratorConfig
from banana.models.io import GENERATOR_CONFIG, load_component, read_model_config, save_model_folder
from banana.models.text import InstructionEncoder, InstructionTokenizer, config_for_classes


def build_unet(config: GeneratorConfig) -> UNet2DConditionModel:
    """The diffusers UNet for ``config``: 6 input channels (noisy target + condition), 3 out."""
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in config.cross_attention_levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(config.cross_attention_levels))
    return UNet2DConditionModel(
        sample_size=config.resolution, in_channels=6, out_channels=3,
        block_out_channels=config.block_out_channels, layers_per_block=config.layers_per_block,
        down_block_types=down, up_block_types=up, mid_block_type="UNetMidBlock2DCrossAttn",
        cross_attention_dim=config.text_dim, attention_head_dim=config.attention_head_dim,
        norm_num_groups=config.norm_num_groups,
    )


def build_noise_scheduler(config: GeneratorConfig):
    """The training noise schedule (DDPM); samplers are built from its config (:mod:`banana.pipeline`)."""
    from diffusers import DDPMScheduler

    # beta_start / beta_end: only configs that carry them (a latent generator's SD schedule);
    # GeneratorConfig has none, so the pixel schedule keeps diffusers' defaults.
    betas = {k: getattr(config, k) for k in ("beta_start", "beta_end") if hasattr(config, k)}
    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule,
                         prediction_type=config.prediction_type, timestep_spacing=config.timestep_spacing,
                         clip_sample=False, **betas)


# --------------------------------------------------------------------------- the generator
class BananaGenerator(nn.Module):
    """UNet + instruction encoder + tokenizer, with the config that built them."""

    def __init__(self, config: GeneratorConfig, unet: UNet2DConditionModel | None = None,
                 text_encoder: InstructionEncoder | None = None):
        super().__init__()
        self.config = config
        self.tokenizer = InstructionTokenizer(config.vocabulary, config.max_tokens)
        self.unet = unet if unet is not None else build_unet(config)
        self.text_encoder = text_encoder if text_encoder is not None else InstructionEncoder(
            vocab_size=self.tokenizer.vocab_size, dim=config.text_dim, layers=config.text_layers,
            heads=config.text_heads, max_tokens=config.max_tokens)

    @classmethod
    def from_preset(cls, name: str, seed: int | None = None, class_names: Sequence[str] | None = None,
                    texts: Sequence[str] = (), **overrides) -> "BananaGenerator":
        """A freshly initialised generator from a preset; ``seed`` fixes the initial weights.
        ``class_names`` (and ``texts``, e.g. captions): size the vocabulary and ``max_tokens`` for
        a dataset's prompts (:func:`config_for_classes`; the world's classes change nothing)."""
        if name not in GENERATOR_PRESETS:
            raise ValueError(f"unknown generator preset {name!r}; choose from {sorted(GENERATOR_PRESETS)}")
        config = dataclasses.replace(GENERATOR_PRESETS[name], **overrides)
        if class_names is not None or texts:
            config = config_for_classes(config, list(class_names or ()), texts)
        if seed is not None:
            torch.manual_seed(seed)
        return cls(config)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode_prompts(self, prompts: str | Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompts -> (hidden states [B, L, D], attention mask [B, L])."""
        tokens = {k: v.to(self.device) for k, v in self.tokenizer(prompts).items()}
        return self.text_encoder(**tokens), tokens["attention_mask"]

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, condition: torch.Tensor,
                text_states: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """The model output (noise, v or x0 per ``config.prediction_type``) for noisy targets
        ``[B, 3, H, W]`` in [-1, 1] given condition images ``[B, 3, H, W]`` in [-1, 1]."""
        if noisy.shape != condition.shape or noisy.shape[1] != 3:
            raise ValueError(f"noisy target and condition must both be [B, 3, H, W], got "
                             f"{tuple(noisy.shape)} and {tuple(condition.shape)}")
        return self.unet(torch.cat([noisy, condition], dim=1), timesteps, encoder_hidden_states=text_states,
                         encoder_attention_mask=text_mask).sample

    # -- model space: pixels here. A latent generator (banana.models.latent) maps images through its VAE;
    # the loss, the sampling loop and retention call these three, never assume pixels.
    def sample_shape(self, batch_size: int) -> tuple[int, int, int, int]:
        """Shape of ``batch_size`` model-space samples (the sampler's initial noise)."""
        return (int(batch_size), 3, self.config.resolution, self.config.resolution)

    def to_model_space(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> model space: the identity for a pixel-space generator."""
        return images

    def to_image_space(self, samples: torch.Tensor) -> torch.Tensor:
        """Model-space samples -> images in [-1, 1]: the identity for a pixel-space generator."""
        return samples

    def num_parameters(self) -> dict[str, int]:
        return {"unet": sum(p.numel() for p in self.unet.parameters()),
                "text_encoder": sum(p.numel() for p in self.text_encoder.parameters())}

    # -- persistence: diffusers' folder layout, one subfolder per component
    def save_pretrained(self, directory: str | Path) -> Path:
        """``generator_config.json``, ``unet/``, ``text_encoder/`` (safetensors) and ``tokenizer.json``.

        A UNet carrying LoRA adapters is saved **merged** (a fused copy; this generator keeps its
        adapters): peft renames the adapted layers' weights, which ``from_pretrained`` would not
        find and silently re-initialise. To keep the adapter separate, use
        :func:`banana.adapters.save_adapter`.
        """
        import copy

        unet = self.unet
        if getattr(unet, "_hf_peft_config_loaded", False):
            unet = copy.deepcopy(unet)
            unet.fuse_lora()
            unet.unload_lora()
        directory = save_model_folder(directory, GENERATOR_CONFIG, self.config.to_dict(),
                                      {"unet": unet, "text_encoder": self.text_encoder})
        self.tokenizer.save(directory)
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "BananaGenerator":
        config = GeneratorConfig.from_dict(read_model_config(directory, GENERATOR_CONFIG, "BananaGenerator"))
        unet = load_component(UNet2DConditionModel, directory, "unet")
        text_encoder = load_component(InstructionEncoder, directory, "text_encoder")
        return cls(config, unet=unet, text_encoder=text_encoder).eval()
