"""The two baselines a generalist must beat: task specialists, and the generalist without pretraining.

Why these two
-------------
Vision Banana's claim has two halves, and each needs its own control:

1. **"A generalist beats specialists."** In the paper the specialists are SAM 3, Depth Anything 3
   and Lotus-2. Here a :class:`Specialist` plays that role: one model per task, the *same UNet
   architecture and size* as the generator's, but with what a specialist is allowed to have and
   the generalist is not: an input of the image only, a task head (its own output channels) and
   a task loss (cross-entropy, log-depth L1, angular). It is trained on **exactly the vision
   examples the generalist saw** (same images, in the same order, same count; see
   :func:`replay_vision_stream`), so any gap is due to the recipe, not to data.
2. **"Generative pretraining is what makes it work."** The no-pretraining control
   (:func:`control_config`, :func:`train_control`) runs the *same* generalist recipe, through the
   very same :func:`banana.training.train`, from randomly initialised weights instead of the
   pretrained base. Everything else (TrainConfig, data stream, noise, steps, learning rate) is
   identical, and by default (``tuning=None``) so is **the set of parameters that trains**
   (:func:`trainable_parameter_names` of the two modules are equal):

   * a **fully tuned** generalist's control fully tunes the random init (every UNet and
     instruction-encoder weight), so the gap between the two is the effect of generative
     pretraining alone.
   * a **LoRA** generalist's default control is LoRA on the random init: the same trainable set
     (the LoRA matrices, ``unet.conv_in``, the instruction encoder), but everything else in its
     UNet is *frozen random* features. Its gap to the generalist therefore confounds "pretraining
     helps" with "how much of the model can train at all". So a LoRA generalist also gets the
     **fully tuned control** (``tuning="full"``): every weight of the same random init trains, with
     the same recipe. Beating both means pretraining helps even against a model free to adapt all
     of its weights; beating only the LoRA one means the first gap was about trainable capacity.
     (The full control keeps the LoRA recipe's learning rate, since only the trainable set may
     change; a fully tuned model may prefer another one, which errs against the control.)

With the pretrained-init specialist (:attr:`SpecialistConfig.init_from`) the baselines make a
2 x 2: {generative pretraining, random init} x {the answer drawn as RGB and decoded (generalist),
a task head with a task loss (specialist)}. The init axis says what pretraining buys each recipe,
the recipe axis what drawing the answer buys each init, so "the generalist beats the specialist"
cannot just mean "the generalist had pretrained weights and the specialist had not".

Design choices of the specialist (stated because they shape its numbers)
------------------------------------------------------------------------
* **Backbone**: ``UNet2DConditionModel.from_config(build_unet(cfg).config, in_channels=3,
  out_channels=C)``: every block, width and attention level of the generator's UNet, only the
  first and last convolutions differ. The timestep is fixed at 0 (a constant time embedding), and
  the cross-attention reads a small **learned constant text state** (``NULL_TOKENS`` tokens, no
  prompt): a specialist has nothing to be told.
* **Input**: the image in the model's range ``2 * rgb - 1``, like the generator's condition.
* **Segmentation head**: ``K = len(CLASS_NAMES)`` logits; loss = pixel cross-entropy ignoring
  label 255; prediction = argmax (class ids in ``CLASS_NAMES`` order, which is the canonical
  palette's order, so the same ``mean_iou`` applies).
* **Depth head**: 2 channels: ``log(metres)`` and a **separate sky logit**. Sky (``inf`` depth)
  cannot be regressed in log space, and predicting "a large value" would let the sky dominate an
  L1 loss or bias the near range; a logit separates *where* there is no surface from *how far* the
  surface is. Loss = L1 on log depth over finite pixels (scale-aware: a global scale error costs
  ``|log s|`` everywhere, so this is metric depth, not affine-invariant) + binary cross-entropy on
  the sky logit over all pixels. Prediction = ``exp(log depth)``, ``inf`` where the sky logit > 0
  (the generalist's depth codec also returns ``inf`` for "the end of the path").
* **Normals head**: 3 channels, normalised to unit length; loss = ``1 - cos`` over pixels whose
  target is a unit vector (sky normals are zero and ignored).
* **Optimisation**: the generalist's AdamW + warm-up (the same :func:`~banana.training.module.build_optimizer`)
  and its :class:`~banana.training.module.EMA`, so the two differ in recipe, not in optimiser.
* **Initialisation** (``init_from``): random by default. From a saved pretrained generator, every
  UNet tensor whose name and shape match is copied; ``conv_in`` takes the generator's input
  channels 0:3 (the ones that read the noisy / clean image in pretraining); ``conv_out`` (RGB
  outputs vs the head's channels) and the learned text state stay fresh unless the shapes match
  (the normals head has 3 channels, so it does inherit the RGB output conv). The fixed timestep 0
  is the "no noise" end of the pretrained schedule, which is what a clean input image is. What was
  copied is recorded (:attr:`Specialist.init_record`, in the run's ``config.json`` and
  ``metrics.json``).

What "the same examples" means exactly
--------------------------------------
A generalist run's vision slots are a pure function of its TrainConfig (seed, batch size, mixing
ratio, max_steps; :class:`~banana.training.MixedBatchSampler`) and the task of each slot is a pure
function of ``(seed, index, draw)`` (:meth:`BananaExamples.drawn_task`). Replaying both gives, in
order, the image indices the generalist saw *for this task*. The specialist cuts that list into
batches of its own ``batch_size`` (the last one may be shorter), so one pass sees every image
exactly as often as the generalist did. Slots whose condition image the generalist had dropped
(InstructPix2Pix dropout) are kept: the specialist then gets slightly *more* useful supervision,
which errs in the specialist's favour, the conservative side for a baseline.
"""

from banana.baselines.config import RESUMABLE_CHANGES, SpecialistConfig, matched_config, read_specialist_config
from banana.baselines.control import CONTROL_FILE, control_config, train_control, trainable_parameter_names
from banana.baselines.data import (SpecialistBatchSampler, SpecialistDataModule, SpecialistExamples,
                                   replay_vision_stream)
from banana.baselines.specialist import (REPLAY_FILE, SpecialistModule, SpecialistPipeline, load_specialist,
                                         train_specialist)
from banana.models.specialist import (IGNORE_INDEX, MAX_LOG_DEPTH, MIN_LOG_DEPTH, MODEL_CONFIG_FILE, MODEL_FILE, NULL_TOKENS,
                                      Specialist, head_channels, specialist_loss)

__all__ = ["SpecialistConfig", "Specialist", "SpecialistExamples", "SpecialistBatchSampler", "SpecialistModule",
           "SpecialistPipeline", "replay_vision_stream", "matched_config", "train_specialist",
           "load_specialist", "read_specialist_config", "control_config", "train_control",
           "trainable_parameter_names", "specialist_loss", "NULL_TOKENS", "IGNORE_INDEX",
           "head_channels", "SpecialistDataModule", "RESUMABLE_CHANGES", "MIN_LOG_DEPTH", "MAX_LOG_DEPTH",
           "MODEL_FILE", "MODEL_CONFIG_FILE", "REPLAY_FILE", "CONTROL_FILE"]
