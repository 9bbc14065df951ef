"""`rlaif eval`: reward-model accuracy, win rates and held-out constraint satisfaction."""
