"""Online RL from AI and verifier feedback: GRPO, RLOO and online DPO with a reward-hacking watch."""
