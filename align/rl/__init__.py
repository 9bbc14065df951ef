"""Online RL from AI and verifier feedback (GRPO, RLOO, online DPO) and a reward-hacking watch."""
