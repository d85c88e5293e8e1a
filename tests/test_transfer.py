"""Attention transfer (``hf_lln.transfer``) and ``hf-lln convert --transfer`` on tiny random BERT/RoBERTa models."""

from __future__ import annotations

import itertools
import math
import re

import pytest
import torch
import transformers
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from huggingface_hub import ModelCard
from huggingface_hub.errors import StrictDataclassError
from transformers import (
    BertConfig,
    BertModel,
    BertTokenizer,
    DistilBertConfig,
    DistilBertModel,
    RobertaConfig,
)

import hf_lln
from hf_lln.cli import main
from hf_lln.convert import convert_checkpoint
from hf_lln.integration.attention import ATTENTION_FUNCTIONS
from hf_lln.models import AUTO_MODEL_CLASSES
from hf_lln.ops import reference
from hf_lln.transfer import (
    TransferSettings,
    attention_parameters,
    encoder_layers,
    load_texts,
    text_batches,
    transfer_attention,
)
from hf_lln.transfer.loop import TEACHER_CACHE_BYTES, TransferRun, clip_each_group
from hf_lln.transfer.matching import (
    attention_options,
    layer_loss,
    lln_log_probs,
    split_heads,
    student_attention,
    student_log_probs,
    teacher_attention,
)
from hf_lln.transfer.options import TextTransfer, transfer_options
from tests._tiny import TINY
from tests.test_hub import assert_remote_loads

FIXTURE_SENTENCES = [
    "it 's a charming and often affecting journey .",
    "unflinchingly bleak and desperate",
    "allows us to hope that nolan is poised to embark a major career as a commercial yet inventive filmmaker .",
    "the acting , costumes , music , cinematography and sound are all astounding given the production 's "
    "austere locales .",
    "it 's slow -- very , very slow .",
    "although laced with humor and a few fanciful touches , the film is a refreshingly serious look at young "
    "women .",
    "a sometimes tedious film .",
    "or doing last year 's taxes with your ex-wife .",
]


def sharpen(model):
    """Query and key weights of std 0.3: the 0.02-std initialisation gives nearly uniform attention rows (for
    softmax and LLN alike), where the variants differ from softmax far less than in a trained model."""
    with torch.no_grad():
        for layer in encoder_layers(model):
            for linear in (layer.attention.self.query, layer.attention.self.key):
                linear.weight.normal_(0, 0.3)
    return model


def tiny_pair(variant: str, family: str = "bert", shape: dict | None = None, **settings):
    """A random softmax teacher and the student with its weights running ``variant``; ``shape`` overrides fields of
    the tiny config (head count, hidden size)."""
    classes = AUTO_MODEL_CLASSES[f"lln_{family}"]
    config = {**TINY, **({"pad_token_id": 1} if family == "roberta" else {}), **(shape or {})}
    torch.manual_seed(0)
    student = sharpen(classes["AutoModel"](classes["AutoConfig"](**config, lln_variant=variant, **settings)))
    teacher = (transformers.RobertaModel if family == "roberta" else BertModel)(
        (RobertaConfig if family == "roberta" else BertConfig)(**config, attn_implementation="sdpa")
    )
    teacher.load_state_dict(student.state_dict(), strict=False)
    return teacher, student


def random_batches(count=6, batch=4, seq=12, seed=0, extra_padding=0):
    """``count`` batches of random ids with a few rows ending in padding; ``extra_padding`` more pad columns."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        ids = torch.randint(5, TINY["vocab_size"], (batch, seq), generator=generator)
        mask = torch.ones(batch, seq, dtype=torch.long)
        mask[1, seq - 4 :] = 0
        mask[3, seq // 2 :] = 0
        ids = ids.masked_fill(mask == 0, 0)
        if extra_padding:
            ids = torch.cat([ids, torch.zeros(batch, extra_padding, dtype=torch.long)], 1)
            mask = torch.cat([mask, torch.zeros(batch, extra_padding, dtype=torch.long)], 1)
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches


SETTINGS = dict(steps=40, end_to_end_steps=0, learning_rate=1e-2, eval_batches=2)
STEPS_ON_MINILM = 30


@pytest.mark.parametrize(
    ("variant", "family", "train", "loss"),
    [
        ("lln", "bert", "qk", "output"),
        ("lln", "roberta", "qkvo", "weights"),
        ("lln_diag", "bert", "lora", "both"),
        ("cheap_linear", "bert", "qk", "output"),
        ("performer", "roberta", "qk", "weights"),
        ("cosformer", "bert", "qkvo", "output"),
        ("linear_elu", "bert", "qk", "weights"),
        ("lln_diag", "roberta", "qk_temperature", "weights"),
    ],
)
def test_transfer_lowers_the_matching_loss(variant, family, train, loss):
    teacher, student = tiny_pair(variant, family)
    settings = TransferSettings(**SETTINGS, train=train, loss=loss)
    report = transfer_attention(teacher, student, random_batches(), settings)
    before, after = sum(report.layer_before), sum(report.layer_after)
    assert after < 0.7 * before, report.table()
    assert all(param.requires_grad for param in student.parameters())
    assert not any(param.requires_grad for param in teacher.parameters())


@pytest.mark.parametrize(
    ("variant", "mixed_precision", "shape"),
    [
        ("lln", "bf16", {}),
        ("lln_diag", "bf16", {"num_attention_heads": 1}),  # head size 32
        ("lln", "no", {"hidden_size": 48, "num_attention_heads": 2}),  # head size 24
        ("lln_diag", "no", {"hidden_size": 48, "num_attention_heads": 6}),  # head size 8
    ],
)
def test_transfer_in_half_precision_and_at_other_head_sizes(variant, mixed_precision, shape):
    """Under bf16 autocast the losses stay finite, the trained weights stay float32 and the loss still falls; head
    sizes other than the tiny config's train too."""
    teacher, student = tiny_pair(variant, shape=shape)
    AcceleratorState._reset_state(True)  # accelerate keeps one precision per process
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=True)
    report = transfer_attention(
        teacher, student, random_batches(), TransferSettings(**SETTINGS), accelerator=accelerator
    )
    assert all(math.isfinite(value) for value in report.layer_before + report.layer_after)
    assert sum(report.layer_after) < 0.7 * sum(report.layer_before), report.table()
    assert {param.dtype for param in student.parameters()} == {torch.float32}
    AcceleratorState._reset_state(True)


@pytest.mark.gpu
@pytest.mark.parametrize(
    ("variant", "mixed_precision"),
    [("lln", "bf16"), ("lln_diag", "fp16"), ("lln_diag", "no"), ("performer", "bf16")],
)
def test_transfer_on_cuda(variant, mixed_precision):
    """On the GPU (fused kernels, fused AdamW, fp16's gradient scaler): both stages lower their losses, as the same
    transfer in float32 on the CPU does."""
    reports = []
    for cpu, precision in ((True, "no"), (False, mixed_precision)):
        teacher, student = tiny_pair(variant, shape={"hidden_size": 64, "num_attention_heads": 2})
        AcceleratorState._reset_state(True)
        accelerator = Accelerator(mixed_precision=precision, cpu=cpu)
        settings = TransferSettings(**{**SETTINGS, "end_to_end_steps": 20, "end_to_end_train": "all"})
        reports.append(
            transfer_attention(teacher, student, random_batches(), settings, accelerator=accelerator)
        )
        assert {param.device.type for param in student.parameters()} == {"cpu" if cpu else "cuda"}
    AcceleratorState._reset_state(True)
    for report in reports:
        assert all(math.isfinite(value) for value in report.layer_after)
        assert sum(report.layer_after) < 0.7 * sum(report.layer_before), report.table()
        assert report.hidden_after < report.hidden_before
    on_cpu, on_gpu = reports
    assert on_gpu.layer_before == pytest.approx(on_cpu.layer_before, rel=0.05)
    assert on_gpu.hidden_after == pytest.approx(on_cpu.hidden_after, rel=0.5)


@pytest.mark.parametrize(
    ("loss", "train"), [("final", "attention"), ("layers", "all"), ("pooled", "attention"), ("final", "all")]
)
def test_end_to_end_stage_lowers_the_final_hidden_state_error(loss, train):
    """Every end-to-end loss brings the final hidden states closer; ``all`` trains the feed-forward blocks too,
    ``attention`` only the ``train`` projections; the embeddings never move."""
    teacher, student = tiny_pair("lln")
    student.pooler.requires_grad_(False)  # a user's choice, kept
    start = {name: param.detach().clone() for name, param in student.named_parameters()}
    settings = TransferSettings(
        steps=0,
        end_to_end_steps=40,
        learning_rate=1e-2,
        end_to_end_learning_rate=1e-2 if train == "attention" else 3e-3,
        train="qkvo",
        end_to_end_loss=loss,
        end_to_end_train=train,
        eval_batches=2,
    )
    report = transfer_attention(teacher, student, random_batches(), settings)

    def objective(hidden, cosine):  # what the stage minimises ("layers": measured on the last layer)
        return hidden + (1 - cosine if loss == "pooled" else 0)

    before = objective(report.hidden_before, report.cosine_before)
    assert objective(report.hidden_after, report.cosine_after) < 0.7 * before, report.table()
    assert report.hidden_after < report.hidden_before and report.cosine_after > report.cosine_before
    moved = {name for name, param in student.named_parameters() if not torch.equal(param, start[name])}
    feed_forward = {
        name for name in start if ".intermediate." in name or re.search(r"\.output\.dense\.", name)
    }
    attention = {
        name for name in start if re.search(r"attention\.(self\.(query|key|value)|output\.dense)\.", name)
    }
    feed_forward -= attention
    assert moved >= attention and (moved >= feed_forward if train == "all" else moved == attention)
    assert not any(name.startswith("embeddings.") for name in moved)
    # nothing left behind for the user's next optimizer step to add to its own gradients
    assert all(param.grad is None for param in student.parameters())
    assert {name for name, param in student.named_parameters() if not param.requires_grad} == {
        name for name in start if name.startswith("pooler.")
    }


def test_layers_loss_is_the_mean_error_of_every_layer_output():
    """The ``layers`` end-to-end loss, recomputed from both models' hidden states."""
    teacher, student = tiny_pair("lln")
    inputs = random_batches(count=1)[0]
    run = TransferRun(teacher, student, TransferSettings(end_to_end_loss="layers"), Accelerator(cpu=True))
    with torch.no_grad():
        got = run.end_to_end_loss(inputs)
        ours = student(**inputs, output_hidden_states=True).hidden_states
        theirs = teacher(**inputs, output_hidden_states=True).hidden_states
    weight = inputs["attention_mask"][..., None].float()
    errors = [
        ((s - t) ** 2 * weight).sum() / (t**2 * weight).sum()
        for s, t in zip(ours[1:], theirs[1:], strict=True)
    ]
    assert len(errors) == TINY["num_hidden_layers"] and min(errors) > 0
    torch.testing.assert_close(got, torch.stack(errors).mean())


def test_learnable_mix_weights_train_with_the_output_loss():
    teacher, student = tiny_pair("lln_diag", lln_mix_mode="learnable_scale")
    mix = [p.detach().clone() for n, p in student.named_parameters() if ".lln_mix." in n]
    report = transfer_attention(teacher, student, random_batches(), TransferSettings(**SETTINGS))
    assert report.settings.loss == "output"  # what "auto" gives a per-channel mix
    assert sum(report.layer_after) < 0.7 * sum(report.layer_before)
    trained = [p for n, p in student.named_parameters() if ".lln_mix." in n]
    assert all(not torch.equal(a, b) for a, b in zip(mix, trained, strict=True))


def test_dense_matrices_of_the_weight_loss_are_the_ops_that_run():
    """``student_log_probs(...).exp() @ v`` equals the attention function for every variant with a distribution,
    and the LLN product form equals the reference's logsumexp."""
    hidden = torch.randn(2, 9, TINY["hidden_size"], generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    for variant in ("lln", "lln_diag", "performer", "linear_elu", "cosformer"):
        _, student = tiny_pair(variant)
        self_attention = student.encoder.layer[1].attention.self
        q, k, v = split_heads(self_attention, hidden)
        expected, _ = ATTENTION_FUNCTIONS[variant](
            self_attention, q, k, v, mask, scaling=self_attention.scaling
        )
        dense = (student_log_probs(self_attention, q, k, mask).exp() @ v).transpose(1, 2)
        torch.testing.assert_close(dense[mask], expected[mask], rtol=1e-5, atol=1e-6, msg=variant)
    q, k = torch.randn(2, 2, 9, 16, dtype=torch.float64), torch.randn(2, 2, 9, 16, dtype=torch.float64)
    visible = mask[:, None, :, None] & mask[:, None, None, :]
    ours = lln_log_probs(q, k, mask, scale=0.25, stats="per_sequence").exp()
    torch.testing.assert_close(
        ours[visible.expand_as(ours)], reference.lln_matrix(q, k, mask, scale=0.25)[visible.expand_as(ours)]
    )


@pytest.mark.parametrize(
    ("variant", "groups"), [("lln", [[0, 1]]), ("lln_diag", [[0, 1]]), ("performer", [[0], [1]])]
)
def test_stacked_weight_losses_equal_each_layer_on_its_own(variant, groups):
    """On a GPU the layer stage computes every layer's weight loss in one stacked pass; each loss and each layer's
    gradient equal those of that layer alone (``teacher_attention``/``student_attention``). Performer draws its random
    features per layer, so its layers are not stacked."""
    teacher, student = tiny_pair(variant)
    inputs = random_batches(count=1)[0]
    mask = inputs["attention_mask"].bool()
    run = TransferRun(teacher, student, TransferSettings(loss="weights"), Accelerator(cpu=True))
    assert run.groups == [[0], [1]]  # the CPU computes layer by layer
    run.groups = run.layer_groups(stack=True)  # as on a GPU
    assert run.groups == groups
    hidden_states = run.teacher_pass(inputs)
    stacked = run.layer_losses(inputs, hidden_states)
    pairs = list(zip(encoder_layers(teacher), encoder_layers(student), strict=True))
    alone = [
        layer_loss("weights", student_attention(s, hidden_states[i], mask, "weights"),
                   teacher_attention(t, hidden_states[i], mask, "weights"), mask)
        for i, (t, s) in enumerate(pairs)
    ]  # fmt: skip
    torch.testing.assert_close(torch.stack(stacked), torch.stack(alone))
    queries = [layer.attention.self.query.weight for layer in encoder_layers(student)]
    for ours, theirs in zip(stacked, alone, strict=True):
        torch.testing.assert_close(
            torch.autograd.grad(ours, queries, retain_graph=True, materialize_grads=True),
            torch.autograd.grad(theirs, queries, retain_graph=True, materialize_grads=True),
        )


@pytest.mark.parametrize(("variant", "family"), [("lln", "bert"), ("lln_diag", "roberta")])
def test_weight_losses_on_groups_of_similar_length_equal_the_whole_batchs(variant, family):
    """On the CPU the layer stage computes the weight losses on groups of rows of similar length, each cut after
    its last real token: the losses and the gradients are the whole padded batch's."""
    teacher, student = tiny_pair(variant, family)
    generator = torch.Generator().manual_seed(3)
    lengths = torch.tensor([12, 3, 7, 0, 12, 5, 9, 1, 2])  # one row without a real token
    mask = (torch.arange(16)[None, :] < lengths[:, None]).long()  # four columns of padding past the longest
    ids = torch.randint(5, TINY["vocab_size"], mask.shape, generator=generator).masked_fill(mask == 0, 1)
    inputs = {"input_ids": ids, "attention_mask": mask}
    run = TransferRun(teacher, student, TransferSettings(loss="weights"), Accelerator(cpu=True))
    assert run.length_groups == 4
    hidden_states = run.teacher_pass(inputs)
    grouped = run.layer_losses(inputs, hidden_states)
    whole = run.weight_losses(hidden_states, mask.bool())
    torch.testing.assert_close(torch.stack(grouped), torch.stack(whole), rtol=1e-5, atol=1e-7)
    weights = [
        projection.weight
        for layer in encoder_layers(student)
        for projection in (layer.attention.self.query, layer.attention.self.key)
    ]
    for ours, theirs in zip(grouped, whole, strict=True):
        for a, b in zip(
            torch.autograd.grad(ours, weights, retain_graph=True, materialize_grads=True),
            torch.autograd.grad(theirs, weights, retain_graph=True, materialize_grads=True),
            strict=True,
        ):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("variant", ["lln", "lln_diag"])
def test_a_sequence_without_real_tokens_changes_no_weight_loss(variant):
    """A batch mate without a real token adds nothing to the weight losses and keeps them and their gradients
    finite (its softmax and LLN rows have no key to normalise over)."""
    teacher, student = tiny_pair(variant)
    ids = torch.randint(5, TINY["vocab_size"], (2, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1] * 5 + [0] * 3, [0] * 8])
    run = TransferRun(teacher, student, TransferSettings(loss="weights"), Accelerator(cpu=True))
    hidden_states = run.teacher_pass({"input_ids": ids, "attention_mask": mask})
    pair = run.weight_losses(hidden_states, mask.bool())
    alone = run.weight_losses([h[:1] for h in hidden_states], mask[:1].bool())
    torch.testing.assert_close(torch.stack(pair), torch.stack(alone))
    weight = encoder_layers(student)[0].attention.self.query.weight
    assert torch.autograd.grad(pair[0], weight)[0].isfinite().all()


@pytest.mark.parametrize(
    ("variant", "settings", "loss"),
    [("performer", {}, "weights"), ("lln", {"lln_stats": "global"}, "weights"), ("lln", {}, "output")],
)
def test_rows_are_grouped_only_where_they_depend_on_their_own_sequence_alone(variant, settings, loss):
    """Performer's rows are not checked for it, global statistics pool the batch, the output loss has no groups."""
    teacher, student = tiny_pair(variant, **settings)
    assert (
        TransferRun(teacher, student, TransferSettings(loss=loss), Accelerator(cpu=True)).length_groups == 1
    )


@pytest.mark.parametrize("variant", ["lln", "lln_diag", "linear_elu"])
def test_weight_loss_on_a_sample_of_queries_is_the_mean_over_their_rows(variant):
    """With ``queries``, the weight loss is the mean KL of those query rows alone (the real ones: a position past a
    row's length is padding there), computed from the dense reference matrices; the stacked GPU path gives the
    same losses and gradients as each layer alone."""
    teacher, student = tiny_pair(variant)
    inputs = random_batches(count=1)[0]
    mask = inputs["attention_mask"].bool()
    queries = torch.tensor([7, 0, 10, 3])  # 7 and 10 are padding in row 3, 10 in row 1
    run = TransferRun(teacher, student, TransferSettings(loss="weights"), Accelerator(cpu=True))
    hidden_states = run.teacher_pass(inputs)
    hidden = hidden_states[1]
    t, s = encoder_layers(teacher)[1].attention.self, encoder_layers(student)[1].attention.self
    with torch.no_grad():
        got = layer_loss(
            "weights",
            student_attention(encoder_layers(student)[1], hidden, mask, "weights", queries),
            teacher_attention(encoder_layers(teacher)[1], hidden, mask, "weights", queries),
            mask,
            queries,
        )
        q, k = (x.double() for x in split_heads(t, hidden, "qk"))
        visible = reference.visible_keys(mask, *mask.shape, False, mask.device)
        teacher_probs = reference.softmax_rows(t.scaling * q @ k.transpose(-1, -2), visible)
        q, k = (x.double() for x in split_heads(s, hidden, "qk"))
        options = attention_options(s)
        student_probs = {
            "lln": lambda: reference.lln_matrix(q, k, mask, scale=s.scaling),
            "lln_diag": lambda: reference.lln_diag_matrix(
                q, k, mask, block_size=options["block_size"], scale=s.scaling
            ),
            "linear_elu": lambda: reference.linear_elu_matrix(q, k, mask),
        }[variant]()
    kl = torch.where(
        visible, torch.special.xlogy(teacher_probs, teacher_probs) - teacher_probs * student_probs.log(), 0
    ).sum(-1)[:, :, queries]
    real = mask[:, None, queries].expand_as(kl)
    torch.testing.assert_close(got.double(), kl[real].mean(), rtol=1e-4, atol=1e-6)

    alone = run.layer_losses(inputs, hidden_states, queries)
    run.groups = run.layer_groups(stack=True)  # as on a GPU
    stacked = run.layer_losses(inputs, hidden_states, queries)
    torch.testing.assert_close(torch.stack(stacked), torch.stack(alone))
    torch.testing.assert_close(alone[1], got)
    weights = [layer.attention.self.key.weight for layer in encoder_layers(student)]
    for ours, theirs in zip(stacked, alone, strict=True):
        torch.testing.assert_close(
            torch.autograd.grad(ours, weights, retain_graph=True, materialize_grads=True),
            torch.autograd.grad(theirs, weights, retain_graph=True, materialize_grads=True),
        )


def test_layer_steps_on_a_share_of_the_queries_train_and_repeat_with_the_seed():
    """``query_fraction``: each step draws that share of the positions (at least one, none twice; all rows for
    the output loss or a share of 1); the transfer still lowers every layer's loss, the same seed gives the same
    weights, and the report says what was compared."""
    teacher, student = tiny_pair("lln")
    run = TransferRun(teacher, student, TransferSettings(query_fraction=0.25), Accelerator(cpu=True))
    draws = [run.sample_queries({"attention_mask": torch.ones(2, 10)}) for _ in range(20)]
    assert all(
        len(draw) == 3 and len(set(draw.tolist())) == 3 and 0 <= min(draw) <= max(draw) < 10 for draw in draws
    )
    assert len({tuple(draw.tolist()) for draw in draws}) > 10
    assert run.sample_queries({"attention_mask": torch.ones(2, 1)}) is None
    run.settings = TransferSettings(query_fraction=0.25, loss="output")
    assert run.sample_queries({"attention_mask": torch.ones(2, 10)}) is None

    settings = TransferSettings(**SETTINGS, query_fraction=0.25)
    results = []
    for _ in range(2):
        teacher, student = tiny_pair("lln_diag")
        report = transfer_attention(teacher, student, random_batches(), settings)
        results.append(student.state_dict())
    assert all(a < 0.7 * b for a, b in zip(report.layer_after, report.layer_before, strict=True)), (
        report.table()
    )
    for name, tensor in results[0].items():
        torch.testing.assert_close(results[1][name], tensor, rtol=0, atol=0, msg=name)
    assert (
        "40 layer-by-layer steps (loss: weights, on a random 25% of the query rows each step)"
        in report.summary()
    )


def test_clip_each_group_equals_clip_grad_norm_of_each():
    """The layer groups are clipped together in one set of kernels, each to its own norm, as
    ``torch.nn.utils.clip_grad_norm_`` clips each alone (a group without gradients is left alone)."""
    generator = torch.Generator().manual_seed(0)
    groups = [[torch.zeros(5, 3, requires_grad=True), torch.zeros(4, requires_grad=True)] for _ in range(3)]
    groups.append([torch.zeros(2, requires_grad=True)])
    for scale, group in zip((0.1, 1.0, 10.0), groups, strict=False):
        for param in group:
            param.grad = torch.randn(param.shape, generator=generator) * scale
    expected = []
    for group in groups[:3]:
        copies = [torch.zeros_like(param, requires_grad=True) for param in group]
        for copy, param in zip(copies, group, strict=True):
            copy.grad = param.grad.clone()
        norm = torch.nn.utils.clip_grad_norm_(copies, 1.0)
        expected.append((norm, [copy.grad for copy in copies]))
    clip_each_group(groups, 1.0)
    for (_, grads), group in zip(expected, groups, strict=False):
        for grad, param in zip(grads, group, strict=True):
            torch.testing.assert_close(param.grad, grad, rtol=1e-6, atol=0)
    assert [norm.item() > 1 for norm, _ in expected] == [False, True, True]
    assert groups[3][0].grad is None


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_the_teacher_runs_once_on_the_new_rows_of_several_batches(family):
    """``cache_teacher`` (the GPU's look-ahead): one teacher pass over the rows of several batches of different
    widths that the cache lacks, each once; every batch then comes from the cache, equal at its real tokens to
    the teacher run on it."""
    teacher, student = tiny_pair("lln", family)
    run = TransferRun.prepared(teacher, student, TransferSettings(), Accelerator(cpu=True))
    first, second = random_batches(count=2)
    narrow = {key: value[:, :9] for key, value in second.items()}  # row 3: 6 real tokens, 3 pad columns
    narrow["attention_mask"][:, 8] = 0
    again = shuffled_rows(first, [2, 0], width=14)  # rows of the first batch, padded wider
    run.teacher_pass(again)
    batches = [run.inputs(batch) for batch in (first, narrow, again)]
    sizes = []
    calls = count_forwards(teacher, sizes)
    run.cache_teacher(batches)
    assert calls[0] == 1 and sizes == [6]  # rows 1 and 3 of the first batch and all of the second
    run.cache_teacher(batches)
    assert calls[0] == 1
    for batch in batches:
        cached = run.teacher_pass(batch)
        mask = batch["attention_mask"].bool()
        with torch.no_grad():
            fresh = teacher(**batch, output_hidden_states=True).hidden_states
        for ours, theirs in zip(cached, fresh, strict=True):
            torch.testing.assert_close(ours[mask], theirs[mask], rtol=1e-5, atol=1e-5)
    assert calls[0] == 1 + len(batches)  # only the fresh references above


@pytest.mark.gpu
def test_the_gpu_look_ahead_trains_as_the_teacher_on_every_batch():
    """On a GPU the teacher runs ahead over several batches at once and is then read from the cache: the same
    transfer as one running the teacher at every step."""
    settings = TransferSettings(**{**SETTINGS, "end_to_end_steps": 10}, loss="both")
    results = []
    for budget in (0, None):
        teacher, student = tiny_pair("lln", shape={"hidden_size": 64, "num_attention_heads": 2})
        AcceleratorState._reset_state(True)
        calls = count_forwards(teacher)
        report = transfer_attention(
            teacher,
            student,
            random_batches(count=10),
            settings,
            accelerator=Accelerator(mixed_precision="no"),
            teacher_cache_bytes=budget,
        )
        results.append((report, student.state_dict(), calls[0]))
    AcceleratorState._reset_state(True)
    (plain, weights, plain_calls), (cached, cached_weights, cached_calls) = results
    assert plain_calls > 50 and cached_calls == 2  # 10 batches: two look-aheads of 8
    assert cached.layer_after == pytest.approx(plain.layer_after, rel=1e-3)
    for name, tensor in weights.items():
        torch.testing.assert_close(cached_weights[name], tensor, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize(("variant", "train"), [("lln", "qk"), ("lln_diag", "lora")])
def test_padding_changes_nothing_for_the_real_tokens(variant, train):
    """The same sequences with 5 more pad columns give the same transfer, to float rounding."""
    settings = TransferSettings(**{**SETTINGS, "end_to_end_steps": 5}, train=train, loss="both")
    results = []
    for extra in (0, 5):
        teacher, student = tiny_pair(variant)
        report = transfer_attention(teacher, student, random_batches(extra_padding=extra), settings)
        results.append((report, student.state_dict()))
    (first, weights), (second, padded_weights) = results
    assert first.layer_before == pytest.approx(second.layer_before, rel=1e-5)
    assert first.layer_after == pytest.approx(second.layer_after, rel=1e-3)
    for name, tensor in weights.items():
        torch.testing.assert_close(padded_weights[name], tensor, rtol=1e-3, atol=1e-5, msg=name)


def count_forwards(model, rows: list[int] | None = None) -> list[int]:
    """``[calls]``, counting ``model``'s forward passes from now on; the batch size of each call goes to ``rows``."""
    calls = [0]

    def hook(module, args, kwargs, output):
        calls[0] += 1
        if rows is not None:
            rows.append(kwargs["input_ids"].shape[0])

    model.register_forward_hook(hook, with_kwargs=True)
    return calls


def shuffled_rows(batch: dict, order: list[int], width: int, left: bool = False) -> dict:
    """The rows of ``batch`` in ``order``, re-padded to ``width`` columns (on the left with ``left``)."""
    rows = []
    for name in ("input_ids", "attention_mask"):
        out = torch.zeros(len(order), width, dtype=torch.long)
        for i, row in enumerate(order):
            real = batch[name][row][batch["attention_mask"][row].bool()]
            if left:
                out[i, width - len(real) :] = real
            else:
                out[i, : len(real)] = real
        rows.append(out)
    return dict(zip(("input_ids", "attention_mask"), rows, strict=True))


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_teacher_cache_serves_sequences_met_again(family):
    """A batch whose rows were all seen (in other batches, orders and paddings) comes from the cache without a
    teacher pass, equal at every real token to the teacher run on it; a row at another left-padding offset is not
    taken for the same sequence (BERT's positions count the padding)."""
    teacher, student = tiny_pair("lln", family)
    run = TransferRun.prepared(teacher, student, TransferSettings(), Accelerator(cpu=True))
    first, second, third = random_batches(count=3)
    sizes = []
    calls = count_forwards(teacher, sizes)
    run.teacher_pass(first)
    run.teacher_pass(second)
    assert calls[0] == 2 and len(run.teacher_cache.rows) == 8
    mixed = shuffled_rows({k: torch.cat([first[k], second[k]]) for k in first}, [5, 3, 0, 6], width=16)
    cached = run.teacher_pass(mixed)
    assert calls[0] == 2  # no teacher pass
    mask = mixed["attention_mask"].bool()
    with torch.no_grad():
        fresh = teacher(**mixed, output_hidden_states=True).hidden_states
    assert len(cached) == len(fresh) == TINY["num_hidden_layers"] + 1
    for ours, theirs in zip(cached, fresh, strict=True):
        torch.testing.assert_close(ours[mask], theirs[mask], rtol=1e-5, atol=1e-5)
        assert not ours[~mask].any()  # padding: zeros, which nothing reads

    # the stream reads the keys while the batch is on the CPU, and hands the model only its inputs
    streamed = next(run.stream([{**first, "labels": torch.zeros(4)}]))
    assert sorted(streamed) == ["attention_mask", "input_ids"]
    assert streamed.cache_keys[0] == run.teacher_cache.keys(first)[0]

    passes = calls[0]
    left = shuffled_rows(first, [1, 3], width=16, left=True)  # rows with padding, now on the left
    run.teacher_pass(left)
    assert calls[0] == passes + 1

    # two rows seen and two new ones: the teacher runs on the two new rows alone
    partial = {key: torch.cat([first[key][:2], third[key][:2]]) for key in first}
    sizes.clear()
    hidden = run.teacher_pass(partial)
    assert sizes == [2]
    mask = partial["attention_mask"].bool()
    with torch.no_grad():
        fresh = teacher(**partial, output_hidden_states=True).hidden_states
    for ours, theirs in zip(hidden, fresh, strict=True):
        torch.testing.assert_close(ours[mask], theirs[mask], rtol=1e-5, atol=1e-5)


def test_teacher_cache_keeps_to_its_budget_and_changes_no_result():
    """The cache holds no more than its bytes, and a transfer served from it trains as one that runs the teacher
    on every batch."""
    batches = random_batches(count=3)
    teacher, student = tiny_pair("lln")
    run = TransferRun.prepared(
        teacher, student, TransferSettings(), Accelerator(cpu=True), teacher_cache_bytes=30_000
    )
    for batch in batches:
        run.teacher_pass(batch)
    assert 0 < run.teacher_cache.bytes <= 30_000 and len(run.teacher_cache.rows) < 12
    settings = TransferSettings(**{**SETTINGS, "end_to_end_steps": 10}, loss="both")
    results = []
    for budget in (0, 2**30):
        teacher, student = tiny_pair("lln")
        calls = count_forwards(teacher)
        report = transfer_attention(teacher, student, batches, settings, teacher_cache_bytes=budget)
        results.append((report, student.state_dict(), calls[0]))
    (plain, weights, plain_calls), (cached, cached_weights, cached_calls) = results
    # evaluation before and after, then every step; with the cache, each of the 3 batches once
    assert plain_calls == 2 * settings.eval_batches + settings.steps + settings.end_to_end_steps
    assert cached_calls == 3
    assert cached.layer_after == pytest.approx(plain.layer_after, rel=1e-4)
    for name, tensor in weights.items():
        torch.testing.assert_close(cached_weights[name], tensor, rtol=1e-4, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="teacher_cache_bytes must be an integer >= 0 or None, got -1"):
        transfer_attention(teacher, student, batches, settings, teacher_cache_bytes=-1)
    # the default: TEACHER_CACHE_BYTES (on a GPU, at most a quarter of its free memory)
    default = TransferRun.prepared(teacher, student, settings, Accelerator(cpu=True))
    assert default.teacher_cache.max_bytes == TEACHER_CACHE_BYTES and not default.teacher_cache.full


@pytest.mark.parametrize("train", ["lora", "temperature", "qk_temperature"])
def test_extra_parameters_fold_into_the_weights(train):
    """After the block, the model has its own modules and weight names, and computes what it computed inside."""
    _, student = tiny_pair("lln")
    names = set(student.state_dict())
    inputs = random_batches(count=1)[0]
    with attention_parameters(list(encoder_layers(student)), train) as params:
        with torch.no_grad():
            for group in params:
                for param in group:
                    param.add_(0.1 * torch.randn_like(param))
            inside = student(**inputs).last_hidden_state
    assert set(student.state_dict()) == names
    assert not any(hasattr(module, "parametrizations") for module in student.modules())
    with torch.no_grad():
        torch.testing.assert_close(student(**inputs).last_hidden_state, inside)


def test_transferred_models_save_and_reload_the_same_also_as_remote_code_without_hf_lln(tmp_path):
    """A transferred BERT (LoRA folded in) and RoBERTa classifier reload with identical outputs, through hf_lln and
    as remote code in a process that cannot import hf_lln."""
    cases = {}
    for variant, family, train in (("lln_diag", "bert", "lora"), ("lln", "roberta", "temperature")):
        teacher, student = tiny_pair(variant, family)
        classifier = AUTO_MODEL_CLASSES[f"lln_{family}"]["AutoModelForSequenceClassification"](student.config)
        classifier.base_model.load_state_dict(teacher.state_dict(), strict=False)
        transfer_attention(teacher, classifier, random_batches(), TransferSettings(**SETTINGS, train=train))
        classifier.eval()
        inputs = random_batches(count=1, seed=3)[0]
        with torch.no_grad():
            expected = classifier(**inputs).logits
        folder = tmp_path / family
        classifier.save_pretrained(folder)
        again = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
        assert type(again) is type(classifier) and again.config._attn_implementation == variant
        with torch.no_grad():
            assert torch.equal(again(**inputs).logits, expected)
        cases[str(folder)] = ("AutoModelForSequenceClassification", inputs, expected)
    assert len(cases) == 2
    assert_remote_loads(cases, tmp_path)


def tiny_checkpoint(folder):
    """A tiny softmax BERT with a word-level tokenizer whose vocabulary covers ``FIXTURE_SENTENCES``."""
    words = sorted({word for sentence in FIXTURE_SENTENCES for word in sentence.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    sharpen(BertModel(BertConfig(**{**TINY, "vocab_size": len(vocab)}))).save_pretrained(folder)
    return folder


def test_cli_converts_with_transfer_and_the_card_records_it(tmp_path, capsys):
    src = tiny_checkpoint(tmp_path / "bert")
    text = tmp_path / "texts.txt"
    text.write_text("\n\n".join(FIXTURE_SENTENCES * 3))
    flags = "--transfer_steps 30 --transfer_end_to_end_steps 0 --transfer_lr 1e-2 --transfer_batch_size 4 --transfer_max_length 16"
    assert (
        main(
            [
                "convert",
                str(src),
                str(tmp_path / "lln"),
                "--variant",
                "lln",
                "--transfer",
                str(text),
                *flags.split(),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| layer | attention KL before | after |" in out and "wrote LLNBertModel" in out
    card = ModelCard.load(tmp_path / "lln" / "README.md").text
    assert (
        "30 layer-by-layer steps (loss: weights)" in card and "`qk`" in card and "the file texts.txt" in card
    )
    assert (
        "in batches of 4 texts of at most 16 tokens, alternating with batches of 8 texts of at most 8 tokens"
        in card
    )
    assert "| final hidden states, error |" in card
    assert "Then its attention parameters were trained" in card
    transferred = transformers.AutoModel.from_pretrained(tmp_path / "lln").eval()
    assert type(transferred) is hf_lln.LLNBertModel
    untransferred = transformers.AutoModel.from_pretrained(src, attn_implementation="lln").eval()
    teacher = BertModel.from_pretrained(src, attn_implementation="sdpa").eval()
    inputs = transformers.AutoTokenizer.from_pretrained(src)(
        FIXTURE_SENTENCES, padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        target = teacher(**inputs).last_hidden_state
        errors = [
            (model(**inputs).last_hidden_state - target).pow(2).sum()
            for model in (transferred, untransferred)
        ]
    assert errors[0] < 0.8 * errors[1]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_checkpoint_transfers_in_float32_and_keeps_its_dtype(tmp_path, dtype):
    """Transformers loads a checkpoint in its stored dtype: the student trains in float32 (AdamW's steps underflow
    in half precision, which left NaN weights) and is saved in the checkpoint's dtype."""
    src = tiny_checkpoint(tmp_path / "bert")
    BertModel.from_pretrained(src, dtype=dtype).save_pretrained(src)
    text = tmp_path / "texts.txt"
    text.write_text("\n".join(FIXTURE_SENTENCES * 3))
    flags = "--transfer_steps 20 --transfer_end_to_end_steps 5 --transfer_lr 1e-2 --transfer_batch_size 4"
    assert main(["convert", str(src), str(tmp_path / "lln"), "--transfer", str(text), *flags.split()]) == 0
    converted = transformers.AutoModel.from_pretrained(tmp_path / "lln")
    assert {param.dtype for param in converted.parameters()} == {dtype}
    assert all(torch.isfinite(param).all() for param in converted.parameters())
    card = ModelCard.load(tmp_path / "lln" / "README.md").text
    assert "nan" not in card.split("| layer |", 1)[1]


def test_convert_without_text_uses_the_bundled_corpus(tmp_path):
    src = tiny_checkpoint(tmp_path / "bert")
    transfer = TextTransfer(
        settings=TransferSettings(steps=2, end_to_end_steps=0, eval_batches=1, batch_size=2, max_length=8)
    )
    report = convert_checkpoint(src, tmp_path / "lln", variant="lln_diag", transfer=transfer)
    assert report.transfer.source.startswith("the bundled corpus")
    assert "bundled corpus" in (tmp_path / "lln" / "README.md").read_text()


def test_mixed_lengths_alternate_long_batches_with_twice_the_texts_at_half_the_length(tmp_path):
    tokenizer = BertTokenizer.from_pretrained(tiny_checkpoint(tmp_path / "bert"))
    texts = [" ".join(FIXTURE_SENTENCES)] * 12  # each far longer than 16 tokens
    loader = text_batches(texts, tokenizer, batch_size=2, max_length=16, seed=3, mixed_lengths=True)
    shapes = [tuple(batch["input_ids"].shape) for batch in loader]
    assert shapes == [(2, 16), (4, 8)] * 3 and len(loader) == 6
    assert [tuple(b["input_ids"].shape) for b in loader] == shapes  # re-iterable
    plain = text_batches(texts, tokenizer, batch_size=2, max_length=16)
    assert {tuple(batch["input_ids"].shape) for batch in plain} == {(2, 16)} and len(plain) == 6
    with pytest.raises(ValueError, match="mixed_lengths halves max_length, which must then be >= 2, got 1"):
        text_batches(texts, tokenizer, batch_size=2, max_length=1, mixed_lengths=True)


@pytest.mark.parametrize("side", ["right", "left"])
def test_text_batches_equal_the_tokenizers_own_padding(tmp_path, side):
    """Batches come from a cache of each text's tokens (tokenised once, on first use); every pass over them equals
    the tokenizer run on the batch's texts with ``padding=True``."""
    tokenizer = BertTokenizer.from_pretrained(tiny_checkpoint(tmp_path / "bert"), padding_side=side)
    texts = [" ".join(FIXTURE_SENTENCES[i:]) for i in range(len(FIXTURE_SENTENCES))] * 2
    loader = text_batches(texts, tokenizer, batch_size=3, max_length=20, seed=1)
    order = torch.utils.data.DataLoader(
        range(len(texts)), batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(1)
    )
    for _ in range(2):  # the second pass reads the cache, in a new order
        for indices, batch in zip(order, loader, strict=True):
            expected = tokenizer(
                [texts[i] for i in indices], truncation=True, max_length=20, padding=True, return_tensors="pt"
            )
            assert batch.keys() == expected.keys()
            for key, value in expected.items():
                assert torch.equal(batch[key], value), key


def test_convert_flags_set_every_transfer_setting():
    parser = hf_lln.cli.build_parser()
    defaults = transfer_options(parser.parse_args(["convert", "a", "b", "--transfer"])).settings
    assert defaults == TransferSettings()
    argv = "convert a b --transfer t.txt --no-transfer_mixed_lengths --transfer_end_to_end_loss final"
    argv += (
        " --transfer_end_to_end_train attention --transfer_end_to_end_lr 2e-3 --transfer_train qk_temperature"
        " --transfer_query_fraction 0.5"
    )
    transfer = transfer_options(parser.parse_args(argv.split()))
    assert transfer.text == "t.txt" and transfer.settings == TransferSettings(
        mixed_lengths=False,
        end_to_end_loss="final",
        end_to_end_train="attention",
        end_to_end_learning_rate=2e-3,
        train="qk_temperature",
        query_fraction=0.5,
    )
    with pytest.raises(
        ValueError, match=r"--transfer_query_fraction: query_fraction must be a number in \(0, 1\]"
    ):
        transfer_options(parser.parse_args("convert a b --transfer --transfer_query_fraction 0".split()))
    with pytest.raises(
        ValueError, match="--transfer_end_to_end_lr: end_to_end_learning_rate must be a number > 0"
    ):
        transfer_options(parser.parse_args("convert a b --transfer --transfer_end_to_end_lr -1".split()))
    with pytest.raises(ValueError, match="--transfer_mixed_lengths only apply with --transfer"):
        transfer_options(parser.parse_args("convert a b --transfer_mixed_lengths".split()))


def test_text_sources(tmp_path):
    (tmp_path / "books").mkdir()
    (tmp_path / "books" / "b.txt").write_text("second book\n")
    (tmp_path / "books" / "a.txt").write_text("first line\n\n  \nsecond line\n")
    (tmp_path / "books" / "notes.md").write_text("not text\n")
    source = load_texts(tmp_path / "books")
    assert source.texts == ["first line", "second line", "second book"]
    assert load_texts(tmp_path / "books" / "b.txt").texts == ["second book"]
    assert len(load_texts().texts) > 1000


def test_hub_dataset_text_source(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(name, config, split):
        calls.append((name, config, split))
        if name != "someone/books":
            raise FileNotFoundError(f"{name} is not on the Hub")
        return datasets.Dataset.from_dict({"id": [1, 2, 3], "text": ["a line", "  ", "another line"]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    source = load_texts("someone/books:plain")
    assert source.texts == ["a line", "another line"] and calls == [("someone/books", "plain", "train")]
    assert source.description == "the Hub dataset someone/books:plain (train split)"
    with pytest.raises(ValueError, match="neither an existing file or folder nor a loadable Hub dataset"):
        load_texts("someone/missing")


def _bad_sources(tmp_path):
    (tmp_path / "empty.txt").write_text("\n   \n")
    (tmp_path / "no_text").mkdir()
    return [
        (tmp_path / "empty.txt", ValueError, "holds no text"),
        (tmp_path / "missing.txt", FileNotFoundError, "does not exist"),
        (tmp_path / "no_text", ValueError, "folder without .txt files"),
    ]


def convert_command(capsys, *argv) -> tuple[int, str]:
    """``hf-lln convert ARGV``: exit status and stderr."""
    capsys.readouterr()
    status = main(["convert", *map(str, argv)])
    return status, capsys.readouterr().err


def test_empty_or_missing_text_fails_before_any_model_is_loaded(tmp_path, monkeypatch, capsys):
    src = tiny_checkpoint(tmp_path / "bert")

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded before the text was checked")

    monkeypatch.setattr(hf_lln.LLNBertModel, "from_pretrained", no_loading)
    for path, error, match in _bad_sources(tmp_path):
        with pytest.raises(error, match=match):
            convert_checkpoint(src, tmp_path / "dst", variant="lln", transfer=TextTransfer(text=str(path)))
        status, err = convert_command(capsys, src, tmp_path / "dst", "--variant", "lln", "--transfer", path)
        assert status == 2 and err.startswith("hf-lln convert: error: text source") and match in err, err
    assert not (tmp_path / "dst").exists()


def test_bad_models_and_settings_are_refused(tmp_path):
    teacher, student = tiny_pair("lln")
    batches = random_batches(count=1)
    with pytest.raises(ValueError, match="student attn_implementation must be an hf_lln variant.*got 'sdpa'"):
        transfer_attention(teacher, BertModel(BertConfig(**TINY, attn_implementation="sdpa")), batches)
    with pytest.raises(ValueError, match="teacher must run softmax attention.*got 'lln'"):
        transfer_attention(student, student, batches)
    distil = DistilBertModel(DistilBertConfig(vocab_size=40, dim=32, n_layers=2, n_heads=2, hidden_dim=64))
    with pytest.raises(ValueError, match="teacher must be a BERT or RoBERTa model.*'distilbert'"):
        transfer_attention(distil, student, batches)
    _, cheap = tiny_pair("cheap_linear")
    with pytest.raises(ValueError, match="'cheap_linear' has none"):
        transfer_attention(teacher, cheap, batches, TransferSettings(loss="weights"))
    assert (
        transfer_attention(
            teacher, cheap, batches, TransferSettings(steps=1, end_to_end_steps=0)
        ).settings.loss
        == "output"
    )
    student.train()
    with pytest.raises(ValueError, match="batches is empty: transfer needs at least one batch"):
        transfer_attention(teacher, student, [])
    assert student.training and all(param.requires_grad for param in student.parameters())  # left as it was
    with pytest.raises(ValueError, match=r"student parameters must be float32 to train .* got torch.float16"):
        transfer_attention(teacher, tiny_pair("lln")[1].half(), batches)
    _, mixed = tiny_pair("lln_diag", lln_mix_mode="learnable_ratio")
    with pytest.raises(ValueError, match="lln_mix_mode='learnable_ratio' mixes"):
        transfer_attention(teacher, mixed, batches, TransferSettings(loss="both"))
    for bad, match in [
        (dict(train="all"), "train must be one of"),
        (dict(loss="mse"), "loss must be one of"),
        (dict(steps=0, end_to_end_steps=0), "nothing to train"),
        (dict(learning_rate=0), "learning_rate must be a number > 0"),
        (dict(batch_size=0), "batch_size must be an integer >= 1"),
        (dict(end_to_end_loss="hidden"), "end_to_end_loss must be one of 'final', 'layers', 'pooled'"),
        (dict(end_to_end_train="qk"), "end_to_end_train must be one of 'attention', 'all'"),
        (dict(end_to_end_learning_rate=0.0), "end_to_end_learning_rate must be a number > 0"),
        (dict(end_to_end_learning_rate=float("nan")), "end_to_end_learning_rate must be a number > 0"),
        (dict(learning_rate=True), "learning_rate must be a number > 0"),
        (dict(mixed_lengths="yes"), "mixed_lengths must be True or False"),
        (dict(max_length=1), "mixed_lengths halves max_length"),
        (dict(query_fraction=0), r"query_fraction must be a number in \(0, 1\], got 0"),
        (dict(query_fraction=1.5), r"query_fraction must be a number in \(0, 1\], got 1.5"),
        (dict(query_fraction=True), r"query_fraction must be a number in \(0, 1\], got True"),
    ]:
        with pytest.raises(ValueError, match=match):
            TransferSettings(**bad)


def test_bad_convert_commands_fail_with_a_usage_error_before_any_work(tmp_path, capsys):
    src = tiny_checkpoint(tmp_path / "bert")
    dst = tmp_path / "dst"
    with pytest.raises(SystemExit) as exit_info:  # a softmax target is not a choice of --variant
        main(["convert", str(src), str(dst), "--variant", "sdpa", "--transfer"])
    assert exit_info.value.code == 2 and "invalid choice: 'sdpa'" in capsys.readouterr().err
    with pytest.raises(StrictDataclassError, match="lln_variant must be one of hf_lln's attention variants"):
        convert_checkpoint(src, dst, variant="sdpa", transfer=TextTransfer())
    status, err = convert_command(capsys, src, dst, "--variant", "lln", "--transfer_steps", "5")
    assert status == 2 and "error: --transfer_steps only apply with --transfer [TEXT]" in err
    status, err = convert_command(capsys, src, dst, "--transfer", "--transfer_lr", "0")
    assert status == 2 and "error: --transfer_lr: learning_rate must be a number > 0, got 0.0" in err
    status, err = convert_command(capsys, src, dst, "--transfer", "--transfer_steps", "-1")
    assert status == 2 and "error: --transfer_steps: steps must be an integer >= 0, got -1" in err
    DistilBertModel(
        DistilBertConfig(vocab_size=40, dim=32, n_layers=2, n_heads=2, hidden_dim=64)
    ).save_pretrained(tmp_path / "distilbert")
    status, err = convert_command(capsys, tmp_path / "distilbert", dst, "--transfer")
    assert status == 2 and "must be a BERT or RoBERTa config" in err and "'distilbert'" in err
    convert_checkpoint(src, tmp_path / "lln", variant="lln")
    status, err = convert_command(capsys, tmp_path / "lln", dst, "--transfer")
    assert status == 2 and "is already an LLN checkpoint (model_type 'lln_bert')" in err
    assert not dst.exists()


def test_real_minilm_zero_shot_transfer(minilm_path):
    """A short transfer on the bundled corpus brings LLN's pooled embeddings of SST-2-like sentences much closer
    to softmax's: the plain conversion is below the threshold (0.50 mean cosine on SST-2 dev), the transferred
    model above."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path)
    teacher = transformers.AutoModel.from_pretrained(minilm_path, attn_implementation="sdpa")
    student = transformers.AutoModel.from_pretrained(minilm_path, attn_implementation="lln")
    evaluation = [tokenizer(FIXTURE_SENTENCES, padding=True, return_tensors="pt")]
    batches = text_batches(load_texts().texts, tokenizer, batch_size=8, max_length=48)
    settings = TransferSettings(steps=STEPS_ON_MINILM, end_to_end_steps=0, eval_batches=1)
    report = transfer_attention(
        teacher, student, evaluation + list(itertools.islice(batches, STEPS_ON_MINILM)), settings
    )
    assert report.cosine_before < 0.7 < report.cosine_after, report.table()
