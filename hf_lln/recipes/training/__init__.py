"""Logic every training script shares: arguments, accelerate setup, optimizer, schedule, loop, checkpoints.

Nothing here knows about a task; a script supplies its data, model and ``compute_loss``/``evaluate``.

A script, in order::

    parser = argparse.ArgumentParser()
    add_training_arguments(parser)            # shared flags (below); add the task's own
    args = parser.parse_args()
    check_training_arguments(args)            # ValueError naming the flag; resolves --resume_from_checkpoint
    accelerator = make_accelerator(args, "glue")   # seed, logging, output_dir, trackers
    model = AutoModel...from_config/from_pretrained(..., **model_init_kwargs(args))
    apply_memory_options(model, args)         # --gradient_checkpointing
    optimizer = make_optimizer(model, args)   # AdamW, no decay on biases and norms
    model, optimizer, train_dl, eval_dl = accelerator.prepare(model, optimizer, train_dl, eval_dl)
    plan = plan_training(args, len(train_dl)) # TrainingPlan(max_train_steps, num_epochs, steps_per_epoch)
    scheduler = accelerator.prepare(make_scheduler(optimizer, args, plan.max_train_steps))
    summary = train(accelerator, args, model, optimizer, scheduler, train_dl, plan,
                    compute_loss=..., evaluate=...)   # -> TrainingSummary
    save_final_model(accelerator, model, tokenizer, args, summary.results(),
                     log_history=summary.log_history, card={...})
    accelerator.end_training()

Shared flags (``add_training_arguments``): ``--output_dir --overwrite_output_dir --seed --per_device_train_batch_size
--per_device_eval_batch_size --learning_rate --weight_decay --adam_beta1 --adam_beta2 --adam_epsilon
--max_grad_norm --lr_scheduler_type --num_warmup_steps --num_train_epochs --max_train_steps
--gradient_accumulation_steps --mixed_precision --gradient_checkpointing --attn_implementation
--eval_steps --logging_steps --with_tracking --report_to --checkpointing_steps
--resume_from_checkpoint --push_to_hub --hub_model_id --hub_token``. Change a default with
``parser.set_defaults``.

API:

- ``make_accelerator(args, project_name) -> Accelerator``: seedable data order (``--seed`` +
  epoch), scheduler stepped once per optimizer step by ``train``, trackers under ``project_name``.
- ``model_init_kwargs(args) -> dict``: float32 weights (``dtype``) and ``attn_implementation`` when given.
- ``train(accelerator, args, model, optimizer, scheduler, train_dataloader, plan, *,
  compute_loss=model_loss, evaluate=None, tokens_in=count_tokens) -> TrainingSummary``:
  ``compute_loss(model, batch) -> scalar tensor`` (default ``model(**batch).loss``);
  ``evaluate() -> dict[str, float]`` (may put the model in eval mode; called every ``--eval_steps``
  or every epoch, and at the end); ``tokens_in(batch) -> int`` for tokens/s. The global torch RNG
  is re-seeded before each batch from (seed, batch number, process): draw randomness (masking) in
  ``compute_loss``, not in a collate function, so that it resumes exactly.
- ``training_step(accelerator, model, optimizer, scheduler, batch, compute_loss, max_grad_norm) -> loss``:
  one micro-batch as ``train`` runs it (loss, backward, clipping, optimizer and scheduler steps under
  ``accelerator.accumulate``); ``hf_lln.experiments.mlm_throughput`` times it.
- ``TrainingSummary``: ``completed_steps, epochs, train_loss, train_runtime, train_tokens,
  tokens_per_second, eval_metrics, log_history``; ``.results()`` flattens it (``eval_`` prefix) for
  ``all_results.json``.
- Checkpoints: ``output_dir/step_N`` written atomically (``save_checkpoint``) with the run's identity
  (``run_arguments(args)``, ``data_fingerprint(splits)``) and every file's size, found by
  ``find_checkpoint(path_or_"latest", output_dir, run_arguments(args))`` (``latest``: the newest complete
  checkpoint of this run; newer incomplete or other runs' ones are skipped with a warning), restored by
  ``load_checkpoint`` (refuses a checkpoint of another architecture, see ``model_fingerprint``, of
  another run, or an incomplete or corrupt one, with a ``ValueError`` naming the path and the cause).
  Call ``check_checkpoint_model(args.resume_from_checkpoint, model_fingerprint(model))`` right after
  building the model and ``check_checkpoint_run(args.resume_from_checkpoint, data=...)`` right after
  loading the data, to fail before the expensive work; pass ``data_fingerprint=`` to ``train``.
- Output folder: ``check_training_arguments`` refuses a non-empty ``--output_dir`` unless the run resumes
  or ``--overwrite_output_dir`` is given (then ``make_accelerator`` deletes the earlier run's checkpoints
  and results); wrap the run in ``removed_on_failure(args.output_dir)`` so that a run failing before its
  first checkpoint or model leaves no folder behind.
- ``save_final_model(accelerator, model, tokenizer, args, results, *, log_history=(), card=None)``:
  safetensors weights, tokenizer, ``all_results.json``, ``log_history.json``, model card
  (``card`` = keyword arguments of ``hf_lln.hub.write_model_card``), Hub upload with ``--push_to_hub``.
- ``decay_parameter_groups(model, weight_decay)``: the two AdamW groups.
"""

from hf_lln.recipes.training.arguments import (
    add_training_arguments,
    check_attn_implementation,
    check_model_source,
    check_training_arguments,
)
from hf_lln.recipes.training.checkpoint import (
    CheckpointError,
    TrainingProgress,
    check_checkpoint_model,
    check_checkpoint_run,
    data_fingerprint,
    find_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    model_fingerprint,
    run_arguments,
    save_checkpoint,
)
from hf_lln.recipes.training.final import LOG_HISTORY_FILE, RESULTS_FILE, save_final_model
from hf_lln.recipes.training.loop import (
    TrainingPlan,
    TrainingSummary,
    batch_seed,
    count_tokens,
    model_loss,
    plan_training,
    train,
    training_step,
)
from hf_lln.recipes.training.optim import decay_parameter_groups, make_optimizer, make_scheduler
from hf_lln.recipes.training.setup import (
    apply_memory_options,
    make_accelerator,
    model_init_kwargs,
    removed_on_failure,
)

__all__ = [
    "LOG_HISTORY_FILE",
    "RESULTS_FILE",
    "CheckpointError",
    "TrainingPlan",
    "TrainingProgress",
    "TrainingSummary",
    "add_training_arguments",
    "apply_memory_options",
    "batch_seed",
    "check_attn_implementation",
    "check_checkpoint_model",
    "check_checkpoint_run",
    "check_model_source",
    "check_training_arguments",
    "count_tokens",
    "data_fingerprint",
    "decay_parameter_groups",
    "find_checkpoint",
    "latest_checkpoint",
    "load_checkpoint",
    "make_accelerator",
    "make_optimizer",
    "make_scheduler",
    "model_fingerprint",
    "model_init_kwargs",
    "model_loss",
    "plan_training",
    "removed_on_failure",
    "run_arguments",
    "save_checkpoint",
    "save_final_model",
    "train",
    "training_step",
]
