"""hf_lln.experiments.embedding_similarity on a tiny BERT and the GLUE fixtures."""

from __future__ import annotations

from pathlib import Path

from hf_lln.convert import convert_checkpoint
from hf_lln.experiments import embedding_similarity
from tests._tiny import character_bert

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "glue"


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| lln")]


def test_reference_scores_a_converted_model_against_its_softmax_source(tmp_path, capsys):
    (tmp_path / "bert").mkdir()
    source = character_bert(tmp_path / "bert", sharp=True)
    convert_checkpoint(source, tmp_path / "lln", variant="lln")
    common = ["--glue_dir", str(FIXTURES), "--sentences", "3", "--variants", "lln", "lln_diag"]
    capsys.readouterr()
    assert embedding_similarity.main(["--model_name_or_path", str(source), *common]) == 0
    swapped = capsys.readouterr().out
    converted_flags = ["--model_name_or_path", str(tmp_path / "lln"), "--reference", str(source)]
    assert embedding_similarity.main([*converted_flags, *common]) == 0
    converted = capsys.readouterr().out
    assert "3 SST-2 dev sentences, lln, mean-pooled embeddings vs softmax bert" in converted
    # the converted model without transfer is the source with its attention swapped
    assert table_rows(converted) == table_rows(swapped) and len(table_rows(swapped)) == 2
