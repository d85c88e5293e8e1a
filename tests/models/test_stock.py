"""``hf_lln.to_lln`` (stock BERT/RoBERTa models -> LLN classes in place) and the warning when saving a stock model
would lose its hf_lln attention."""

from __future__ import annotations

import warnings

import pytest
import torch
import transformers
from transformers import BertConfig

import hf_lln
from hf_lln.convert import lln_config_from
from hf_lln.models import AUTO_MODEL_CLASSES
from tests._tiny import TINY
from tests.models.test_modeling import HEADS, STOCK_CONFIGS, first_output, inputs


def save_stock(path, model_type: str, auto_name: str):
    torch.manual_seed(0)
    getattr(transformers, auto_name).from_config(STOCK_CONFIGS[model_type](**TINY)).save_pretrained(path)
    return path


def outputs(model, auto_name: str) -> torch.Tensor:
    with torch.no_grad():
        return first_output(model.eval()(**inputs(auto_name)))


@pytest.mark.parametrize(("model_type", "auto_name"), HEADS)
def test_every_head_becomes_its_lln_class_in_place_and_round_trips(tmp_path, model_type, auto_name):
    stock_dir = save_stock(tmp_path / "stock", model_type, auto_name)
    model = getattr(transformers, auto_name).from_pretrained(stock_dir, attn_implementation="lln_diag")
    parameters = dict(model.named_parameters())
    settings = {"lln_mix_mode": "learnable_scale", "lln_block_size": 4}

    assert hf_lln.to_lln(model, **settings) is model
    lln_class = AUTO_MODEL_CLASSES[model_type][auto_name]
    assert type(model) is lln_class
    assert (model.config.model_type, model.config.lln_variant, model.config._attn_implementation) == (
        model_type,
        "lln_diag",
        "lln_diag",
    )
    assert all(module.config is model.config for module in model.modules() if hasattr(module, "config"))
    converted = dict(model.named_parameters())
    assert all(converted[name] is parameter for name, parameter in parameters.items())  # the same weights
    mix_weights = {name: parameter for name, parameter in converted.items() if ".lln_mix." in name}
    assert len(mix_weights) == 4 and all(
        torch.equal(w, torch.full((2, 16), 0.5)) for w in mix_weights.values()
    )
    with torch.no_grad():
        for weight in mix_weights.values():
            weight.uniform_(0.1, 0.9)

    # Independent reference: the LLN class loaded from the stock checkpoint with the same settings and mix weights.
    config = lln_config_from(
        STOCK_CONFIGS[model_type].from_pretrained(stock_dir), lln_variant="lln_diag", **settings
    )
    reference = lln_class.from_pretrained(stock_dir, config=config)
    reference.load_state_dict(model.state_dict())
    expected = outputs(reference, auto_name)
    torch.testing.assert_close(outputs(model, auto_name), expected, rtol=0, atol=0)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.save_pretrained(tmp_path / "lln")
    reloaded = getattr(transformers, auto_name).from_pretrained(tmp_path / "lln")
    assert type(reloaded) is lln_class and reloaded.config._attn_implementation == "lln_diag"
    assert torch.equal(outputs(reloaded, auto_name), expected)


def test_variant_defaults_to_the_attention_the_model_runs(tmp_path):
    stock_dir = save_stock(tmp_path, "lln_bert", "AutoModel")
    switched = transformers.BertModel.from_pretrained(stock_dir)
    switched.set_attn_implementation("cosformer")
    assert hf_lln.to_lln(switched).config.lln_variant == "cosformer"
    softmax = transformers.BertModel.from_pretrained(stock_dir)
    assert hf_lln.to_lln(softmax).config.lln_variant == "lln_diag"
    assert hf_lln.to_lln(softmax, variant="performer").config._attn_implementation == "performer"


def test_nothing_changes_when_a_model_cannot_be_converted(tmp_path):
    torch.manual_seed(0)
    config = BertConfig(**TINY)
    pretraining = transformers.BertForPreTraining(config)
    with pytest.raises(
        TypeError, match="BertForPreTraining has no LLN class; supported classes: BertForMaskedLM"
    ):
        hf_lln.to_lln(pretraining)
    assert type(pretraining.bert) is transformers.BertModel  # its inner BertModel is not converted either

    model = transformers.BertModel(config)
    with pytest.raises(ValueError, match="variant must be one of 'lln', "):
        hf_lln.to_lln(model, variant="softmax")
    with pytest.raises(ValueError, match="unknown LLN settings"):
        hf_lln.to_lln(model, lln_blocksize=4)
    with pytest.raises(TypeError, match="Linear holds no Transformers model"):
        hf_lln.to_lln(torch.nn.Linear(2, 2))
    assert type(model) is transformers.BertModel and type(model.config) is BertConfig

    lln = hf_lln.LLNBertModel(hf_lln.LLNBertConfig(**TINY, lln_mix_mode="learnable_ratio"))
    with pytest.raises(ValueError, match="lln_mix_mode='average', but LLNBertModel already has"):
        hf_lln.to_lln(lln, lln_mix_mode="average")
    assert lln.config.lln_mix_mode == "learnable_ratio"


def test_an_lln_model_takes_new_settings(tmp_path):
    lln = hf_lln.LLNRobertaModel(hf_lln.LLNRobertaConfig(**TINY, lln_variant="lln"))
    hf_lln.to_lln(lln, variant="performer", lln_performer_features=8)
    assert (lln.config.lln_variant, lln.config.lln_performer_features) == ("performer", 8)
    assert lln.config._attn_implementation == "performer"


def test_saving_a_stock_model_that_runs_an_hf_lln_attention_warns_with_the_fix(tmp_path):
    model = transformers.RobertaForMaskedLM(transformers.RobertaConfig(**TINY))
    model.set_attn_implementation("lln")
    with pytest.warns(UserWarning) as caught:
        model.save_pretrained(tmp_path / "switched")
    (message,) = [str(warning.message) for warning in caught]
    assert message.startswith(
        "RobertaForMaskedLM runs attn_implementation='lln', which a stock RobertaConfig"
    )
    assert "hf_lln.to_lln(model)" in message and "LLNRobertaForMaskedLM" in message

    model.set_attn_implementation("sdpa")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.save_pretrained(tmp_path / "softmax")


def test_saving_an_lln_model_that_runs_softmax_warns(tmp_path):
    model = hf_lln.LLNBertModel(hf_lln.LLNBertConfig(**TINY, lln_variant="lln"))
    model.set_attn_implementation("eager")
    with pytest.warns(UserWarning, match="LLNBertModel runs attn_implementation='eager'.*lln_variant='lln'"):
        model.save_pretrained(tmp_path)


def test_a_model_inside_a_peft_model_is_converted_and_its_merge_reloads(tmp_path):
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(BertConfig(**TINY))
    model.set_attn_implementation("lln")
    lora = peft.LoraConfig(target_modules=["query", "value"], r=2, init_lora_weights=False)
    wrapped = peft.get_peft_model(model, lora)
    expected = outputs(wrapped, "AutoModel")

    assert hf_lln.to_lln(wrapped) is wrapped
    assert type(wrapped.get_base_model()) is hf_lln.LLNBertForSequenceClassification
    assert torch.equal(outputs(wrapped, "AutoModel"), expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        wrapped.merge_and_unload().save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert reloaded.config._attn_implementation == "lln"
    torch.testing.assert_close(outputs(reloaded, "AutoModel"), expected)
