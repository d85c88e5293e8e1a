"""Test-set predictions in the GLUE submission format (gluebenchmark.com).

One TSV per test split, named as GLUE expects (``CoLA.tsv``, ``MNLI-m.tsv``, ``MNLI-mm.tsv``, ...),
with the header ``index<TAB>prediction`` and each label written as in the task's TSVs (names for
MNLI, QNLI and RTE, 0/1 for the other classification tasks; STS-B's score clipped to [0, 5]).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hf_lln.recipes.glue.tasks import GlueTask


def write_submission(
    task: GlueTask, split: str, indices: Sequence[int], predictions: Sequence, output_dir: str | Path
) -> Path:
    """Write the predictions of ``task``'s test ``split`` and return the file written.

    ``indices``: the rows' ``idx``; ``predictions``: class ids (floats for STS-B), one per index.
    """
    if split not in task.submission_files:
        raise ValueError(f"split: {task.name} has test splits {list(task.submission_files)}, got {split!r}")
    if len(indices) != len(predictions):
        raise ValueError(f"indices and predictions differ in length: {len(indices)} != {len(predictions)}")
    path = Path(output_dir) / task.submission_files[split]
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["index\tprediction"]
    for index, prediction in sorted(zip(indices, predictions, strict=True)):
        if task.is_regression:
            value = f"{min(max(float(prediction), 0.0), 5.0):.3f}"
        else:
            value = task.tsv_label_values[int(prediction)]
        lines.append(f"{int(index)}\t{value}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
