"""rnn_models."""
