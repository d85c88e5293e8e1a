"""MLM masking in the training step, and evaluation loss / perplexity."""

from __future__ import annotations

import math

import pytest
import torch
from accelerate import Accelerator
from transformers import RobertaConfig, RobertaForMaskedLM, RobertaTokenizer

from hf_lln.recipes.mlm import MaskedLanguageModeling


@pytest.fixture(scope="module")
def tokenizer():
    vocab = {"<pad>": 0, "<unk>": 1, "<s>": 2, "</s>": 3, "<mask>": 4}
    vocab.update({f"w{i}": i for i in range(5, 100)})
    return RobertaTokenizer(vocab=vocab, merges=[])


def batch_of(tokenizer, rows=64, length=50):
    input_ids = torch.randint(5, 100, (rows, length))
    input_ids[:, 0], input_ids[:, -1] = tokenizer.bos_token_id, tokenizer.eos_token_id
    input_ids[: rows // 2, -10:] = tokenizer.pad_token_id
    special = (input_ids < 5).long()
    return {"input_ids": input_ids, "attention_mask": (input_ids != 0).long(), "special_tokens_mask": special}


def tiny_model() -> RobertaForMaskedLM:
    config = RobertaConfig(
        vocab_size=100,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        pad_token_id=0,
        max_position_embeddings=60,
    )
    return RobertaForMaskedLM(config).eval()


def test_masking_follows_bert_rules(tokenizer):
    torch.manual_seed(0)
    batch = batch_of(tokenizer)
    original = batch["input_ids"].clone()
    inputs = MaskedLanguageModeling(tokenizer, 0.15, seed=0).mask(batch)
    labels, masked_ids = inputs["labels"], inputs["input_ids"]
    chosen = labels != -100
    special = batch["special_tokens_mask"].bool()
    assert not (chosen & special).any()
    assert torch.equal(labels[chosen], batch["input_ids"][chosen])
    assert torch.equal(masked_ids[~chosen], batch["input_ids"][~chosen])
    share = chosen.sum() / (~special).sum()
    assert 0.12 < share < 0.18
    replaced = (masked_ids[chosen] == tokenizer.mask_token_id).float().mean()
    assert 0.72 < replaced < 0.88
    assert torch.equal(batch["input_ids"], original)  # masking works on a copy


def test_evaluation_is_the_mean_over_masked_tokens_and_repeatable(tokenizer):
    torch.manual_seed(0)
    model = tiny_model()
    batches = [batch_of(tokenizer, rows=4) for _ in range(3)]
    objective = MaskedLanguageModeling(tokenizer, 0.15, seed=3)
    accelerator = Accelerator(cpu=True)
    metrics = objective.evaluate(accelerator, model, batches)
    assert objective.evaluate(accelerator, model, batches) == metrics
    # reference: the same evaluation masks, Transformers' own loss weighted by masked tokens
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            inputs = objective.evaluation_mask(batch)
            n = int((inputs["labels"] != -100).sum())
            total += model(**inputs).loss.item() * n
            count += n
    assert metrics["loss"] == pytest.approx(total / count, rel=1e-5)
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]))
    assert metrics["loss"] == pytest.approx(math.log(100), abs=0.5)


def test_evaluation_masks_do_not_depend_on_batching(tokenizer):
    """The same rows split into other batches (as when several processes shard the split) give the same loss."""
    torch.manual_seed(0)
    model = tiny_model()
    rows = batch_of(tokenizer, rows=12)
    objective = MaskedLanguageModeling(tokenizer, 0.15, seed=3)
    accelerator = Accelerator(cpu=True)

    def split(size, order):
        return [{key: value[order[i : i + size]] for key, value in rows.items()} for i in range(0, 12, size)]

    whole = objective.evaluate(accelerator, model, split(12, torch.arange(12)))["loss"]
    shuffled = objective.evaluate(accelerator, model, split(3, torch.randperm(12)))["loss"]
    assert shuffled == pytest.approx(whole, rel=1e-6)
