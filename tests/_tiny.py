"""The tiny BERT/RoBERTa sizes the model-level tests share (no dropout, so outputs are deterministic), and a tiny
BERT checkpoint that reads real text."""

import string

import torch
from transformers import BertConfig, BertModel, BertTokenizer

TINY = dict(
    vocab_size=40,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=40,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def character_bert(folder, *, sharp: bool = False):
    """Save to ``folder`` a 1-layer BERT (one head of 64, the head size LLN's moment constants cover, 256 positions)
    with a character vocabulary (any lower-case English text tokenizes); returns ``folder``. ``sharp``: query and key
    weights of std 0.3, so that softmax and the linear attentions differ as in a trained model (the 0.02-std
    initialisation gives nearly uniform attention rows, where they barely differ)."""
    characters = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *characters, *(f"##{c}" for c in characters)]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(vocab=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        num_hidden_layers=1,
        num_attention_heads=1,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    torch.manual_seed(0)
    model = BertModel(config)
    if sharp:
        with torch.no_grad():
            for linear in (
                model.encoder.layer[0].attention.self.query,
                model.encoder.layer[0].attention.self.key,
            ):
                linear.weight.normal_(0, 0.3)
    model.save_pretrained(folder)
    return folder
