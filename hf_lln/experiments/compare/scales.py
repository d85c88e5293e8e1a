"""The sizes of a comparison (model, steps, batches, learning rates, seeds, precision), per ``--scale``."""

from __future__ import annotations

from dataclasses import dataclass

# the seed of every MLM run: every arm pretrains on the same data order, masks and initialisation draws
PRETRAIN_SEED = 0


@dataclass(frozen=True)
class Scale:
    """The sizes of one comparison; every arm gets the same ones.

    ``glue_steps`` caps each fine-tuning run (None: ``glue_epochs`` full epochs). ``adapt_steps`` is the length
    of the converted track's MLM adaptation (0: fine-tune the converted checkpoint directly). ``seeds`` are the
    fine-tuning seeds; every MLM run uses ``PRETRAIN_SEED``.
    """

    config_name: str
    max_seq_length: int
    tokenizer_vocab_size: int | None
    mlm_steps: int
    mlm_batch_size: int
    mlm_learning_rate: float
    mlm_warmup_steps: int
    mlm_eval_steps: int
    adapt_steps: int
    adapt_learning_rate: float
    glue_steps: int | None
    glue_epochs: int
    glue_batch_size: int
    glue_warmup_steps: int
    scratch_glue_learning_rate: float
    converted_glue_learning_rate: float
    seeds: tuple[int, ...]
    mixed_precision: str
    checkpointing_steps: int | None
    # precision of the from-scratch pretraining (the longest runs); everything else uses ``mixed_precision``
    pretrain_mixed_precision: str | None = None


SCALES = {
    # plumbing only: a few steps on CPU, numbers meaningless
    "tiny": Scale(
        config_name="lln-roberta-tiny",
        max_seq_length=32,
        tokenizer_vocab_size=320,
        mlm_steps=4,
        mlm_batch_size=8,
        mlm_learning_rate=2e-3,
        mlm_warmup_steps=0,
        mlm_eval_steps=2,
        adapt_steps=2,
        adapt_learning_rate=1e-4,
        glue_steps=2,
        glue_epochs=1,
        glue_batch_size=8,
        glue_warmup_steps=0,
        scratch_glue_learning_rate=1e-4,
        converted_glue_learning_rate=5e-5,
        seeds=(0,),
        mixed_precision="no",
        checkpointing_steps=None,
    ),
    # One H100: the converted track (--jobs 7) in about 10 minutes, the scratch track (--jobs 14, with the
    # statistics arms) in about 25; bf16 pretraining for 6,000 steps, where LLN+Diag has left the unigram
    # plateau and softmax has not yet (docs/quality.md).
    "gpu-minutes": Scale(
        config_name="lln-roberta-small",
        max_seq_length=128,
        tokenizer_vocab_size=None,
        mlm_steps=6000,
        mlm_batch_size=64,
        mlm_learning_rate=1e-3,
        mlm_warmup_steps=300,
        mlm_eval_steps=500,
        adapt_steps=200,
        adapt_learning_rate=1e-4,
        glue_steps=250,
        glue_epochs=1,
        glue_batch_size=32,
        glue_warmup_steps=25,
        scratch_glue_learning_rate=1e-4,
        converted_glue_learning_rate=5e-5,
        seeds=(0, 1, 2),
        mixed_precision="no",
        checkpointing_steps=1000,
        pretrain_mixed_precision="bf16",
    ),
    # the paper's setting (RoBERTa-base, 512 tokens, WikiText-103, full GLUE epochs): GPU-days per attention
    "full": Scale(
        config_name="lln-roberta-base",
        max_seq_length=512,
        tokenizer_vocab_size=None,
        mlm_steps=100_000,
        mlm_batch_size=32,
        mlm_learning_rate=6e-4,
        mlm_warmup_steps=6000,
        mlm_eval_steps=5000,
        adapt_steps=5000,
        adapt_learning_rate=5e-5,
        glue_steps=None,
        glue_epochs=3,
        glue_batch_size=32,
        glue_warmup_steps=0,
        scratch_glue_learning_rate=2e-5,
        converted_glue_learning_rate=2e-5,
        seeds=(0, 1, 2),
        mixed_precision="bf16",
        checkpointing_steps=5000,
    ),
}
