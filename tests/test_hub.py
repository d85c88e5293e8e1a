"""Model cards, and loading saved LLN models with ``trust_remote_code=True`` where hf_lln cannot be imported."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from huggingface_hub import EvalResult, ModelCard, metadata_load
from transformers import BertConfig, BertTokenizer

from hf_lln.hub import write_model_card
from hf_lln.models import (
    AUTO_MODEL_CLASSES,
    LLNBertConfig,
    LLNBertModel,
    LLNRobertaConfig,
    LLNRobertaModel,
    modeling_lln,
)
from hf_lln.remote_code import remote_code_sources
from tests._tiny import TINY

SST2 = EvalResult(
    task_type="text-classification",
    dataset_type="nyu-mll/glue",
    dataset_name="GLUE SST-2",
    dataset_config="sst2",
    dataset_split="validation",
    metric_type="accuracy",
    metric_value=0.912,
)


def classifier_config(**settings) -> LLNBertConfig:
    config = LLNBertConfig(**TINY, **settings)
    config.architectures = ["LLNBertForSequenceClassification"]
    return config


def test_model_card_metadata_model_index_and_body(tmp_path):
    path = write_model_card(
        tmp_path / "lln-minilm-sst2",
        classifier_config(lln_variant="lln_diag", lln_block_size=16),
        base_model="sentence-transformers/all-MiniLM-L6-v2",
        datasets=["nyu-mll/glue"],
        eval_results=[SST2],
        training_summary="Fine-tuned for 3 epochs on SST-2.",
    )
    assert path == tmp_path / "lln-minilm-sst2" / "README.md"
    metadata = metadata_load(path)
    assert metadata["library_name"] == "transformers"
    assert {"hf-lln", "lln_diag", "bert"} <= set(metadata["tags"])
    assert metadata["datasets"] == ["nyu-mll/glue"]
    assert metadata["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert metadata["pipeline_tag"] == "text-classification"
    (entry,) = metadata["model-index"]
    assert entry["name"] == "lln-minilm-sst2"
    (result,) = entry["results"]
    assert result["dataset"]["config"] == "sst2"
    assert result["metrics"] == [{"type": "accuracy", "value": 0.912}]
    text = ModelCard.load(path).text
    assert (
        'AutoModelForSequenceClassification.from_pretrained("lln-minilm-sst2", trust_remote_code=True)'
        in text
    )
    assert "| `lln_block_size` | `16` |" in text
    assert "Fine-tuned for 3 epochs on SST-2." in text
    assert "| text-classification | GLUE SST-2 | accuracy | 0.912 |" in text


def test_model_card_without_results_has_no_model_index(tmp_path):
    metadata = metadata_load(write_model_card(tmp_path, classifier_config(lln_variant="performer")))
    assert "model-index" not in metadata and "performer" in metadata["tags"]
    assert "## Results" not in ModelCard.load(tmp_path / "README.md").text


def test_model_card_of_a_stock_model_shows_the_settings_in_use(tmp_path):
    config = BertConfig(**TINY, attn_implementation="lln_diag")
    text = ModelCard.load(write_model_card(tmp_path / "lln", config)).text
    assert "| `lln_variant` | `lln_diag` |" in text and "| `lln_mix_mode` | `average` |" in text
    softmax = ModelCard.load(
        write_model_card(tmp_path / "sdpa", BertConfig(**TINY, attn_implementation="sdpa"))
    )
    assert "softmax attention" in softmax.text and "## Attention settings" not in softmax.text


@pytest.mark.parametrize(
    ("variant", "shown"),
    [
        ("lln_diag", {"lln_block_size", "lln_mix_mode", "lln_eps", "lln_stats"}),
        ("lln", {"lln_eps", "lln_stats"}),
        ("linear_elu", {"lln_eps"}),
        ("cosformer", {"lln_eps"}),
        ("performer", {"lln_eps", "lln_performer_features", "lln_performer_seed"}),
        ("cheap_linear", set()),
    ],
)
def test_model_card_shows_only_the_settings_the_variant_reads(tmp_path, variant, shown):
    text = ModelCard.load(write_model_card(tmp_path, classifier_config(lln_variant=variant))).text
    rows = {line.split("`")[1] for line in text.splitlines() if line.startswith("| `lln_")}
    assert rows == {"lln_variant", *shown}
    if variant == "lln_diag":  # the block in effect, not None: TINY's heads are 32 / 2 = 16 wide
        assert "| `lln_block_size` | `16 (the head size)` |" in text
    # hf-lln is not on PyPI: the card says how to install it for real
    assert "pip install hf-lln" not in text and "not on PyPI yet" in text


def test_eval_results_must_be_eval_result_objects(tmp_path):
    with pytest.raises(TypeError, match="EvalResult"):
        write_model_card(tmp_path, classifier_config(), eval_results=[{"accuracy": 0.9}])


def test_remote_code_is_hf_lln_free_and_self_contained():
    sources = remote_code_sources(LLNRobertaModel)
    assert {"modeling_lln.py", "configuration_lln.py", "attention.py", "lln.py", "lln_diag.py"} <= set(
        sources
    )
    # Only what a model needs: no Hub helpers, no exporter, no kernels (they are optional imports there).
    assert not {"hub.py", "remote_code.py", "kernels.py", "functions.py"} & set(sources)
    for file_name, source in sources.items():
        tree = ast.parse(source)
        optional = {
            id(inner) for node in ast.walk(tree) if isinstance(node, ast.Try) for inner in ast.walk(node)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not any(alias.name.startswith("hf_lln") for alias in node.names), file_name
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("hf_lln"), file_name
                if node.level == 1 and node.module and id(node) not in optional:
                    assert f"{node.module}.py" in sources, (file_name, node.module)


REMOTE_LOAD = textwrap.dedent(
    """
    import importlib.abc, sys

    class NoHfLln(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] == "hf_lln":
                raise ModuleNotFoundError(name)

    sys.meta_path.insert(0, NoHfLln())
    import torch, transformers

    cases = torch.load(sys.argv[1])
    for folder, (auto_name, inputs, expected) in cases.items():
        model = getattr(transformers, auto_name).from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model)
        with torch.no_grad():
            output = model(**inputs)
        output = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        assert torch.equal(output, expected), folder
    model.save_pretrained(sys.argv[2])
    again = getattr(transformers, auto_name).from_pretrained(sys.argv[2], trust_remote_code=True).eval()
    with torch.no_grad():
        output = again(**inputs)
    assert torch.equal(output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0], expected)
    assert not [name for name in sys.modules if name.split(".")[0] == "hf_lln"]
    print("loaded", len(cases))
    """
)


def assert_remote_loads(cases: dict, tmp_path: Path) -> None:
    """Run ``REMOTE_LOAD`` on ``cases`` (folder -> ``(auto class name, inputs, expected output)``) in a process that
    cannot import hf_lln, and assert that every folder loads as remote code with the expected outputs."""
    torch.save(cases, tmp_path / "cases.pt")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_LOAD, str(tmp_path / "cases.pt"), str(tmp_path / "resaved")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"loaded {len(cases)}" in result.stdout


def test_every_head_loads_with_trust_remote_code_without_hf_lln(tmp_path):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(3, TINY["vocab_size"], (2, 9), generator=generator)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    cases = {}
    for model_type, classes in AUTO_MODEL_CLASSES.items():
        for auto_name, model_class in classes.items():
            if auto_name == "AutoConfig":
                continue
            torch.manual_seed(0)
            model = model_class(classes["AutoConfig"](**TINY, lln_mix_mode="learnable_scale")).eval()
            with torch.no_grad():
                for name, parameter in model.named_parameters():
                    if ".lln_mix." in name:
                        parameter.uniform_(0.1, 0.9)
            folder = tmp_path / model_type / auto_name
            model.save_pretrained(folder)
            inputs = {"input_ids": ids, "attention_mask": mask}
            if auto_name == "AutoModelForMultipleChoice":
                inputs = {key: torch.stack([value, value.flip(1)], 1) for key, value in inputs.items()}
            with torch.no_grad():
                output = model(**inputs)
            expected = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
            cases[str(folder)] = (auto_name, inputs, expected)
    assert_remote_loads(cases, tmp_path)


def test_save_pretrained_with_push_to_hub_uploads_after_the_remote_code_is_written(tmp_path, monkeypatch):
    uploads = []

    def fake_push(folder, repo_id, **kwargs):
        uploads.append((repo_id, kwargs, sorted(path.name for path in Path(folder).iterdir())))

    monkeypatch.setattr(modeling_lln.hub, "push_folder_to_hub", fake_push)
    model = LLNRobertaModel(LLNRobertaConfig(**TINY))
    model.save_pretrained(
        tmp_path / "out", push_to_hub=True, repo_id="me/lln-roberta", commit_message="first"
    )
    ((repo_id, kwargs, files),) = uploads
    assert (repo_id, kwargs) == ("me/lln-roberta", {"token": None, "commit_message": "first"})
    assert {"config.json", "model.safetensors", "modeling_lln.py", "configuration_lln.py"} <= set(files)


CARD_SNIPPET = textwrap.dedent(
    """
    import importlib.abc, sys

    class NoHfLln(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] == "hf_lln":
                raise ModuleNotFoundError(name)

    sys.meta_path.insert(0, NoHfLln())
    try:
        import hf_lln
    except ModuleNotFoundError:
        pass
    else:
        raise AssertionError("hf_lln is importable")
    import torch, transformers

    snippet, text, expected_ids, expected = torch.load(sys.argv[1])
    remote_modules_after_tokenizer = []
    load_tokenizer = transformers.AutoTokenizer.from_pretrained.__func__

    def recording_load(cls, *args, **kwargs):
        tokenizer = load_tokenizer(cls, *args, **kwargs)
        remote_modules_after_tokenizer.append([name for name in sys.modules if name.startswith("transformers_modules")])
        return tokenizer

    transformers.AutoTokenizer.from_pretrained = classmethod(recording_load)
    namespace = {}
    exec(snippet, namespace)
    tokenizer, model = namespace["tokenizer"], namespace["model"]
    assert remote_modules_after_tokenizer == [[]], remote_modules_after_tokenizer
    assert type(tokenizer).__module__.startswith("transformers.models.bert."), type(tokenizer)
    assert type(model).__module__.startswith("transformers_modules"), type(model)
    assert tokenizer(text)["input_ids"] == expected_ids
    with torch.no_grad():
        # one thread here, several in the test process: the sums round differently
        out = model.eval()(**tokenizer(text, return_tensors="pt")).last_hidden_state
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    print("card snippet ran")
    """
)


def test_model_card_snippet_without_hf_lln_loads_the_tokenizer_with_no_remote_code(tmp_path):
    folder = tmp_path / "lln-tiny"
    torch.manual_seed(0)
    model = LLNBertModel(LLNBertConfig(**TINY, lln_variant="lln")).eval()
    model.save_pretrained(folder)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(35)]))
    tokenizer = BertTokenizer(vocab_file=str(vocab))
    tokenizer.save_pretrained(folder)
    card = ModelCard.load(write_model_card(folder, model.config)).text
    without = card[card.index("Without hf_lln") :]
    # where Transformers refuses the custom code, the card says to install hf_lln (as it can be installed today)
    assert "hf_lln is not installed" in without and "git repository or a local clone" in without
    snippet = without[without.index("```python\n") + len("```python\n") :]
    snippet = snippet[: snippet.index("```")]
    text = "w1 w2 w3 w4 w5"
    with torch.no_grad():
        expected = model(**tokenizer(text, return_tensors="pt")).last_hidden_state
    torch.save((snippet, text, tokenizer(text)["input_ids"], expected), tmp_path / "case.pt")

    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", CARD_SNIPPET, str(tmp_path / "case.pt")],
        cwd=tmp_path,  # the card names the folder by its name
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "card snippet ran" in result.stdout
    assert "Do you wish to run the custom code" not in result.stdout + result.stderr
