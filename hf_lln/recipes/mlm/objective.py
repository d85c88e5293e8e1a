"""The masked-LM objective: masking inside the training step, the loss at the masked positions only, and
evaluation loss / perplexity."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping

import torch
from accelerate import Accelerator
from accelerate.utils import extract_model_from_parallel
from tqdm.auto import tqdm
from transformers import DataCollatorForLanguageModeling

from hf_lln.recipes.training.loop import Batch

IGNORE_INDEX = -100  # the label of a position without a prediction (Transformers' convention)


def mlm_head(model: torch.nn.Module) -> torch.nn.Module:
    """The masked-LM head of ``model``: the child module holding the vocabulary projection (``lm_head`` of
    RoBERTa, ``cls`` of BERT, and their LLN classes), found through DDP/FSDP/DeepSpeed/``torch.compile``
    wrappers. Raises ``ValueError`` for a model without one."""
    inner = extract_model_from_parallel(model)
    # accelerate >= 1.2 keeps a torch.compile wrapper by default, and its only child is the whole model
    inner = getattr(inner, "_orig_mod", inner)
    decoder = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if decoder is not None:
        for child in inner.children():
            if any(module is decoder for module in child.modules()):
                return child
    raise ValueError(
        f"model: {type(inner).__name__} has no masked-LM head "
        "(a child module holding its get_output_embeddings())"
    )


@contextlib.contextmanager
def head_on_rows(
    head: torch.nn.Module, positions: torch.Tensor, sequence_shape: torch.Size
) -> Iterator[None]:
    """While active, ``head`` sees only the rows ``positions`` of its input.

    ``positions: (n,)`` indexes the flattened ``(batch * seq)`` positions; the head's first argument
    ``(batch, seq, hidden)`` becomes ``(n, hidden)``, so it returns ``(n, vocab)``. The head is applied per
    position (dense, GELU, LayerNorm, decoder), so its rows are those it would compute at those positions.
    """

    def select_rows(module: torch.nn.Module, args: tuple) -> tuple:
        if not args or args[0].shape[:2] != sequence_shape:
            raise ValueError(
                f"model: its masked-LM head {type(module).__name__} was not called with the sequence output "
                f"(batch, seq, hidden) = ({', '.join(map(str, sequence_shape))}, hidden) as first argument"
            )
        return (args[0].flatten(0, 1).index_select(0, positions), *args[1:])

    handle = head.register_forward_pre_hook(select_rows)
    try:
        yield
    finally:
        handle.remove()


def masked_token_losses(
    model: torch.nn.Module, inputs: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy at every labelled position, with the vocabulary projected at those positions only.

    ``inputs``: the model's inputs plus ``labels: (batch, seq)`` (``-100`` where nothing is predicted).
    Returns ``token_loss: (n,)`` (float32, or float64 for a float64 model) and ``positions: (n,)``, the
    labelled positions as indices into the flattened ``(batch * seq)``, in order.

    Projecting every position onto the vocabulary took 62 of the 127 ms of a RoBERTa-base step (H200,
    32,768 tokens), whereas only ``mlm_probability`` of the positions carry a label.

    The model still runs through its own ``forward``, called on ``model`` itself: the DDP/FSDP/DeepSpeed
    wrapper that ``accelerator.prepare`` returns, around the forward accelerate wrapped in autocast. A
    forward pre-hook on the head (:func:`mlm_head`, :func:`head_on_rows`) swaps the head's input
    ``(batch, seq, hidden)`` for its labelled rows ``(n, hidden)``, so ``logits`` come back ``(n, vocab)``.
    Calling the sub-modules instead (``model.module.roberta``, then ``model.module.lm_head``) would skip the
    wrapper's forward: DDP would not prepare its gradient reduction and every process would step on its
    own gradients, FSDP would not gather the sharded parameters, and mixed precision would lose
    accelerate's autocast. Every parameter still takes part in the graph (the head runs on ``n`` rows,
    possibly none), so DDP without ``find_unused_parameters`` reduces every gradient as usual.
    """
    labels = inputs["labels"]
    positions = torch.nonzero(labels.flatten() != IGNORE_INDEX).squeeze(1)
    model_inputs = {name: value for name, value in inputs.items() if name != "labels"}
    with head_on_rows(mlm_head(model), positions, labels.shape):
        logits = model(**model_inputs).logits
    # half-precision logits are scored in float32 (as the full-logit loss under autocast is)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    targets = labels.flatten().index_select(0, positions)
    return torch.nn.functional.cross_entropy(logits, targets, reduction="none"), positions


def masked_lm_loss(model: torch.nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over the labelled positions, projecting only those onto the vocabulary.

    ``inputs``: ``input_ids``, ``attention_mask``, ... and ``labels`` ``(batch, seq)``. The same loss as
    ``model(**inputs).loss`` (up to the rounding of the head's matrix products on fewer rows), computed
    as :func:`masked_token_losses` explains. A batch with no labelled position gives 0 with zero gradients
    where the full-logit loss gives NaN, so such a batch cannot poison the weights.
    """
    token_loss, positions = masked_token_losses(model, inputs)
    return token_loss.sum() / max(positions.numel(), 1)


class MaskedLanguageModeling:
    """BERT's masking (``mlm_probability`` of the tokens: 80% ``<mask>``, 10% random, 10% kept).

    Masks are drawn from the global CPU RNG when the step runs (``hf_lln.recipes.training.train`` seeds it
    per batch), never in a collate function, so a resumed run draws the same masks. Evaluation masks
    each sequence from a generator seeded by ``seed`` and the sequence's own tokens, so the validation
    loss does not depend on how the split is batched or sharded across processes.
    """

    def __init__(self, tokenizer, mlm_probability: float, seed: int):
        if tokenizer.mask_token is None:
            raise ValueError("the tokenizer has no mask token: masked language modeling needs one")
        self.collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability)
        self.seed = seed

    def mask(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Model inputs with masked ``input_ids`` and ``labels`` (-100 except at masked tokens)."""
        device = batch["input_ids"].device
        input_ids, labels = self.collator.torch_mask_tokens(
            batch["input_ids"].cpu().clone(), batch["special_tokens_mask"].cpu()
        )
        return {
            "input_ids": input_ids.to(device),
            "attention_mask": batch["attention_mask"],
            "labels": labels.to(device),
        }

    def loss(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """``compute_loss`` for ``hf_lln.recipes.training.train``: mean cross-entropy over masked tokens, the
        vocabulary projected at the masked tokens only (:func:`masked_lm_loss`)."""
        return masked_lm_loss(model, self.mask(batch))

    def evaluation_mask(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``mask`` with each row's masks fixed by ``seed`` and the row's real tokens (not by its batch)."""
        input_ids, special = batch["input_ids"].cpu().clone(), batch["special_tokens_mask"].cpu()
        labels = torch.full_like(input_ids, -100)
        lengths = batch["attention_mask"].sum(dim=1).tolist()
        for row, length in enumerate(lengths):
            tokens = input_ids[row, :length]
            fingerprint = int((tokens * torch.arange(1, length + 1)).sum()) % 2**31
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed + fingerprint)
                masked, row_labels = self.collator.torch_mask_tokens(
                    tokens[None].clone(), special[row : row + 1, :length]
                )
            input_ids[row, :length], labels[row, :length] = masked[0], row_labels[0]
        device = batch["input_ids"].device
        return {
            "input_ids": input_ids.to(device),
            "attention_mask": batch["attention_mask"],
            "labels": labels.to(device),
        }

    @torch.no_grad()
    def evaluate(self, accelerator: Accelerator, model: torch.nn.Module, dataloader) -> dict[str, float]:
        """``loss`` (mean over all masked tokens of the split) and ``perplexity`` = exp(loss)."""
        model.eval()
        loss_sums, counts = [], []
        for batch in tqdm(
            dataloader, desc="evaluate", leave=False, disable=not accelerator.is_local_main_process
        ):
            inputs = self.evaluation_mask(batch)
            labels = inputs["labels"]
            token_loss, positions = masked_token_losses(model, inputs)
            # back to (batch, seq) with zeros elsewhere, then per-row sums: gather_for_metrics drops the rows
            # it duplicated to even out the last batch, and index_copy (one write per position, unlike
            # atomic index_add) keeps the sums bitwise repeatable on GPU
            row_loss = token_loss.new_zeros(labels.numel()).index_copy(0, positions, token_loss)
            row_loss = row_loss.view(labels.shape).sum(1)
            sums, count = accelerator.gather_for_metrics((row_loss, (labels != IGNORE_INDEX).sum(1)))
            loss_sums.append(sums)
            counts.append(count)
        loss = (torch.cat(loss_sums).sum() / torch.cat(counts).sum().clamp(min=1)).item()
        return {"loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf}
