"""GLUE metric: the ``evaluate`` module that ``hf_lln.recipes.glue.metrics`` loads by path, with no network.

The definitions are those of the ``glue`` metric on the Hugging Face Hub (``evaluate.load("glue", task)``):
scikit-learn's ``matthews_corrcoef`` for CoLA, scipy's ``pearsonr`` and ``spearmanr`` for STS-B, the share
of exact matches plus scikit-learn's ``f1_score`` (binary, positive class 1) for MRPC and QQP, and the share
of exact matches for every other task. Inputs are class ids (``int64``), scores for STS-B (``float64``).
One difference: the Hub's module has its inputs formatted as numpy, whose formatter (in ``datasets``) turns
floats into ``float32``, which moves a correlation near zero by about 1e-6 of its value; here they arrive as
Python numbers and become ``float64`` arrays, so the correlations are scipy's on the scores as given.

evaluate reads this file's imports to check that they are installed, so keep them at the top level.
"""

import datasets
import evaluate
import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

CONFIG_NAMES = (
    "sst2",
    "mnli",
    "mnli_mismatched",
    "mnli_matched",
    "cola",
    "stsb",
    "mrpc",
    "qqp",
    "qnli",
    "rte",
    "wnli",
    "hans",
)

_CITATION = """\
@inproceedings{wang2019glue,
  title={{GLUE}: A Multi-Task Benchmark and Analysis Platform for Natural Language Understanding},
  author={Wang, Alex and Singh, Amanpreet and Michael, Julian and Hill, Felix and Levy, Omer and Bowman, Samuel R.},
  note={In the Proceedings of ICLR.},
  year={2019}
}
"""

_DESCRIPTION = """\
The metric of each GLUE task (https://gluebenchmark.com/): Matthews correlation (CoLA), Pearson and Spearman
correlations (STS-B), accuracy and F1 (MRPC, QQP), accuracy (the others).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: predicted class ids (STS-B: scores), one per example.
    references: gold class ids (STS-B: scores), as many as predictions.
Returns, by task (the config name):
    cola: "matthews_correlation"; stsb: "pearson", "spearmanr"; mrpc, qqp: "accuracy", "f1";
    sst2, mnli, mnli_matched, mnli_mismatched, qnli, rte, wnli, hans: "accuracy".
"""


def exact_match_share(predictions, references) -> float:
    """Accuracy: the share of predictions equal to their reference."""
    return float((predictions == references).mean())


class GlueMetric(evaluate.Metric):
    """The GLUE metric of the task named by ``config_name``."""

    def _info(self):
        if self.config_name not in CONFIG_NAMES:
            raise KeyError(f"config_name must be one of {list(CONFIG_NAMES)}, got {self.config_name!r}")
        value_type = "float64" if self.config_name == "stsb" else "int64"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value(value_type), "references": datasets.Value(value_type)}
            ),
            reference_urls=["https://huggingface.co/spaces/evaluate-metric/glue"],
        )

    def _compute(self, predictions, references):
        predictions, references = np.asarray(predictions), np.asarray(references)
        if self.config_name == "cola":
            return {"matthews_correlation": float(matthews_corrcoef(references, predictions))}
        if self.config_name == "stsb":
            return {
                "pearson": float(pearsonr(predictions, references)[0]),
                "spearmanr": float(spearmanr(predictions, references)[0]),
            }
        result = {"accuracy": exact_match_share(predictions, references)}
        if self.config_name in ("mrpc", "qqp"):
            result["f1"] = float(f1_score(y_true=references, y_pred=predictions))
        return result
