"""The masked-LM objective: masking inside the training step, and evaluation loss / perplexity."""

from __future__ import annotations

import math

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import DataCollatorForLanguageModeling

from hf_lln.recipes.training.loop import Batch


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
        """``compute_loss`` for ``hf_lln.recipes.training.train``: mean cross-entropy over masked tokens."""
        return model(**self.mask(batch)).loss

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
            labels = inputs.pop("labels")
            logits = model(**inputs).logits.float()
            token_loss = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), labels, ignore_index=-100, reduction="none"
            )
            sums, count = accelerator.gather_for_metrics((token_loss.sum(1), (labels != -100).sum(1)))
            loss_sums.append(sums)
            counts.append(count)
        loss = (torch.cat(loss_sums).sum() / torch.cat(counts).sum().clamp(min=1)).item()
        return {"loss": loss, "perplexity": math.exp(loss) if loss < 700 else math.inf}
