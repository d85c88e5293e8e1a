"""``hf-lln convert``: softmax checkpoints -> LLN checkpoint folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from huggingface_hub.errors import StrictDataclassError
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertTokenizer, RobertaConfig

import hf_lln
from hf_lln.cli import main
from hf_lln.convert import convert_checkpoint
from tests._tiny import TINY

ROOT = Path(__file__).parents[1]


def save_stock(path, config, auto_name="AutoModelForMaskedLM", model_class=None):
    torch.manual_seed(0)
    model = model_class(config) if model_class else getattr(transformers, auto_name).from_config(config)
    model.save_pretrained(path)
    return model.state_dict()


def test_cli_writes_a_checkpoint_that_loads_with_no_missing_weights(tmp_path, capsys):
    src, dst = tmp_path / "bert", tmp_path / "lln-bert"
    stock_state = save_stock(src, BertConfig(**TINY))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(35)]))
    BertTokenizer(vocab_file=str(vocab)).save_pretrained(src)

    assert (
        main(["convert", str(src), str(dst), "--variant", "lln_diag", "--mix_mode", "learnable_scale"]) == 0
    )
    assert "LLNBertForMaskedLM" in capsys.readouterr().out

    model, loading = transformers.AutoModelForMaskedLM.from_pretrained(dst, output_loading_info=True)
    assert type(model) is hf_lln.LLNBertForMaskedLM
    assert (model.config.lln_variant, model.config.lln_mix_mode) == ("lln_diag", "learnable_scale")
    assert model.config._attn_implementation == "lln_diag"
    assert loading["missing_keys"] == set() and loading["unexpected_keys"] == set()
    state = model.state_dict()
    for name, tensor in stock_state.items():
        assert torch.equal(state[name], tensor), name
    mix_weights = [tensor for name, tensor in state.items() if ".lln_mix." in name]
    assert len(mix_weights) == 4 and all(
        torch.equal(weight, torch.full_like(weight, 0.5)) for weight in mix_weights
    )
    assert {"README.md", "modeling_lln.py", "tokenizer_config.json"} <= {path.name for path in dst.iterdir()}
    assert transformers.AutoTokenizer.from_pretrained(dst) is not None
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]  # no staging folder left


@pytest.mark.parametrize(("config_class", "offset"), [(BertConfig, 0), (RobertaConfig, 2)])
def test_max_position_tiles_the_learned_position_embeddings(tmp_path, config_class, offset):
    src, dst = tmp_path / "src", tmp_path / "dst"
    config = config_class(**TINY, pad_token_id=1) if offset else config_class(**TINY)
    stock_state = save_stock(src, config, "AutoModel")
    report = convert_checkpoint(src, dst, variant="cosformer", max_position=100)
    assert report.max_position_embeddings == 100 + offset

    model = transformers.AutoModel.from_pretrained(dst)
    table = model.embeddings.position_embeddings.weight
    learned = stock_state["embeddings.position_embeddings.weight"]
    length = learned.shape[0] - offset
    assert table.shape == (100 + offset, TINY["hidden_size"])
    assert torch.equal(table[: offset + length], learned)
    assert torch.equal(table[offset + length : offset + 2 * length], learned[offset:])
    assert torch.equal(table[offset + 2 * length :], learned[offset : offset + 100 - 2 * length])
    ids = torch.randint(3, TINY["vocab_size"], (1, 100))
    with torch.no_grad():
        assert torch.isfinite(model(ids).last_hidden_state).all()


def test_pretraining_checkpoint_gives_the_masked_lm_head_and_reports_the_rest(tmp_path):
    save_stock(tmp_path / "src", BertConfig(**TINY), model_class=transformers.BertForPreTraining)
    report = convert_checkpoint(tmp_path / "src", tmp_path / "dst", variant="lln")
    assert report.model_class == "LLNBertForMaskedLM"
    assert report.new_lln_weights == []
    assert report.unused_weights == [
        "bert.pooler.dense.bias",
        "bert.pooler.dense.weight",
        "cls.seq_relationship.bias",
        "cls.seq_relationship.weight",
    ]


def save_long_stock(src) -> dict[str, torch.Tensor]:
    """Save to ``src`` a tiny BERT (heads of 16) reading 128 tokens, with query and key weights of std 0.3 (sharp
    attention rows, so that the block size changes the outputs); returns inputs of 90 tokens, padding in row 2."""
    torch.manual_seed(0)
    model = transformers.BertModel(BertConfig(**{**TINY, "max_position_embeddings": 128}))
    with torch.no_grad():
        for layer in model.encoder.layer:
            layer.attention.self.query.weight.normal_(0, 0.3)
            layer.attention.self.key.weight.normal_(0, 0.3)
    model.save_pretrained(src)
    ids = torch.randint(3, TINY["vocab_size"], (2, 90), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 75:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def hidden(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**inputs).last_hidden_state


def test_lln_diag_conversion_runs_blocks_of_the_head_size_but_at_least_64(tmp_path):
    src, dst = tmp_path / "bert", tmp_path / "lln-bert"
    inputs = save_long_stock(src)

    stock = transformers.AutoModel.from_pretrained(src, attn_implementation="lln_diag", dtype=torch.float32)
    assert type(stock) is transformers.BertModel and stock.config._attn_implementation == "lln_diag"
    expected = hidden(stock, inputs)

    convert_checkpoint(src, dst, variant="lln_diag")
    assert json.loads((dst / "config.json").read_text())["lln_block_size"] == 64
    converted = transformers.AutoModel.from_pretrained(dst, dtype=torch.float32)
    assert type(converted) is hf_lln.LLNBertModel
    assert (converted.config.lln_variant, converted.config.lln_block_size) == ("lln_diag", 64)
    assert converted.dtype == torch.float32
    torch.testing.assert_close(hidden(converted, inputs), expected)

    # Blocks of the head size (16) give other outputs, whichever way they are asked for.
    head_dst = tmp_path / "lln-bert-16"
    convert_checkpoint(src, head_dst, variant="lln_diag", lln_block_size=16)
    assert json.loads((head_dst / "config.json").read_text())["lln_block_size"] == 16
    head_blocks = hidden(transformers.AutoModel.from_pretrained(head_dst, dtype=torch.float32), inputs)
    assert (head_blocks - expected).abs().max() > 1e-3
    config = transformers.AutoConfig.from_pretrained(dst)
    config.lln_block_size = None  # an LLN config's None: the head size
    none_blocks = transformers.AutoModel.from_pretrained(dst, config=config, dtype=torch.float32)
    torch.testing.assert_close(hidden(none_blocks, inputs), head_blocks)
    stock.config.lln_block_size = 16  # a block size the stock config carries wins over the converted one
    torch.testing.assert_close(hidden(stock, inputs), head_blocks)


@pytest.mark.parametrize(("flags", "block_size"), [([], 64), (["--block_size", "16"], 16)])
def test_cli_block_size_defaults_to_the_converted_block_size(tmp_path, flags, block_size):
    src, dst = tmp_path / "bert", tmp_path / "lln-bert"
    save_stock(src, BertConfig(**TINY), "AutoModel")  # heads of 16
    assert main(["convert", str(src), str(dst), "--variant", "lln_diag", *flags]) == 0
    assert json.loads((dst / "config.json").read_text())["lln_block_size"] == block_size
    assert transformers.AutoModel.from_pretrained(dst).config.lln_block_size == block_size


def test_checkpoint_missing_a_weight_is_refused_before_writing(tmp_path):
    src = tmp_path / "src"
    save_stock(src, BertConfig(**TINY))
    weights = load_file(src / "model.safetensors")
    del weights["bert.encoder.layer.1.attention.self.key.weight"]
    save_file(weights, src / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing \['bert.encoder.layer.1.attention.self.key.weight'\]"):
        convert_checkpoint(src, tmp_path / "dst")
    assert not (tmp_path / "dst").exists()


def test_bad_arguments_are_refused(tmp_path):
    src = tmp_path / "src"
    save_stock(src, BertConfig(**TINY))
    with pytest.raises(FileExistsError, match="already exists"):
        convert_checkpoint(src, src)
    with pytest.raises(ValueError, match="max_position must exceed the 40 tokens"):
        convert_checkpoint(src, tmp_path / "dst", max_position=30)
    with pytest.raises(StrictDataclassError, match="lln_variant must be one of"):
        convert_checkpoint(src, tmp_path / "dst", variant="softmax")
    save_stock(
        tmp_path / "decoder", BertConfig(**TINY, is_decoder=True), model_class=transformers.BertLMHeadModel
    )
    with pytest.raises(ValueError, match="'BertLMHeadModel' has no LLN class"):
        convert_checkpoint(tmp_path / "decoder", tmp_path / "dst")
    with pytest.raises(SystemExit):
        main(["convert", str(src), str(tmp_path / "dst"), "--variant", "softmax"])


def test_sentence_transformers_files_are_carried_over_unchanged(tmp_path, capsys):
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer

    stock, src, dst = tmp_path / "bert", tmp_path / "st", tmp_path / "st-lln"
    save_stock(stock, BertConfig(**TINY), "AutoModel")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(35)]))
    BertTokenizer(vocab_file=str(vocab)).save_pretrained(stock)
    torch.manual_seed(1)
    modules = [
        Transformer(str(stock), max_seq_length=16),
        Pooling(TINY["hidden_size"]),
        Dense(32, 8),
        Normalize(),
    ]
    SentenceTransformer(modules=modules, device="cpu").save(str(src))
    (src / "onnx").mkdir()
    (src / "onnx" / "model.onnx").write_bytes(b"the softmax graph")
    (src / "train_script.py").write_text("# how the embeddings were trained\n")

    assert main(["convert", str(src), str(dst), "--variant", "lln_diag", "--max_position", "64"]) == 0
    printed = capsys.readouterr().out
    assert "sentence-transformers still truncates inputs at max_seq_length=16 tokens" in printed

    written = {"config.json", "model.safetensors", "README.md", "tokenizer.json", "tokenizer_config.json"}
    carried = []
    for path in sorted(src.rglob("*")):
        name = path.relative_to(src).as_posix()
        if path.is_dir() or name in written:
            continue
        if name.startswith("onnx/"):
            assert not (dst / name).exists()  # an export of the softmax model would run softmax attention
            continue
        assert (dst / name).read_bytes() == path.read_bytes(), name
        carried.append(name)
    assert {
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
        "2_Dense/model.safetensors",
    } <= set(carried)
    assert f"carried over unchanged: {', '.join(carried)}" in printed
    assert "exports): onnx/model.onnx\n" in printed

    source = SentenceTransformer(str(src), device="cpu")
    converted = SentenceTransformer(str(dst), device="cpu")
    assert type(converted[0].auto_model) is hf_lln.LLNBertModel
    assert [type(module) for module in converted] == [type(module) for module in source]
    assert converted.max_seq_length == source.max_seq_length == 16
    # Independent reference: the source model with its attention switched to the same variant.
    source[0].auto_model.set_attn_implementation("lln_diag")
    sentences = ["w1 w2 w3 w4 w5", "w6 w7"]
    expected = source.encode(sentences, convert_to_tensor=True)
    torch.testing.assert_close(converted.encode(sentences, convert_to_tensor=True), expected, rtol=0, atol=0)


def test_hub_checkpoint_files_are_carried_over(tmp_path):
    """A Hub id (served from a local Hub cache, offline) carries its files like a folder does."""
    snapshot = tmp_path / "hub" / "models--me--tiny-st" / "snapshots" / ("0" * 40)
    save_stock(snapshot, BertConfig(**TINY), "AutoModel")
    (snapshot / "modules.json").write_text('[{"idx": 0, "name": "0", "path": "", "type": "x.Transformer"}]')
    (snapshot / "1_Pooling").mkdir()
    (snapshot / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    (snapshot / "onnx").mkdir()
    (snapshot / "onnx" / "model.onnx").write_bytes(b"the softmax graph")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    command = [
        sys.executable,
        "-m",
        "hf_lln.cli",
        "convert",
        "me/tiny-st",
        str(tmp_path / "dst"),
        "--variant",
        "lln",
    ]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "carried over unchanged: 1_Pooling/config.json, modules.json" in result.stdout
    for name in ("modules.json", "1_Pooling/config.json"):
        assert (tmp_path / "dst" / name).read_bytes() == (snapshot / name).read_bytes()
    assert not (tmp_path / "dst" / "onnx").exists()
    assert "base_model: me/tiny-st" in (tmp_path / "dst" / "README.md").read_text()


@pytest.fixture(scope="module")
def converted_minilm(minilm_path, tmp_path_factory):
    dst = tmp_path_factory.mktemp("converted") / "minilm-lln"
    return dst, convert_checkpoint(minilm_path, dst, variant="lln_diag", max_position=1024)


def test_converted_folder_is_readable_by_others_and_its_card_names_the_source(tmp_path):
    """tempfile made the folder 0700 and the card and remote code 0600; safetensors the weights 0600."""
    src = tmp_path / "bert-src"
    save_stock(src, BertConfig(**TINY))
    previous = os.umask(0o022)
    try:
        convert_checkpoint(src, tmp_path / "dst", variant="lln", max_position=100)
    finally:
        os.umask(previous)
    dst = tmp_path / "dst"
    assert dst.stat().st_mode & 0o777 == 0o755
    modes = {path.name: path.stat().st_mode & 0o777 for path in dst.iterdir()}
    assert {"README.md", "modeling_lln.py", "model.safetensors"} <= modes.keys()
    assert set(modes.values()) == {0o644}, modes
    card = (dst / "README.md").read_text()
    assert "from the softmax checkpoint `bert-src` (a local folder)" in card
    assert "extended from the 40 tokens the source reads to\n100" in card


def test_cli_user_errors_are_one_line_with_status_2(tmp_path, capsys):
    src = tmp_path / "src"
    save_stock(src, BertConfig(**TINY))
    capsys.readouterr()
    for argv, message in [
        (
            ["convert", str(src), str(src)],
            f"hf-lln convert: error: dst {src} already exists; choose a new folder\n",
        ),
        (
            ["convert", "/nonexistent/bert", str(tmp_path / "x")],
            "hf-lln convert: error: src /nonexistent/bert: no such folder",
        ),
        (
            ["convert", str(src), str(tmp_path / "y"), "--max_position", "10"],
            "hf-lln convert: error: max_position must exceed",
        ),
    ]:
        assert main(argv) == 2
        captured = capsys.readouterr()
        # the last line of stderr (progress bars of the loading come before it), and no traceback
        last = captured.err.rstrip("\n").split("\n")[-1]
        assert (last + "\n").startswith(message), captured.err
        assert "Traceback" not in captured.err and captured.out == ""


def test_real_minilm_converts_and_reads_longer_inputs(converted_minilm):
    dst, report = converted_minilm
    assert (report.model_class, report.new_lln_weights, report.unused_weights) == ("LLNBertModel", [], [])
    model, loading = transformers.AutoModel.from_pretrained(dst, output_loading_info=True)
    assert type(model) is hf_lln.LLNBertModel and loading["missing_keys"] == set()
    tokenizer = transformers.AutoTokenizer.from_pretrained(dst)
    assert tokenizer.model_max_length == 1024
    data = tokenizer(" ".join(["linear attention"] * 400), truncation=True, return_tensors="pt")
    assert data["input_ids"].shape[1] > 512
    with torch.no_grad():
        assert torch.isfinite(model(**data).last_hidden_state).all()


def test_real_minilm_loads_in_sentence_transformers_with_its_modules(minilm_path, converted_minilm):
    pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer

    dst, report = converted_minilm
    assert {"modules.json", "sentence_bert_config.json", "1_Pooling/config.json"} <= set(report.carried_files)
    assert report.sentence_transformers_max_seq_length == 256
    source = SentenceTransformer(str(minilm_path), device="cpu")
    converted = SentenceTransformer(str(dst), device="cpu")
    assert [type(module).__name__ for module in converted] == ["Transformer", "Pooling", "Normalize"]
    assert [type(module) for module in converted] == [type(module) for module in source]
    assert converted.max_seq_length == source.max_seq_length == 256
    source[0].auto_model.set_attn_implementation("lln_diag")
    sentences = ["Linear attention keeps the cost linear.", "A much shorter one."]
    expected = source.encode(sentences, convert_to_tensor=True)
    embeddings = converted.encode(sentences, convert_to_tensor=True)
    torch.testing.assert_close(embeddings, expected)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(2))
