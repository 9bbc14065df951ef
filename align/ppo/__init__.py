"""The project's own PPO for language models (`rlaif train ppo`)."""
