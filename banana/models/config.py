"""What fixes a pixel generator: :class:`GeneratorConfig` (architecture and diffusion process,
saved as ``generator_config.json`` inside every model) and :data:`GENERATOR_PRESETS`
(``smoke`` / ``cpu`` / ``gpu``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from banana.config import SerializableConfig
from banana.models.text import default_vocabulary

@dataclass(frozen=True)
class GeneratorConfig(SerializableConfig):
    """Everything that fixes the generator's architecture and its diffusion process."""

    resolution: int = 32                                   # image side in pixels
    block_out_channels: tuple[int, ...] = (32, 64, 64)    # UNet width per level
    layers_per_block: int = 1
    cross_attention_levels: tuple[bool, ...] = (False, True, True)  # attention only where it is cheap
    attention_head_dim: int = 8
    norm_num_groups: int = 8
    text_dim: int = 64                                     # = the UNet's cross-attention width
    text_layers: int = 2
    text_heads: int = 4
    max_tokens: int = 64
    prediction_type: str = "sample"                        # "epsilon" | "v_prediction" | "sample" (x0)
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    timestep_spacing: str = "trailing"                     # trailing: few-step sampling works
    vocabulary: tuple[str, ...] = field(default_factory=lambda: tuple(default_vocabulary()))

    def __post_init__(self):
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"prediction_type must be epsilon, v_prediction or sample, got {self.prediction_type!r}")
        if self.timestep_spacing not in ("leading", "trailing", "linspace"):
            raise ValueError(f"timestep_spacing must be leading, trailing or linspace, got {self.timestep_spacing!r}")
        if len(self.cross_attention_levels) != len(self.block_out_channels):
            raise ValueError("cross_attention_levels needs one entry per level of block_out_channels")
        if self.resolution % 2 ** (len(self.block_out_channels) - 1):
            raise ValueError(f"resolution {self.resolution} is not divisible by the UNet's downsampling "
                             f"factor {2 ** (len(self.block_out_channels) - 1)}")



#: Presets, sized from measurements on a 2-core CPU (PROBES.md): the 1.7 M-parameter ``cpu``
#: UNet trains at ~45 img/s at 32x32; ``smoke`` is for tests; ``gpu`` for one H100-class card.
GENERATOR_PRESETS: dict[str, GeneratorConfig] = {
    "smoke": GeneratorConfig(resolution=16, block_out_channels=(16, 32), cross_attention_levels=(False, True),
                             text_dim=32, text_layers=1, text_heads=2, attention_head_dim=8),
    "cpu": GeneratorConfig(),
    "gpu": GeneratorConfig(resolution=64, block_out_channels=(64, 128, 256, 256), layers_per_block=2,
                           cross_attention_levels=(False, True, True, True), attention_head_dim=32,
                           norm_num_groups=32, text_dim=256, text_layers=4, text_heads=8),
}
