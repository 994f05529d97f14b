"""Prompts that fit: the pixel generator's tokenizer refuses what it cannot read in full.

A prompt longer than ``max_tokens`` (it would be cut: a palette losing its last classes) or with
words outside the vocabulary (each read as ``<unk>``) is a ValueError on the encode path training
and sampling use. Everything banana writes for the synthetic world fits the default tokenizer,
and :func:`banana.models.config_for_classes` sizes a config for Cityscapes' 19 classes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from banana.codecs import PROMPT_STYLES, SegmentationCodec, random_palette
from banana.models import (UNK, BananaGenerator, GeneratorConfig, InstructionTokenizer, config_for_classes,
                           default_vocabulary, palette_prompt_tokens, vocabulary_for)
from banana.real.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, describe
from banana.tasks import DEPTH_PROMPTS, NORMALS_PROMPTS, SEGMENTATION_PROMPT_STYLES, TASKS, task_prompt
from banana.world import CANONICAL_PALETTE, CLASS_NAMES, SPLITS, sample_scene

SHIPPED_BASE = Path(__file__).resolve().parents[1] / "data" / "generators" / "base-cpu"


@pytest.fixture(scope="module")
def world_tokenizer():
    """The tokenizer every world generator gets (the presets' config)."""
    config = GeneratorConfig()
    return InstructionTokenizer(config.vocabulary, config.max_tokens)


def cityscapes_config():
    """A generator config for Cityscapes: its class names and its captions' words."""
    captions = [describe(np.arange(19, dtype=np.uint8).reshape(1, 19)), describe(np.zeros((1, 1), np.uint8))]
    return config_for_classes(GeneratorConfig(), CITYSCAPES_CLASSES, texts=captions)


def world_prompts() -> dict[str, str]:
    """Every instruction banana writes for the world: each task wording, each palette style for
    the canonical and for random palettes, and task_prompt's own draws (training's path)."""
    prompts = {f"depth {i}": p for i, p in enumerate(DEPTH_PROMPTS)}
    prompts |= {f"normals {i}": p for i, p in enumerate(NORMALS_PROMPTS)}
    for style in PROMPT_STYLES:
        prompts[f"canonical {style}"] = SegmentationCodec(CANONICAL_PALETTE).prompt(style)
    for seed in range(40):
        rng = np.random.default_rng(seed)
        palette = random_palette(CLASS_NAMES, rng)
        for style in PROMPT_STYLES:
            prompts[f"random {seed} {style}"] = SegmentationCodec(palette).prompt(style)
        for task in TASKS:
            prompts[f"task_prompt {task} {seed}"] = task_prompt(task, rng, palette)
            prompts[f"task_prompt {task} canonical"] = task_prompt(task, None, CANONICAL_PALETTE)
    return prompts


# ------------------------------------------------------------------------------------------ errors
def test_too_long_prompt_is_an_error_naming_the_counts(world_tokenizer):
    prompt = "a red sphere on the left " * 12                           # 1 + 72 tokens
    with pytest.raises(ValueError, match=r"73 tokens long but this tokenizer reads at most max_tokens=64"):
        world_tokenizer.tokenize(prompt)
    with pytest.raises(ValueError, match=r"73 tokens long"):
        world_tokenizer(["a red sphere", prompt])                      # the batch path
    assert world_tokenizer.count_tokens(prompt) == 73
    # The escape hatch keeps the old behaviour: cut to max_tokens.
    assert len(world_tokenizer.tokenize(prompt, strict=False)) == 64
    assert world_tokenizer([prompt], strict=False)["input_ids"].shape == (1, 64)


def test_unknown_words_are_an_error_naming_them(world_tokenizer):
    with pytest.raises(ValueError, match=r"outside the tokenizer's vocabulary.*\['zorblaxian', 'quokka'\]"):
        world_tokenizer.tokenize("a zorblaxian Quokka on the left of a red sphere")
    assert world_tokenizer.unknown_words("a zorblaxian Quokka") == ["zorblaxian", "quokka"]
    tokens = world_tokenizer.tokenize("a zorblaxian sphere", strict=False)
    assert [t for t, _ in tokens] == ["<bos>", "a", UNK, "sphere"]
    # Numerals and hex colours are numbers, never unknown words.
    assert world_tokenizer.unknown_words('"sky": <1,2,3> #87ceeb 0.5') == []


def test_the_generator_encode_path_is_strict():
    generator = BananaGenerator.from_preset("smoke", seed=0)
    with pytest.raises(ValueError, match="'bicycle'"):
        generator.encode_prompts(SegmentationCodec(CITYSCAPES_PALETTE).prompt())
    states, mask = generator.encode_prompts([SegmentationCodec(CANONICAL_PALETTE).prompt("rgb"), ""])
    assert states.shape[:2] == mask.shape and mask[1].sum() == 1          # the empty prompt: <bos>


# ------------------------------------------------------------------------------------------ the world fits
def test_every_world_instruction_fits(world_tokenizer):
    prompts = world_prompts()
    counts = {name: len(world_tokenizer.tokenize(p)) for name, p in prompts.items()}   # strict: raises on misfit
    longest = max(counts, key=counts.get)
    print(f"\nlongest world instruction: {counts[longest]} tokens ({longest}): {prompts[longest]!r}")
    assert counts[longest] <= world_tokenizer.max_tokens
    assert set(SEGMENTATION_PROMPT_STYLES) <= set(PROMPT_STYLES)


def test_world_descriptions_fit(world_tokenizer):
    from banana.training.publish import SAMPLE_PROMPTS

    descriptions = [sample_scene(0, split, i).describe() for split in SPLITS for i in range(60)]
    descriptions += [sample_scene(3, "held_out", i).describe() for i in range(60)]
    descriptions += list(SAMPLE_PROMPTS)
    counts = [len(world_tokenizer.tokenize(d)) for d in descriptions]
    print(f"\nlongest of {len(descriptions)} world descriptions: {max(counts)} tokens: "
          f"{descriptions[int(np.argmax(counts))]!r}")
    # 5 objects x 7 tokens ("a white banana at the back left") + "and" + 11 (floor, back wall)
    # + 7 (a side wall) + <bos> = 55 at most.
    assert max(counts) <= 55 <= world_tokenizer.max_tokens


# ------------------------------------------------------------------------------------------ Cityscapes
def test_cityscapes_palette_prompt_fits_its_vocabulary(world_tokenizer):
    config = cityscapes_config()
    tokenizer = InstructionTokenizer(config.vocabulary, config.max_tokens)
    counts = {}
    for style in PROMPT_STYLES:                       # built as banana.tasks builds them
        prompt = SegmentationCodec(dict(CITYSCAPES_PALETTE)).prompt(style=style)
        counts[style] = len(tokenizer.tokenize(prompt))
        assert counts[style] <= config.max_tokens
    print(f"\n19-class Cityscapes palette prompt: {counts} tokens; max_tokens={config.max_tokens}")
    assert counts["rgb"] == max(counts.values()) == palette_prompt_tokens(CITYSCAPES_CLASSES)
    for seed in range(20):                            # training draws: canonical or random palette, any style
        rng = np.random.default_rng(seed)
        for palette in (CITYSCAPES_PALETTE, random_palette(CITYSCAPES_CLASSES, rng)):
            assert len(tokenizer.tokenize(task_prompt("segmentation", rng, palette))) <= config.max_tokens
    caption = describe(np.arange(19, dtype=np.uint8).reshape(1, 19))
    assert len(tokenizer.tokenize(caption)) <= config.max_tokens
    # The world's tokenizer refuses it, naming both problems.
    with pytest.raises(ValueError, match=r"127 tokens long.*max_tokens=64.*'bicycle'"):
        world_tokenizer.tokenize(SegmentationCodec(CITYSCAPES_PALETTE).prompt("rgb"))


def test_config_for_classes():
    config = cityscapes_config()
    assert config.max_tokens == 128                   # rgb style: 127 tokens
    world = GeneratorConfig()
    assert config.vocabulary[:len(world.vocabulary)] == world.vocabulary      # world ids unchanged
    assert {"traffic", "light", "sidewalk", "city", "street"} <= set(config.vocabulary)
    assert tuple(vocabulary_for(CITYSCAPES_CLASSES)) == config_for_classes(world, CITYSCAPES_CLASSES).vocabulary
    # The world's own classes and descriptions change nothing: world runs stay reproducible.
    assert config_for_classes(world, CLASS_NAMES, texts=[sample_scene(0, "train", 0).describe()]) == world
    # No classes (a captions-only data set): only the texts' words are added.
    assert config_for_classes(world, [], texts=["a zebra"]).vocabulary == (*world.vocabulary, "zebra")
    generator = BananaGenerator.from_preset("smoke", seed=0, class_names=CITYSCAPES_CLASSES)
    assert generator.config.max_tokens == 128 and generator.text_encoder.position_embedding.num_embeddings == 128
    states, mask = generator.encode_prompts(SegmentationCodec(CITYSCAPES_PALETTE).prompt("rgb"))
    assert mask.shape == (1, 127) and torch.isfinite(states).all()


def test_the_shipped_base_still_loads_and_reads_world_prompts(world_tokenizer, tmp_path):
    assert default_vocabulary() == list(GeneratorConfig().vocabulary)
    if not (SHIPPED_BASE / "generator_config.json").is_file():
        pytest.skip("no shipped base generator in data/generators/base-cpu")
    stored = json.loads((SHIPPED_BASE / "generator_config.json").read_text())
    assert stored["vocabulary"] == default_vocabulary() and stored["max_tokens"] == 64
    base = BananaGenerator.from_pretrained(SHIPPED_BASE)
    assert base.tokenizer.vocabulary == world_tokenizer.vocabulary
    with torch.no_grad():
        states, _ = base.encode_prompts([SegmentationCodec(CANONICAL_PALETTE).prompt("rgb"),
                                         sample_scene(0, "test", 0).describe()])
    assert torch.isfinite(states).all()
    with pytest.raises(ValueError, match="vocabulary"):
        base.encode_prompts("a photo of a city street with road and car")
