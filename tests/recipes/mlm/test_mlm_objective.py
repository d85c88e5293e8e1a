"""MLM masking in the training step, and evaluation loss / perplexity."""

from __future__ import annotations

import math

import pytest
import torch
import torch.multiprocessing as mp
from accelerate import Accelerator
from transformers import (
    BertConfig,
    BertForMaskedLM,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaForSequenceClassification,
    RobertaTokenizer,
)

from hf_lln import LLNBertConfig, LLNBertForMaskedLM, LLNRobertaConfig, LLNRobertaForMaskedLM
from hf_lln.recipes.mlm import MaskedLanguageModeling, masked_lm_loss
from tests._distributed import exit_process, join_gloo_group


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


FAMILIES = {
    "bert": (BertConfig, BertForMaskedLM, {}),
    "roberta": (RobertaConfig, RobertaForMaskedLM, {}),
    "lln_bert": (LLNBertConfig, LLNBertForMaskedLM, {"lln_variant": "lln"}),
    "lln_roberta": (LLNRobertaConfig, LLNRobertaForMaskedLM, {"lln_variant": "lln_diag"}),
}


def float64_model(family: str) -> torch.nn.Module:
    """Two layers, no dropout, in training mode (the path the training step takes), in float64."""
    config_class, model_class, extra = FAMILIES[family]
    config = config_class(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=0,
        **extra,
    )
    torch.manual_seed(0)
    return model_class(config).double().train()


@pytest.mark.parametrize("family", FAMILIES)
def test_masked_positions_loss_and_gradients_equal_the_full_logit_ones(tokenizer, family):
    model = float64_model(family)
    torch.manual_seed(1)
    inputs = MaskedLanguageModeling(tokenizer, 0.15, seed=0).mask(batch_of(tokenizer, rows=6, length=40))
    assert (inputs["attention_mask"] == 0).any()  # padded rows

    reference = model(**inputs).loss
    reference.backward()
    expected = {name: param.grad.clone() for name, param in model.named_parameters()}
    model.zero_grad()
    loss = masked_lm_loss(model, inputs)
    loss.backward()

    # not bitwise: MKL rounds a row of a float64 matrix product differently for another number of rows,
    # and the head here multiplies only the labelled rows. Measured: the loss within 2 ulps (4e-16
    # relative), gradients within 1.2e-13 relative; a wrong position or count is off by far more
    assert loss.dtype == torch.float64
    torch.testing.assert_close(loss, reference, rtol=2e-15, atol=0)
    gradients = {name: param.grad for name, param in model.named_parameters()}
    torch.testing.assert_close(gradients, expected, rtol=1e-11, atol=1e-15)


def test_only_the_labelled_positions_reach_the_vocabulary_projection(tokenizer):
    model = float64_model("roberta")
    inputs = MaskedLanguageModeling(tokenizer, 0.15, seed=0).mask(batch_of(tokenizer, rows=4, length=40))
    rows = []
    model.get_output_embeddings().register_forward_hook(
        lambda module, args, output: rows.append(args[0].shape)
    )
    masked_lm_loss(model, inputs)
    assert rows == [torch.Size([int((inputs["labels"] != -100).sum()), 32])]


def test_a_batch_without_labels_gives_zero_loss_and_gradients(tokenizer):
    model = float64_model("bert")
    batch = batch_of(tokenizer, rows=2, length=16)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    loss = masked_lm_loss(model, {**inputs, "labels": torch.full_like(batch["input_ids"], -100)})
    loss.backward()
    assert loss.item() == 0.0
    assert all(torch.count_nonzero(param.grad) == 0 for param in model.parameters())


def test_a_model_without_masked_lm_head_is_named(tokenizer):
    model = RobertaForSequenceClassification(
        RobertaConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    )
    batch = batch_of(tokenizer, rows=2, length=16)
    inputs = {"input_ids": batch["input_ids"], "labels": batch["input_ids"]}
    with pytest.raises(ValueError, match="model: RobertaForSequenceClassification has no masked-LM head"):
        masked_lm_loss(model, inputs)


def _ddp_gradients(rank: int, folder: str) -> None:
    """One of two gloo processes: ``masked_lm_loss`` through the accelerate-prepared (DDP) model, backward,
    the gradients saved."""
    join_gloo_group(rank, 2, folder)
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(float64_model("lln_roberta"))
    assert isinstance(model, torch.nn.parallel.DistributedDataParallel)
    inputs = torch.load(f"{folder}/inputs.pt")[rank]
    accelerator.backward(masked_lm_loss(model, inputs))
    grads = {name: param.grad for name, param in accelerator.unwrap_model(model).named_parameters()}
    torch.save(grads, f"{folder}/grads_{rank}.pt")
    accelerator.end_training()
    exit_process()


@pytest.mark.slow
def test_ddp_averages_the_masked_positions_gradients_over_processes(tmp_path, tokenizer):
    torch.manual_seed(0)
    objective = MaskedLanguageModeling(tokenizer, 0.15, seed=0)
    inputs = [objective.mask(batch_of(tokenizer, rows=3, length=40)) for _ in range(2)]
    torch.save(inputs, tmp_path / "inputs.pt")
    mp.spawn(_ddp_gradients, args=(str(tmp_path),), nprocs=2, join=True)

    # reference: each process's batch on its own, gradients averaged (what DDP's all-reduce gives)
    per_process = []
    for rank_inputs in inputs:
        model = float64_model("lln_roberta")
        masked_lm_loss(model, rank_inputs).backward()
        per_process.append({name: param.grad for name, param in model.named_parameters()})
    expected = {name: (per_process[0][name] + per_process[1][name]) / 2 for name in per_process[0]}
    for rank in range(2):
        torch.testing.assert_close(
            torch.load(tmp_path / f"grads_{rank}.pt"), expected, rtol=1e-12, atol=1e-15
        )
