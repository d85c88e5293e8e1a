"""Text for attention transfer: a file, a folder of ``.txt`` files, a Hub dataset, or the bundled corpus.

Every source gives a list of texts, one per non-blank line (a paragraph in WikiText and in the bundled corpus;
hard-wrapped books give one text per printed line). ``text_batches`` turns them into shuffled, padded, tokenised
batches. ``datasets`` is imported only for a Hub dataset, so the rest runs where it is not installed.
"""

from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

# The corpus run_mlm trains on by default (hf_lln/recipes/mlm/corpus/README.md). Named here, where it can be read
# without ``datasets``; hf_lln.recipes.mlm.data.DEFAULT_CORPUS is this path.
BUNDLED_CORPUS = Path(__file__).parents[1] / "recipes" / "mlm" / "corpus" / "gutenberg_sample.txt.gz"
TEXT_SUFFIXES = (".txt", ".gz")
# "name", "owner/name", either with ":config": what a Hub dataset id looks like (a path has more slashes or a
# text-file suffix).
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?(:[\w.-]+)?$")


@dataclass(frozen=True)
class TextSource:
    """``texts``: the non-blank lines, stripped; ``description``: where they came from, for the model card."""

    texts: list[str]
    description: str


def _read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    # errors="replace": a stray Latin-1 byte in a book should cost one character, not the run.
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        return [line.strip() for line in handle if line.strip()]


def _hub_texts(name: str, split: str) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise ValueError(
            f"text source {name!r} is not a file or folder; reading it as a Hub dataset needs the `datasets` "
            "package (pip install datasets)"
        ) from None
    dataset_name, _, config = name.partition(":")
    try:
        data = datasets.load_dataset(dataset_name, config or None, split=split)
    except Exception as error:  # the Hub, a missing config or no network: all mean "not a usable source"
        raise ValueError(
            f"text source {name!r} is neither an existing file or folder nor a loadable Hub dataset "
            f"(NAME[:CONFIG], split {split!r}): {error}"
        ) from error
    columns = [
        column for column, feature in data.features.items() if getattr(feature, "dtype", None) == "string"
    ]
    if not columns:
        raise ValueError(f"Hub dataset {name!r} has no text column (columns: {data.column_names})")
    column = "text" if "text" in columns else columns[0]
    return [text.strip() for text in data[column] if text and text.strip()]


def load_texts(source: str | os.PathLike | None = None, *, split: str = "train") -> TextSource:
    """The texts of ``source``: a text file (``.gz`` is decompressed), a folder (its ``*.txt`` files, recursively,
    in name order), a Hub dataset id ``NAME[:CONFIG]`` (``split``; needs ``datasets``), or None for the bundled
    corpus. Raises ``FileNotFoundError``/``ValueError`` naming the source when it is missing or holds no text."""
    if source is None:
        return TextSource(_read_lines(BUNDLED_CORPUS), f"the bundled corpus ({BUNDLED_CORPUS.name})")
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise ValueError(f"text source {str(source)!r} is a folder without .txt files")
        texts = [text for file in files for text in _read_lines(file)]
        description = f"{len(files)} .txt files in {path.name}/"
    elif path.is_file():
        texts = _read_lines(path)
        description = f"the file {path.name}"
    elif _HUB_ID.match(str(source)) and not str(source).endswith(TEXT_SUFFIXES):
        texts = _hub_texts(str(source), split)
        description = f"the Hub dataset {source} ({split} split)"
    else:
        raise FileNotFoundError(
            f"text source {str(source)!r} does not exist (expected a text file, a folder of .txt files or a Hub "
            "dataset id NAME[:CONFIG])"
        )
    if not texts:
        raise ValueError(f"text source {str(source)!r} holds no text (every line is blank)")
    return TextSource(texts, description)


class _TokenCache:
    """Tokenises each text once, when a batch first asks for it (a transfer cycles through its text many times,
    and tokenising a batch costs more than a GPU transfer step computes); ``tokenizer.pad`` pads each batch as
    ``tokenizer(texts, padding=True, truncation=True, max_length=...)`` would."""

    def __init__(self, texts: list[str], tokenizer, max_length: int):
        self.texts, self.tokenizer, self.max_length = texts, tokenizer, max_length
        self.encodings: dict[int, dict[str, list[int]]] = {}

    def collate(self, indices: list[int]) -> dict[str, torch.Tensor]:
        missing = [index for index in dict.fromkeys(indices) if index not in self.encodings]
        if missing:
            encoded = self.tokenizer(
                [self.texts[index] for index in missing], truncation=True, max_length=self.max_length
            )
            for row, index in enumerate(missing):
                self.encodings[index] = {key: values[row] for key, values in encoded.items()}
        return self.tokenizer.pad([self.encodings[index] for index in indices], return_tensors="pt")


class AlternatingBatches:
    """Re-iterable: a batch of each loader in turn, for as long as the shortest lasts."""

    def __init__(self, *loaders: DataLoader):
        self.loaders = loaders

    def __iter__(self):
        for group in zip(*self.loaders, strict=False):
            yield from group

    def __len__(self) -> int:
        return len(self.loaders) * min(len(loader) for loader in self.loaders)


def text_batches(
    texts: list[str],
    tokenizer,
    *,
    batch_size: int,
    max_length: int,
    seed: int = 0,
    mixed_lengths: bool = False,
) -> DataLoader | AlternatingBatches:
    """A re-iterable loader of ``{input_ids, attention_mask[, token_type_ids]}: (batch, seq)`` batches, each text
    one sequence truncated to ``max_length`` and padded to the batch's longest; order shuffled from ``seed``.
    ``mixed_lengths``: every other batch holds twice the texts cut to half the length (the same tokens per batch),
    so that the model sees sentence-length inputs as well as long ones."""
    for name, value in (("batch_size", batch_size), ("max_length", max_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if mixed_lengths and max_length < 2:
        raise ValueError(f"mixed_lengths halves max_length, which must then be >= 2, got {max_length}")

    def loader(size: int, length: int, order: int) -> DataLoader:
        return DataLoader(
            range(len(texts)),
            batch_size=size,
            shuffle=True,
            generator=torch.Generator().manual_seed(order),
            collate_fn=_TokenCache(texts, tokenizer, length).collate,
        )

    if not mixed_lengths:
        return loader(batch_size, max_length, seed)
    return AlternatingBatches(
        loader(batch_size, max_length, seed), loader(2 * batch_size, max_length // 2, seed + 1)
    )
