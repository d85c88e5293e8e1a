"""LLN configs and model classes: validation, parity with the stock classes, learnable mix weights, Auto
round trips, training features, and the real pretrained MiniLM."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from huggingface_hub.errors import StrictDataclassError
from transformers import BertConfig, RobertaConfig

import hf_lln
from hf_lln.models import (
    AUTO_MODEL_CLASSES,
    LLNBertConfig,
    LLNBertForMaskedLM,
    LLNBertModel,
    LLNRobertaConfig,
)
from hf_lln.models.configuration_lln import (
    CONVERTED_MIN_BLOCK_SIZE,
    config_for_attention,
    converted_block_size,
    lln_config_from,
    lln_settings,
)
from tests._tiny import TINY

STOCK_CONFIGS = {"lln_bert": BertConfig, "lln_roberta": RobertaConfig}
HEADS = [
    (model_type, auto_name)
    for model_type in AUTO_MODEL_CLASSES
    for auto_name in AUTO_MODEL_CLASSES[model_type]
]
HEADS = [head for head in HEADS if head[1] != "AutoConfig"]


def inputs(auto_name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Token ids (2, 9) with padding in the second row; (2, 2, 9) for multiple choice."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, TINY["vocab_size"], (2, 9), generator=generator)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    if auto_name == "AutoModelForMultipleChoice":
        return {
            "input_ids": torch.stack([ids, ids.flip(1)], 1),
            "attention_mask": torch.stack([mask, mask], 1),
        }
    return {"input_ids": ids, "attention_mask": mask}


def first_output(output) -> torch.Tensor:
    return output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]


def lln_model(model_type: str, auto_name: str, **settings):
    config_class = AUTO_MODEL_CLASSES[model_type]["AutoConfig"]
    torch.manual_seed(0)
    return AUTO_MODEL_CLASSES[model_type][auto_name](config_class(**TINY, **settings)).eval()


def randomise_mix_weights(model) -> None:
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".lln_mix." in name:
                parameter.uniform_(0.1, 0.9)


def test_config_fields_are_saved_and_reloaded(tmp_path):
    config = LLNRobertaConfig(
        **TINY,
        lln_variant="performer",
        lln_block_size=8,
        lln_mix_mode="learnable_ratio",
        lln_eps=1e-5,
        lln_stats="global",
        lln_performer_features=32,
        lln_performer_seed=7,
    )
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    expected = {
        "lln_variant": "performer",
        "lln_block_size": 8,
        "lln_mix_mode": "learnable_ratio",
        "lln_eps": 1e-5,
        "lln_stats": "global",
        "lln_performer_features": 32,
        "lln_performer_seed": 7,
    }
    assert {key: saved[key] for key in expected} == expected
    assert saved["model_type"] == "lln_roberta"
    reloaded = transformers.AutoConfig.from_pretrained(tmp_path)
    assert type(reloaded) is LLNRobertaConfig
    assert {key: getattr(reloaded, key) for key in expected} == expected


def test_config_defaults():
    config = LLNBertConfig()
    assert (
        config.lln_variant,
        config.lln_block_size,
        config.lln_mix_mode,
        config.lln_eps,
        config.lln_stats,
    ) == ("lln_diag", None, "average", 1e-6, "per_sequence")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lln_variant", "softmax"),
        ("lln_mix_mode", "learned"),
        ("lln_stats", "batch"),
        ("lln_block_size", 0),
        ("lln_eps", 0.0),
        ("lln_eps", -1e-3),
        ("lln_performer_features", 0),
        ("lln_performer_seed", -1),
    ],
)
def test_invalid_config_values_are_rejected_naming_the_field(field, value):
    with pytest.raises(StrictDataclassError, match=f"{field} must be"):
        LLNBertConfig(**{field: value})


def test_wrongly_typed_config_value_is_rejected():
    with pytest.raises(StrictDataclassError, match="lln_block_size"):
        LLNBertConfig(lln_block_size="4")


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ({"hidden_size": 64, "num_attention_heads": 2}, 64),  # head 32: raised to the minimum
        ({"hidden_size": 128, "num_attention_heads": 2}, 64),  # head 64
        ({"hidden_size": 256, "num_attention_heads": 2}, 128),  # head 128: kept
        ({"hidden_size": 32, "num_attention_heads": 2, "head_dim": 96}, 96),  # head_dim wins over 32 / 2
    ],
)
def test_converted_block_size_is_the_head_size_at_least_64(sizes, expected):
    assert CONVERTED_MIN_BLOCK_SIZE == 64
    assert converted_block_size(BertConfig(**sizes)) == expected
    assert converted_block_size(RobertaConfig(**sizes)) == expected


def test_converted_block_size_is_none_without_a_head_size():
    config = transformers.PretrainedConfig()
    assert not hasattr(config, "hidden_size") and not hasattr(config, "num_attention_heads")
    assert converted_block_size(config) is None


def test_stock_configs_run_with_the_converted_block_size():
    assert lln_settings(BertConfig(**TINY))["lln_block_size"] == 64  # head size 16
    assert lln_settings(RobertaConfig(hidden_size=256, num_attention_heads=2))["lln_block_size"] == 128
    # an LLN config keeps its None: the head size
    assert lln_settings(LLNBertConfig(**TINY))["lln_block_size"] is None
    assert lln_settings(LLNBertConfig(**TINY, lln_block_size=8))["lln_block_size"] == 8
    stock = BertConfig(**TINY)
    stock.lln_block_size = 16  # a setting the stock config carries wins over the converted default
    assert lln_settings(stock)["lln_block_size"] == 16
    assert lln_settings(None)["lln_block_size"] is None


@pytest.mark.parametrize("model_type", AUTO_MODEL_CLASSES)
def test_lln_config_from_a_stock_config_writes_the_converted_block_size(model_type):
    stock = STOCK_CONFIGS[model_type](**TINY)
    config = lln_config_from(stock, lln_variant="lln_diag")
    assert config.model_type == model_type
    assert config.lln_block_size == converted_block_size(stock) == 64
    assert config.to_dict()["lln_block_size"] == 64  # written into the saved config
    assert lln_config_from(stock, lln_variant="lln_diag", lln_block_size=16).lln_block_size == 16
    assert lln_config_from(stock, lln_variant="lln_diag", lln_block_size=None).lln_block_size is None

    # run_mlm and run_glue's --attn_implementation convert a stock config through config_for_attention
    assert config_for_attention(stock, "lln_diag").lln_block_size == 64

    lln = AUTO_MODEL_CLASSES[model_type]["AutoConfig"](**TINY)
    assert lln.lln_block_size is None
    assert lln_config_from(lln, lln_variant="lln").lln_block_size is None  # None = the head size, kept
    lln.lln_block_size = 8
    assert lln_config_from(lln, lln_variant="lln_diag").lln_block_size == 8


@pytest.mark.parametrize("model_type", AUTO_MODEL_CLASSES)
def test_default_attention_is_the_configured_variant(model_type):
    model = lln_model(model_type, "AutoModelForMaskedLM", lln_variant="cosformer")
    assert model.config._attn_implementation == "cosformer"
    model.set_attn_implementation("lln")
    assert model.config._attn_implementation == "lln"
    config_class = AUTO_MODEL_CLASSES[model_type]["AutoConfig"]
    sdpa = AUTO_MODEL_CLASSES[model_type]["AutoModel"](config_class(**TINY, attn_implementation="sdpa"))
    assert sdpa.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize(("model_type", "auto_name"), HEADS)
def test_softmax_parity_with_the_stock_class(tmp_path, model_type, auto_name, implementation):
    _save_stock(tmp_path, model_type, auto_name)
    stock = (
        getattr(transformers, auto_name).from_pretrained(tmp_path, attn_implementation=implementation).eval()
    )
    lln_class = AUTO_MODEL_CLASSES[model_type][auto_name]
    lln, loading = lln_class.from_pretrained(
        tmp_path, attn_implementation=implementation, output_loading_info=True
    )
    assert type(stock) is lln_class.__mro__[2] and type(lln) is lln_class
    assert loading["missing_keys"] == set() and loading["unexpected_keys"] == set()
    with torch.no_grad():
        assert torch.equal(
            first_output(lln.eval()(**inputs(auto_name))), first_output(stock(**inputs(auto_name)))
        )


def _save_stock(path, model_type: str, auto_name: str):
    torch.manual_seed(0)
    getattr(transformers, auto_name).from_config(STOCK_CONFIGS[model_type](**TINY)).save_pretrained(path)
    return path


@pytest.mark.parametrize("mix_mode", ["learnable_scale", "learnable_ratio"])
@pytest.mark.parametrize("model_type", AUTO_MODEL_CLASSES)
def test_softmax_checkpoint_loads_with_only_the_mix_weights_new(tmp_path, model_type, mix_mode):
    _save_stock(tmp_path, model_type, "AutoModelForMaskedLM")
    config = lln_config_from(STOCK_CONFIGS[model_type].from_pretrained(tmp_path), lln_mix_mode=mix_mode)
    model, loading = AUTO_MODEL_CLASSES[model_type]["AutoModelForMaskedLM"].from_pretrained(
        tmp_path, config=config, output_loading_info=True
    )
    names_per_layer = {"learnable_scale": ["diag_weight", "lln_weight"], "learnable_ratio": ["lln_weight"]}[
        mix_mode
    ]
    prefix = model.base_model_prefix
    assert sorted(loading["missing_keys"]) == [
        f"{prefix}.encoder.layer.{layer}.attention.self.lln_mix.{name}"
        for layer in range(2)
        for name in names_per_layer
    ]
    assert loading["unexpected_keys"] == set()
    for name, parameter in model.named_parameters():
        if ".lln_mix." in name:
            assert torch.equal(parameter, torch.full((2, 16), 0.5))


@pytest.mark.parametrize("mix_mode", ["learnable_scale", "learnable_ratio"])
def test_learnable_mix_weights_are_the_ones_the_operator_uses(mix_mode):
    """Weights (r, p) = (1, 0) must give LLN alone, (0, 1) block-diagonal softmax alone."""
    model = lln_model("lln_bert", "AutoModel", lln_mix_mode=mix_mode, lln_block_size=4)
    data = inputs("AutoModel")
    outputs = {}
    for variant, lln_share in (("lln", 1.0), ("lln_diag", 0.0), ("lln_diag", 1.0)):
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name.endswith("lln_weight"):
                    parameter.fill_(lln_share)
                elif name.endswith("diag_weight"):
                    parameter.fill_(1.0 - lln_share)
        model.set_attn_implementation(variant)
        with torch.no_grad():
            outputs[variant, lln_share] = model(**data).last_hidden_state
    real = data["attention_mask"].bool()
    torch.testing.assert_close(outputs["lln_diag", 1.0][real], outputs["lln", 1.0][real])
    assert not torch.allclose(outputs["lln_diag", 0.0][real], outputs["lln", 1.0][real])


@pytest.mark.parametrize(("model_type", "auto_name"), HEADS)
def test_save_load_round_trip_through_the_auto_class(tmp_path, model_type, auto_name):
    model = lln_model(model_type, auto_name, lln_mix_mode="learnable_scale", lln_variant="lln_diag")
    randomise_mix_weights(model)
    model.save_pretrained(tmp_path)
    loaded = getattr(transformers, auto_name).from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    assert loaded.config._attn_implementation == "lln_diag"
    expected_state = model.state_dict()
    assert set(loaded.state_dict()) == set(expected_state)
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, expected_state[name]), name
    with torch.no_grad():
        assert torch.equal(
            first_output(loaded(**inputs(auto_name))), first_output(model(**inputs(auto_name)))
        )


@pytest.mark.parametrize("variant", hf_lln.ATTENTION_VARIANTS)
def test_gradients_reach_every_parameter(variant):
    model = lln_model(
        "lln_bert",
        "AutoModelForMaskedLM",
        lln_variant=variant,
        lln_mix_mode="learnable_scale",
        lln_block_size=4,
        lln_performer_features=32,
    ).train()
    data = inputs("AutoModelForMaskedLM")
    model(**data, labels=data["input_ids"]).loss.backward()
    for name, parameter in model.named_parameters():
        if ".lln_mix." in name and variant != "lln_diag":
            continue  # the mix weights take part in LLN+Diag only
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("variant", ["lln_diag", "performer"])
def test_gradient_checkpointing_gives_the_same_gradients(variant):
    grads, attention_calls = [], []
    for checkpointing in (False, True):
        model = lln_model(
            "lln_bert",
            "AutoModelForMaskedLM",
            lln_variant=variant,
            lln_mix_mode="learnable_ratio",
            lln_performer_features=32,
        ).train()
        if checkpointing:
            # Renamed activation_checkpointing_enable after transformers 5.17.
            enable = (
                getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            )
            enable()
        calls = []
        model.bert.encoder.layer[0].attention.self.register_forward_hook(
            lambda *args, calls=calls: calls.append(1)
        )
        data = inputs("AutoModelForMaskedLM")
        model(**data, labels=data["input_ids"]).loss.backward()
        grads.append({name: parameter.grad for name, parameter in model.named_parameters()})
        attention_calls.append(len(calls))
    assert attention_calls == [1, 2]  # checkpointing recomputes the layer in the backward pass
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=name)


def test_real_minilm_loads_into_every_variant(minilm_path):
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path)
    sentences = ["LLN attention keeps the cost linear.", "A much shorter one."]
    data = tokenizer(sentences, padding=True, return_tensors="pt")
    softmax = transformers.BertModel.from_pretrained(minilm_path).eval()
    with torch.no_grad():
        reference = softmax(**data).last_hidden_state
    stock_config = BertConfig.from_pretrained(minilm_path)
    for variant in hf_lln.ATTENTION_VARIANTS:
        config = lln_config_from(stock_config, lln_variant=variant, lln_mix_mode="learnable_scale")
        model, loading = LLNBertModel.from_pretrained(minilm_path, config=config, output_loading_info=True)
        assert all(".lln_mix." in key for key in loading["missing_keys"]) and not loading["unexpected_keys"]
        assert model.config._attn_implementation == variant
        with torch.no_grad():
            out = model.eval()(**data).last_hidden_state
        assert torch.isfinite(out).all(), variant
        assert not torch.allclose(out, reference), variant


def test_lln_classes_default_to_their_variant_from_a_stock_folder(minilm_path):
    model = LLNBertForMaskedLM.from_pretrained(
        minilm_path, config=lln_config_from(BertConfig.from_pretrained(minilm_path))
    )
    assert type(model.bert).__name__ == "BertModel"
    assert model.config._attn_implementation == "lln_diag"
