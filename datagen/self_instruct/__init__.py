"""Self-Instruct: instructions bootstrapped from seed tasks, with the ROUGE-L novelty filter."""
