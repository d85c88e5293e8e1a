"""What you trained is what you reload: for every way of choosing an attention, the reloaded model computes what the
saved one did, or saving warned that the attention is lost. (``hf_lln.recipes.run_glue`` on a stock checkpoint:
``tests/recipes/test_run_glue.py``.)"""

from __future__ import annotations

import warnings

import pytest
import torch
import transformers
from transformers import BertConfig, BertModel

import hf_lln
from tests._tiny import TINY
from tests.models.test_modeling import first_output, inputs


def hidden_states(model) -> torch.Tensor:
    with torch.no_grad():
        return first_output(model.eval()(**inputs("AutoModel")))


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, object]:
    """A stock BERT and an LLN BERT (``lln_variant="lln_diag"``) with the same weights."""
    root = tmp_path_factory.mktemp("checkpoints")
    torch.manual_seed(0)
    BertModel(BertConfig(**TINY)).save_pretrained(root / "stock")
    hf_lln.to_lln(BertModel.from_pretrained(root / "stock"), variant="lln_diag").save_pretrained(root / "lln")
    return {"stock": root / "stock", "lln": root / "lln"}


def choose(way: str, folders) -> torch.nn.Module:
    """A model running ``lln`` chosen in one of the four ways Transformers offers."""
    source, how = way.split("+")
    if how == "kwarg":
        return transformers.AutoModel.from_pretrained(folders[source], attn_implementation="lln")
    model = transformers.AutoModel.from_pretrained(folders[source])
    model.set_attn_implementation("lln")
    return model


@pytest.mark.parametrize("way", ["lln+kwarg", "lln+switch"])
def test_an_lln_model_reloads_with_the_attention_it_ran(folders, tmp_path, way):
    model = choose(way, folders)
    assert type(model) is hf_lln.LLNBertModel and model.config._attn_implementation == "lln"
    expected = hidden_states(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.save_pretrained(tmp_path)
    reloaded = transformers.AutoModel.from_pretrained(tmp_path)
    assert reloaded.config._attn_implementation == "lln"
    assert torch.equal(hidden_states(reloaded), expected)


@pytest.mark.parametrize("way", ["stock+kwarg", "stock+switch"])
def test_a_stock_model_warns_then_to_lln_reloads_with_the_attention(folders, tmp_path, way):
    model = choose(way, folders)
    assert type(model) is BertModel and model.config._attn_implementation == "lln"
    expected = hidden_states(model)
    with pytest.warns(
        UserWarning, match=r"BertModel runs attn_implementation='lln'.*hf_lln\.to_lln\(model\)"
    ):
        model.save_pretrained(tmp_path / "lost")
    lost = transformers.AutoModel.from_pretrained(tmp_path / "lost")
    assert not torch.allclose(hidden_states(lost), expected)  # what the warning said: softmax came back

    hf_lln.to_lln(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.save_pretrained(tmp_path / "kept")
    reloaded = transformers.AutoModel.from_pretrained(tmp_path / "kept")
    assert type(reloaded) is hf_lln.LLNBertModel
    assert torch.equal(hidden_states(reloaded), expected)


def test_sentence_transformer_save_warns_then_to_lln_keeps_the_attention(folders, tmp_path):
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    tokenizer_dir = tmp_path / "tokenizer"
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(35)]))
    transformers.BertTokenizer(vocab_file=str(vocab)).save_pretrained(tokenizer_dir)
    transformer = Transformer(str(folders["stock"]), tokenizer_name_or_path=str(tokenizer_dir))
    model = SentenceTransformer(
        modules=[transformer, Pooling(TINY["hidden_size"]), Normalize()], device="cpu"
    )
    model[0].auto_model.set_attn_implementation("lln")
    sentences = ["w1 w2 w3 w4", "w5 w6"]
    expected = model.encode(sentences, convert_to_tensor=True)

    with pytest.warns(UserWarning, match="BertModel runs attn_implementation='lln'"):
        model.save(str(tmp_path / "lost"))
    lost = SentenceTransformer(str(tmp_path / "lost"), device="cpu")
    assert not torch.allclose(lost.encode(sentences, convert_to_tensor=True), expected)

    assert hf_lln.to_lln(model) is model
    assert type(model[0].auto_model) is hf_lln.LLNBertModel
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model.save(str(tmp_path / "kept"))
    reloaded = SentenceTransformer(str(tmp_path / "kept"), device="cpu")
    assert type(reloaded[0].auto_model) is hf_lln.LLNBertModel
    assert [type(module) for module in reloaded] == [type(module) for module in model]
    assert torch.equal(reloaded.encode(sentences, convert_to_tensor=True), expected)
