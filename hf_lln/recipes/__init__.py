"""Training recipes: MLM pretraining and GLUE fine-tuning, with the training loop they share."""
