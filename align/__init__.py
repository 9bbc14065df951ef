"""Training on generated data: dataset export, TRL trainers, the project's own PPO, evaluation."""
