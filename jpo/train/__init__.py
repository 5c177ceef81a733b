"""Training: the RLlib SAC recipe, its behaviour-cloning term and continuous learning."""
