"""Pretrain a BERT/RoBERTa-style masked language model with any registered attention, through accelerate.

With no argument it trains the ``lln-roberta-tiny`` preset (LLN+Diag attention) on the bundled
public-domain corpus, on CPU in a few minutes, and writes ``outputs/mlm``::

    accelerate launch -m hf_lln.recipes.run_mlm
    python -m hf_lln.recipes.run_mlm --attn_implementation sdpa --max_train_steps 50 --output_dir outputs/mlm-softmax

The same command is ``hf-lln-run-mlm`` once the package is installed (under accelerate: ``accelerate launch
--no_python hf-lln-run-mlm ...``, which runs a command found on PATH instead of ``python <file>``) and
``scripts/run_mlm.py`` in a checkout. The paper's corpus, RoBERTa-base sizes, bf16, two GPUs::

    accelerate launch --multi_gpu --num_processes 2 -m hf_lln.recipes.run_mlm \\
        --dataset_name wikitext --dataset_config_name wikitext-103-raw-v1 --config_name lln-roberta-base \\
        --max_seq_length 512 --per_device_train_batch_size 32 --max_train_steps 100000 --num_warmup_steps 6000 \\
        --learning_rate 6e-4 --weight_decay 0.01 --mixed_precision bf16 --checkpointing_steps 5000 \\
        --eval_steps 5000 --with_tracking --output_dir outputs/lln-roberta-base
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_lln.recipes.mlm import (
    MaskedLanguageModeling,
    add_mlm_arguments,
    build_model,
    check_mlm_arguments,
    load_config,
    load_raw_datasets,
    make_dataloaders,
    resolve_max_seq_length,
    text_column,
    tokenize_for_mlm,
    tokenizer_for_run,
)
from hf_lln.recipes.training import (
    add_training_arguments,
    apply_memory_options,
    check_checkpoint_model,
    check_checkpoint_run,
    check_training_arguments,
    data_fingerprint,
    make_accelerator,
    make_optimizer,
    make_scheduler,
    model_fingerprint,
    plan_training,
    removed_on_failure,
    save_final_model,
    train,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The arguments, every one checked (``ValueError`` naming the flag) before any work is done: the output
    folder must be unused unless the run resumes (a checkpoint of this same run) or overwrites it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_mlm_arguments(parser)
    add_training_arguments(parser)
    parser.set_defaults(output_dir="outputs/mlm", learning_rate=5e-4, num_train_epochs=1, eval_steps=None)
    args = parser.parse_args(argv)
    check_mlm_arguments(args)
    check_training_arguments(args)
    return args


def run(argv: list[str] | None = None) -> dict[str, float]:
    """One pretraining run in this process; returns its results (as saved in ``all_results.json``)."""
    args = parse_args(argv)
    # the config and the sequence length are checked before the output folder, data or tokenizer exist
    config = load_config(args)
    max_seq_length = resolve_max_seq_length(args, config)
    with removed_on_failure(args.output_dir):
        accelerator = make_accelerator(args, "mlm")
        raw = load_raw_datasets(args)
        # the content of the data is part of the run's identity, checked on resume (hashed only when needed)
        data = (
            data_fingerprint(raw)
            if args.checkpointing_steps is not None or args.resume_from_checkpoint is not None
            else None
        )
        if args.resume_from_checkpoint is not None:
            check_checkpoint_run(args.resume_from_checkpoint, data=data)
        tokenizer = tokenizer_for_run(
            args, config, raw["train"], text_column(raw["train"]), max_seq_length, accelerator
        )
        model = build_model(args, config, tokenizer, max_seq_length)
        if args.resume_from_checkpoint is not None:
            check_checkpoint_model(args.resume_from_checkpoint, model_fingerprint(model))
        apply_memory_options(model, args)

        tokenized = tokenize_for_mlm(raw, tokenizer, max_seq_length, args, accelerator)
        pad_multiple = 8 if accelerator.mixed_precision in ("fp16", "bf16", "fp8") else None
        train_loader, eval_loader = make_dataloaders(tokenized, tokenizer, args, pad_multiple)
        optimizer = make_optimizer(model, args, accelerator.device)
        model, optimizer, train_loader, eval_loader = accelerator.prepare(
            model, optimizer, train_loader, eval_loader
        )
        plan = plan_training(args, len(train_loader))
        scheduler = accelerator.prepare(make_scheduler(optimizer, args, plan.max_train_steps))

        objective = MaskedLanguageModeling(tokenizer, args.mlm_probability, args.seed)
        summary = train(
            accelerator,
            args,
            model,
            optimizer,
            scheduler,
            train_loader,
            plan,
            compute_loss=objective.loss,
            evaluate=lambda: objective.evaluate(accelerator, model, eval_loader),
            data_fingerprint=data,
        )
        results = summary.results()
        # the card's base_model metadata must name a Hub repository, not a local folder
        hub_base_model = args.model_name_or_path and not Path(args.model_name_or_path).exists()
        card = {
            "base_model": args.model_name_or_path if hub_base_model else None,
            "datasets": (args.dataset_name,) if args.dataset_name else (),
        }
        save_final_model(
            accelerator, model, tokenizer, args, results, log_history=summary.log_history, card=card
        )
    accelerator.end_training()
    return results


def main(argv: list[str] | None = None) -> int:
    """The command: :func:`run`, exit status 0 (errors propagate as exceptions)."""
    run(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
