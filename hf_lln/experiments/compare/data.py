"""The MLM training text of a comparison: ``run_mlm`` reads one file, the project's data folder holds many."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def read_text(path: Path) -> str:
    """A text file as UTF-8, or as Latin-1 when it is not UTF-8 (two of the Gutenberg books)."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    text = text.replace("\r\n", "\n")
    return text if text.endswith("\n") else text + "\n"


def prepare_train_file(files: Sequence[Path], data_dir: Path) -> Path:
    """The single training file ``run_mlm`` reads: ``files[0]``, or all of them joined into
    ``data_dir/mlm_train.txt`` (rewritten only when its content changes, so the datasets cache stays valid)."""
    if len(files) == 1:
        return files[0]
    text = "".join(read_text(path) for path in files)
    target = data_dir / "mlm_train.txt"
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        data_dir.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.tmp")
        staging.write_text(text, encoding="utf-8")
        os.replace(staging, target)
    return target
