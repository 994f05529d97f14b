"""The generators: a pixel-space diffusion UNet that reads instructions, a latent one on a local
Stable-Diffusion-family checkpoint, their configs and presets, and the task specialist's model.

Read in this order:

* :mod:`banana.models.text`: :class:`InstructionTokenizer` (every numeral one ``<num>`` token
  carrying its value; a prompt that does not fit is a ``ValueError``), the vocabulary functions
  (:func:`default_vocabulary`, :func:`config_for_classes`, ...) and :class:`InstructionEncoder`;
* :mod:`banana.models.config`: :class:`GeneratorConfig` and :data:`GENERATOR_PRESETS`
  (``smoke`` / ``cpu`` / ``gpu``); the config travels inside every saved model;
* :mod:`banana.models.pixel`: :class:`BananaGenerator` (InstructPix2Pix-shaped: noisy target +
  condition image in, the instruction through cross-attention), :func:`build_unet`,
  :func:`build_noise_scheduler`;
* :mod:`banana.models.latent`: :class:`LatentGenerator` (the same interface on an SD-family
  checkpoint: VAE latents, widened ``conv_in``, CLIP, diffusers-format LoRA), :func:`load_vae`;
* :mod:`banana.models.registry`: which generator a folder holds and :func:`load_generator`;
* :mod:`banana.models.specialist`: :class:`Specialist`, the task specialist baseline's model (the
  generator's UNet with an image-only input and a task head; trained by :mod:`banana.baselines`);
* :mod:`banana.models.images`: the one conversion between RGB images and the models' [-1, 1]
  (:func:`to_model_range`, :func:`from_model_range`) and the input check :func:`prepare_images`;
* :mod:`banana.models.io`: the one save/load convention of every model (diffusers' folder layout,
  safetensors).

Images live in [-1, 1] inside the model (``2 * rgb - 1``), in [0, 1] outside it. Every name
below is importable from ``banana.models``.
"""

from banana.models.images import from_model_range, prepare_images, to_model_range, to_unit_range
from banana.models.config import GENERATOR_PRESETS, GeneratorConfig
from banana.models.latent import (CONV_IN_INITS, CONV_IN_WEIGHTS, LORA_WEIGHTS, LatentGenerator,
                                  LatentGeneratorConfig, check_sd_checkpoint, load_vae, widen_conv_in)
from banana.models.pixel import BananaGenerator, build_noise_scheduler, build_unet
from banana.models.registry import (GENERATOR_CONFIG, generator_config_from_dict, is_saved_generator,
                                    is_sd_checkpoint, load_generator)
from banana.models.specialist import IGNORE_INDEX, NULL_TOKENS, Specialist, head_channels, specialist_loss
from banana.models.text import (BOS, NUM, PAD, PROMPT_WORDS, SPECIAL_TOKENS, UNK, InstructionEncoder,
                                InstructionTokenizer, config_for_classes, default_vocabulary,
                                palette_prompt_tokens, prompt_words, vocabulary_for)

__all__ = [
    "PAD", "UNK", "NUM", "BOS", "SPECIAL_TOKENS", "PROMPT_WORDS", "prompt_words", "default_vocabulary",
    "vocabulary_for", "palette_prompt_tokens", "config_for_classes", "InstructionTokenizer",
    "InstructionEncoder", "GeneratorConfig", "GENERATOR_PRESETS", "build_unet", "build_noise_scheduler",
    "BananaGenerator",
    "LatentGeneratorConfig", "LatentGenerator", "CONV_IN_INITS", "LORA_WEIGHTS", "CONV_IN_WEIGHTS",
    "check_sd_checkpoint", "widen_conv_in", "load_vae",
    "GENERATOR_CONFIG", "generator_config_from_dict", "is_saved_generator", "is_sd_checkpoint", "load_generator",
    "Specialist", "specialist_loss", "head_channels", "NULL_TOKENS", "IGNORE_INDEX",
    "to_unit_range", "to_model_range", "from_model_range", "prepare_images",
]
