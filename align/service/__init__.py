"""`rlaif service`: the job API and the human labelling page over HTTP."""
