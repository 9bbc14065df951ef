"""The name of every table in the project database, each defined once.

Modules that read or write a table import its name from here, so a table is never spelt as a
string in two places, and ``datagen.store.schema`` (where each table's columns are declared in a
named migration) is the only other place that names it.
"""

from __future__ import annotations

MIGRATIONS = "_migrations"

# the request ledger, the runs that made data and hosted Batch API jobs
REQUESTS = "requests"
RUNS = "runs"
HOSTED_BATCHES = "hosted_batches"

# Self-Instruct (datagen.self_instruct)
SI_INSTRUCTIONS = "si_instructions"
SI_ROUNDS = "si_rounds"
SI_TASKS = "si_tasks"
SI_INSTANCES = "si_instances"
SI_FAILURES = "si_failures"

# FLAN (datagen.flan) and Constitutional AI (datagen.constitutional)
FLAN_EXAMPLES = "flan_examples"
CAI_SAMPLES = "cai_samples"

# sampled responses and the pairs formed from them (datagen.responses)
RESPONSES = "responses"
PAIRS = "pairs"

# prompts with verifiable constraints (judges.constraints)
CONSTRAINED_PROMPTS = "constrained_prompts"

# pipeline stages (align.pipeline) and service jobs (align.service)
PIPELINE_STAGES = "pipeline_stages"
JOBS = "jobs"

# human labelling (align.labeling)
LABEL_ITEMS = "label_items"
LABEL_SETTINGS = "label_settings"
LABEL_VOTES = "label_votes"
LABEL_CONSENSUS = "label_consensus"

# rlaif service: who may use it, what they uploaded, what they changed
SERVICE_USERS = "service_users"
SERVICE_TOKENS = "service_tokens"
SERVICE_FILES = "service_files"
SERVICE_AUDIT = "service_audit"
