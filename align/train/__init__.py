"""`rlaif train sft|rm|dpo`: TRL's trainers over exported datasets."""
