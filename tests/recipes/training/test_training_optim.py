"""AdamW groups and the learning-rate schedule."""

from __future__ import annotations

import argparse

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from hf_lln.recipes.training import decay_parameter_groups, make_optimizer, make_scheduler, model_init_kwargs


def tiny_bert():
    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    return BertForMaskedLM(config)


def test_biases_and_layer_norms_are_not_decayed():
    model = tiny_bert()
    groups = decay_parameter_groups(model, 0.1)
    ids = {id(p): name for name, p in model.named_parameters()}
    decayed = {ids[id(p)] for p in groups[0]["params"]}
    exempt = {ids[id(p)] for p in groups[1]["params"]}
    # the rule of Transformers' examples, written by name for BERT
    expected_exempt = {n for n, _ in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n}
    assert exempt == expected_exempt
    assert decayed == set(ids.values()) - expected_exempt
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert "bert.embeddings.word_embeddings.weight" in decayed


def test_warmup_then_linear_decay():
    model = torch.nn.Linear(2, 2)
    args = argparse.Namespace(
        learning_rate=1.0,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        lr_scheduler_type="linear",
        num_warmup_steps=2,
    )
    optimizer = make_optimizer(model, args)
    scheduler = make_scheduler(optimizer, args, num_training_steps=6)
    rates = []
    for _ in range(6):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.0, 0.5, 1.0, 0.75, 0.5, 0.25])


def test_half_precision_checkpoint_loads_float32_master_weights(tmp_path):
    """A checkpoint stored in fp16 trains from float32 weights (Transformers 5 would keep fp16 by default)."""
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    BertForSequenceClassification(config).half().save_pretrained(tmp_path)
    args = argparse.Namespace(attn_implementation="sdpa")
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path, **model_init_kwargs(args))
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_the_cuda_optimizer_is_fused_and_steps_as_the_default_one():
    """Training on CUDA gets PyTorch's fused AdamW; its step is the default implementation's (run here on the
    CPU, where both exist)."""
    args = argparse.Namespace(
        learning_rate=0.1, weight_decay=0.01, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8
    )
    models = [torch.nn.Linear(4, 3) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    optimizers = [make_optimizer(models[0], args), make_optimizer(models[1], args, torch.device("cuda"))]
    assert [o.defaults["fused"] for o in optimizers] == [None, True]
    inputs = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    initial = models[0].weight.detach().clone()
    for _ in range(3):
        for model, optimizer in zip(models, optimizers, strict=True):
            model(inputs).square().sum().backward()
            optimizer.step()
            optimizer.zero_grad()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert (models[1].weight - initial).abs().min() > 1e-3
