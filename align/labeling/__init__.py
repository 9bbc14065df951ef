"""Human preference labelling: the queue, votes, gold checks, consensus and agreement."""
