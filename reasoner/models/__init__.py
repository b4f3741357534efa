"""Models: builders of the embedded default checkpoints, loading, and the log-prob scorer."""
