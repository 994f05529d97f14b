"""The instruction side of the generator: a tokenizer that reads numerals as quantities, the
vocabulary it is built from, and the small transformer that embeds instructions.

1. :class:`InstructionTokenizer` turns a prompt into word ids **and numbers**. The
   segmentation prompt names colours as RGB tuples (``"sky": <135,206,235>``), and a model that
   must follow a palette it has never seen needs to read those numbers as quantities, not as 256
   unrelated symbols. So every numeral becomes one ``<num>`` token that carries its value. A
   prompt the model cannot read in full (longer than ``max_tokens``, or with words outside its
   vocabulary) is a ``ValueError``, never silently cut or read as ``<unk>``;
   :func:`config_for_classes` sizes a config's vocabulary and ``max_tokens`` for a dataset's
   class names (e.g. Cityscapes' 19).
2. :class:`InstructionEncoder` embeds tokens (a numeral's embedding is a learned function of its
   value) and runs a small transformer; the UNet attends to its output.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Iterable, Sequence

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

# --------------------------------------------------------------------------- tokenizer
PAD, UNK, NUM, BOS = "<pad>", "<unk>", "<num>", "<bos>"
SPECIAL_TOKENS = (PAD, UNK, NUM, BOS)

#: Words of the prompts banana writes: world descriptions, task instructions and their variants.
#: The world's own vocabularies (shapes, colours, surfaces) are added by :func:`default_vocabulary`.
PROMPT_WORDS = """
a an the and of on in at to with from by for as is are this that each every its it all
left right middle front back center centre top bottom near far behind above below
floor wall walls sky object objects scene image picture photo photograph view room pixel pixels camera
checkered striped plain textured
generate generating create render draw paint produce make show output predict estimate give
semantic segmentation segment segmented mask masks label labels labelled class classes category
visualization visualisation visualize map maps mapping color colour colors colours colored coloured coded
using use following given
depth metric metres meters distance distances disparity
surface normal normals orientation orientations
rgb hex rgba value values tuple tuples json dictionary
instance instances referring expression
white black gray grey
""".split()


#: How the tokenizer splits text: a hex colour, a letter run (a word) or a numeral.
_TOKEN_PATTERN = re.compile(r"#[0-9a-f]{6}\b|[a-z]+|\d+(?:\.\d+)?")


def prompt_words(text: str) -> list[str]:
    """The words of ``text`` as the tokenizer reads them (lower-cased letter runs; numerals and
    hex colours are numbers, not words): what a vocabulary must hold for ``text``."""
    return [piece for piece in _TOKEN_PATTERN.findall(str(text).lower()) if piece[0].isalpha()]


def default_vocabulary(extra_words: Iterable[str] = ()) -> list[str]:
    """The deterministic word list of the tokenizer: special tokens, prompt words and the world's
    class, shape, colour and surface names (sorted, deduplicated), then the words of
    ``extra_words`` (any strings, e.g. class names like ``"traffic light"``; split as the tokenizer
    does) that are not in it yet, sorted.

    Without ``extra_words`` the list is exactly the one every saved world generator stores (the
    shipped ``data/generators/base-cpu`` included); with them it only *appends*, so the ids of
    the world's words never move."""
    from banana.world import CLASS_NAMES, COLOR_VOCABULARY, SURFACE_COLORS

    words = set(PROMPT_WORDS) | set(CLASS_NAMES) | set(COLOR_VOCABULARY) | set(SURFACE_COLORS)
    extra = {w for text in extra_words for w in prompt_words(text)} - words
    return list(SPECIAL_TOKENS) + sorted(words) + sorted(extra)


def vocabulary_for(class_names: Sequence[str], texts: Iterable[str] = ()) -> list[str]:
    """:func:`default_vocabulary` plus the words of a dataset's ``class_names`` and of ``texts``
    (e.g. its captions): the vocabulary a generator needs for that dataset's prompts."""
    return default_vocabulary(extra_words=[*class_names, *texts])


def palette_prompt_tokens(class_names: Sequence[str]) -> int:
    """Tokens (``<bos>`` included) of the longest segmentation prompt naming ``class_names``, over
    every prompt style of :data:`banana.codecs.PROMPT_STYLES` (json, rgb, hex, natural; the
    longest is ``rgb``: ``name in rgb(r, g, b)`` is the name's words + 5 tokens per class). A
    numeral is one token whatever its digits, so the count does not depend on the colours."""
    from banana.codecs import PROMPT_STYLES, SegmentationCodec, well_separated_palette

    names = list(class_names)
    palette = dict(zip(names, well_separated_palette(len(names), exclude=[(0, 0, 0)])))
    tokenizer = InstructionTokenizer(vocabulary_for(names), max_tokens=2)
    return max(tokenizer.count_tokens(SegmentationCodec(palette).prompt(style)) for style in PROMPT_STYLES)


def config_for_classes(config, class_names: Sequence[str], texts: Iterable[str] = ()):
    """``config`` (a :class:`~banana.models.config.GeneratorConfig`) made able to read every prompt of a dataset with ``class_names``: the words of
    the class names and of ``texts`` (its captions, say) are appended to the vocabulary, and
    ``max_tokens`` grows (to a multiple of 16) when the longest segmentation prompt
    (:func:`palette_prompt_tokens`), a depth/normals instruction or one of ``texts`` needs more.

    For the world's own classes and descriptions nothing changes (the config comes back equal),
    so world runs stay reproducible. For Cityscapes' 19 classes: 18 new words, and
    ``max_tokens`` 64 -> 128 (its ``rgb`` palette prompt is 127 tokens).
    """
    from banana.tasks import DEPTH_PROMPTS, NORMALS_PROMPTS

    texts = [str(t) for t in texts]
    class_names = list(class_names)
    known = set(config.vocabulary)
    new = sorted({w for text in [*class_names, *texts] for w in prompt_words(text)} - known)
    counter = InstructionTokenizer(list(config.vocabulary) + new, max_tokens=2)
    needed = max(([palette_prompt_tokens(class_names)] if class_names else [])
                 + [counter.count_tokens(t) for t in (*DEPTH_PROMPTS, *NORMALS_PROMPTS, *texts)])
    max_tokens = config.max_tokens if needed <= config.max_tokens else 16 * math.ceil(needed / 16)
    if not new and max_tokens == config.max_tokens:
        return config
    return dataclasses.replace(config, vocabulary=tuple(config.vocabulary) + tuple(new), max_tokens=max_tokens)


class InstructionTokenizer:
    """Words and numerals -> ids, numeric values and a padding mask.

    Vocabulary rule: the text is lower-cased and split into runs of letters and runs of digits
    (with an optional decimal part); everything else (spaces, quotes, braces, commas, ``#``)
    only separates tokens. A letter run in the vocabulary gets its id. Every digit run becomes
    ``<num>`` with its value (``"235"`` -> 235.0), which :class:`InstructionEncoder` embeds as a
    quantity. A hex colour (``#87ceeb``) is read as its three channel values. Each sequence
    starts with ``<bos>``, so even the empty prompt (the unconditional branch of
    classifier-free guidance) has one token.

    Strict by default (the path training and sampling use): a prompt with more than
    ``max_tokens`` tokens, or with a word outside the vocabulary, is a ``ValueError`` naming the
    token count and the limit, or the unknown words - the model would otherwise read a cut
    prompt (a 19-class palette losing its last classes) or ``<unk>`` for a class name, and say
    nothing. ``strict=False`` is the diagnostic escape hatch: unknown words become ``<unk>`` and
    long sequences are cut to ``max_tokens``. :meth:`unknown_words` and :meth:`count_tokens`
    check a prompt without encoding it.
    """

    _TOKEN = _TOKEN_PATTERN

    def __init__(self, vocabulary: Sequence[str] | None = None, max_tokens: int = 64):
        vocabulary = list(vocabulary) if vocabulary is not None else default_vocabulary()
        if list(vocabulary[:len(SPECIAL_TOKENS)]) != list(SPECIAL_TOKENS):
            raise ValueError(f"vocabulary must start with the special tokens {SPECIAL_TOKENS}")
        if len(set(vocabulary)) != len(vocabulary):
            raise ValueError("vocabulary has duplicate words")
        if max_tokens < 2:
            raise ValueError(f"max_tokens must be >= 2, got {max_tokens}")
        self.vocabulary = vocabulary
        self.max_tokens = max_tokens
        self.index = {word: i for i, word in enumerate(vocabulary)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary)

    def _all_tokens(self, text: str) -> list[tuple[str, float]]:
        """Every ``(token, value)`` pair of ``text`` (``<bos>`` first), uncut; unknown words as ``<unk>``."""
        if not isinstance(text, str):
            raise TypeError(f"prompts must be strings, got {type(text).__name__}")
        tokens: list[tuple[str, float]] = [(BOS, 0.0)]
        for piece in self._TOKEN.findall(text.lower()):
            if piece.startswith("#"):
                tokens += [(NUM, float(int(piece[i:i + 2], 16))) for i in (1, 3, 5)]
            elif piece[0].isdigit():
                tokens.append((NUM, float(piece)))
            else:
                tokens.append((piece if piece in self.index else UNK, 0.0))
        return tokens

    def tokenize(self, text: str, strict: bool = True) -> list[tuple[str, float]]:
        """``(token, value)`` pairs for one prompt; value is 0 except for numerals.

        ``strict`` (default): a ``ValueError`` if the prompt has more than ``max_tokens`` tokens
        or words outside the vocabulary. ``strict=False``: unknown words become ``<unk>`` and the
        sequence is cut to ``max_tokens``."""
        tokens = self._all_tokens(text)
        if strict:
            problems = []
            if len(tokens) > self.max_tokens:
                problems.append(f"it is {len(tokens)} tokens long but this tokenizer reads at most "
                                f"max_tokens={self.max_tokens} (the rest would be cut off)")
            unknown = list(dict.fromkeys(self.unknown_words(text)))
            if unknown:
                problems.append(f"it has {len(unknown)} word(s) outside the tokenizer's vocabulary of "
                                f"{self.vocab_size}: {unknown} (each would be read as {UNK})")
            if problems:
                shown = text if len(text) <= 120 else text[:117] + "..."
                raise ValueError(f"the prompt {shown!r} does not fit this generator: " + "; ".join(problems)
                                 + ". A generator for a dataset's classes needs a config from "
                                 "banana.models.config_for_classes (vocabulary + max_tokens); "
                                 "tokenize(..., strict=False) cuts and maps to <unk> instead")
            return tokens
        return tokens[:self.max_tokens]

    def count_tokens(self, text: str) -> int:
        """The number of tokens of ``text`` (``<bos>`` included), before any cut."""
        return len(self._all_tokens(text))

    def __call__(self, texts: str | Sequence[str], strict: bool = True) -> dict[str, torch.Tensor]:
        """Batch-encode prompts: ``input_ids`` [B, L] long, ``numbers`` [B, L] float,
        ``attention_mask`` [B, L] bool (True = real token), L = the longest prompt.
        ``strict`` as in :meth:`tokenize` (default: a prompt that does not fit is a ``ValueError``)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        tokenized = [self.tokenize(t, strict=strict) for t in texts]
        length = max(len(t) for t in tokenized) if tokenized else 1
        ids = torch.zeros(len(texts), length, dtype=torch.long)
        numbers = torch.zeros(len(texts), length)
        mask = torch.zeros(len(texts), length, dtype=torch.bool)
        for row, tokens in enumerate(tokenized):
            ids[row, :len(tokens)] = torch.tensor([self.index[w] for w, _ in tokens])
            numbers[row, :len(tokens)] = torch.tensor([v for _, v in tokens])
            mask[row, :len(tokens)] = True
        return {"input_ids": ids, "numbers": numbers, "attention_mask": mask}

    def unknown_words(self, text: str) -> list[str]:
        """The words of ``text`` outside the vocabulary (to check a prompt before using it)."""
        return [word for word in prompt_words(text) if word not in self.index]

    def save(self, directory: str | Path) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "tokenizer.json").write_text(
            json.dumps({"vocabulary": self.vocabulary, "max_tokens": self.max_tokens}, indent=1))

    @classmethod
    def load(cls, directory: str | Path) -> "InstructionTokenizer":
        path = Path(directory) / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: not a saved InstructionTokenizer")
        data = json.loads(path.read_text())
        return cls(data["vocabulary"], data["max_tokens"])


# --------------------------------------------------------------------------- text encoder
class InstructionEncoder(ModelMixin, ConfigMixin):
    """Token + numeral + position embeddings, then a small pre-norm transformer encoder.

    A numeral's embedding is ``E[<num>] + MLP(fourier(value / 255))``: nearby values get nearby
    embeddings, so a colour channel value never seen in training still means "about this much".
    """

    @register_to_config
    def __init__(self, vocab_size: int, dim: int = 64, layers: int = 2, heads: int = 4,
                 max_tokens: int = 64, number_frequencies: int = 8):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.position_embedding = nn.Embedding(max_tokens, dim)
        self.register_buffer("frequencies", 2.0 ** torch.arange(number_frequencies) * math.pi, persistent=False)
        self.number_embedding = nn.Sequential(nn.Linear(2 * number_frequencies + 1, dim), nn.SiLU(),
                                              nn.Linear(dim, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(dim)

    def forward(self, input_ids: torch.Tensor, numbers: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, L]`` ids, values and mask -> hidden states ``[B, L, dim]``."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        scaled = (numbers / 255.0).unsqueeze(-1)
        fourier = torch.cat([scaled, torch.sin(scaled * self.frequencies), torch.cos(scaled * self.frequencies)], -1)
        is_number = (input_ids == SPECIAL_TOKENS.index(NUM)).unsqueeze(-1)
        hidden = (self.token_embedding(input_ids) + self.position_embedding(positions)
                  + self.number_embedding(fourier) * is_number)
        hidden = self.transformer(hidden, src_key_padding_mask=~attention_mask)
        return self.final_norm(hidden)
