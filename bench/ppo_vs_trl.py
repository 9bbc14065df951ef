"""Project PPO vs TRL 1.12.0's PPOTrainer on the same toy task, model and budget, one run each.

The toy task is the one in tests/test_ppo.py: a random tiny Llama policy on a synthetic
byte-level BPE, and a hand-set reward model scoring 5x the mean of +1 (alphabetic token) / -1
(other token) over prompt + response, so the reward rises when the policy answers in letters.
TRL removed PPO after 1.12, so TRL runs in its own virtualenv that this script creates once
(``torch==2.13.0`` is installed first so pip does not pull a CUDA build). Both runs use the same
settings: batch, epochs, response length, learning rate (constant), KL coefficient, temperature,
eos as stop token, no gradient clipping (TRL 1.12 does not clip), fp32, one CPU thread.

    .venv/bin/python bench/ppo_vs_trl.py [--updates 30] [--venv /tmp/rlaif-trl112]

Prints reward gain (mean score of the last 5 updates minus the first 5), final KL and seconds per
update (median, first update excluded) side by side, and writes ``results.json`` (and TRL's log,
``trl.log``) in ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TRL_RUNNER = r'''
import json, sys, time
import torch
from datasets import Dataset
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification,
                          AutoTokenizer, TrainerCallback)
from trl.experimental.ppo import PPOConfig, PPOTrainer

spec = json.load(open(sys.argv[1]))
torch.set_num_threads(spec["threads"])
tok = AutoTokenizer.from_pretrained(spec["policy"])
ids = [tok(tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True),
           add_special_tokens=False)["input_ids"] for p in spec["prompts"]]
data = Dataset.from_dict({"input_ids": ids})


class Clock(TrainerCallback):
    def __init__(self):
        self.stamps = []

    def on_train_begin(self, args, state, control, **kw):
        self.stamps.append(time.perf_counter())

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "objective/scores" in logs:
            self.stamps.append(time.perf_counter())


clock = Clock()
args = PPOConfig(
    output_dir=spec["work"] + "/trl_out", per_device_train_batch_size=spec["batch_size"],
    gradient_accumulation_steps=1, num_mini_batches=1, num_ppo_epochs=spec["num_ppo_epochs"],
    total_episodes=spec["batch_size"] * spec["updates"], response_length=spec["response_length"],
    learning_rate=spec["learning_rate"], lr_scheduler_type="constant", kl_coef=spec["kl_coef"],
    temperature=spec["temperature"], stop_token="eos", seed=spec["seed"], logging_steps=1,
    num_sample_generations=0, bf16=False, use_cpu=True, gradient_checkpointing=False,
    report_to="none", save_strategy="no", dataloader_pin_memory=False,
)
trainer = PPOTrainer(
    args=args, processing_class=tok,
    model=AutoModelForCausalLM.from_pretrained(spec["policy"]),
    ref_model=AutoModelForCausalLM.from_pretrained(spec["policy"]),
    reward_model=AutoModelForSequenceClassification.from_pretrained(spec["reward"], num_labels=1),
    value_model=AutoModelForSequenceClassification.from_pretrained(spec["reward"], num_labels=1),
    train_dataset=data, callbacks=[clock],
)
trainer.train()
rows = [row for row in trainer.state.log_history if "objective/scores" in row]
seconds = [b - a for a, b in zip(clock.stamps, clock.stamps[1:])]
json.dump({"score": [r["objective/scores"] for r in rows], "kl": [r["objective/kl"] for r in rows],
           "seconds": seconds}, open(spec["work"] + "/trl_result.json", "w"))
'''


def ensure_trl_venv(venv: Path, transformers_version: str) -> Path:
    """Create (once) a virtualenv with trl 1.12.0 on CPU torch 2.13.0; return its python."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import trl, sys; sys.exit(trl.__version__ != '1.12.0')"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)
    subprocess.run([*pip, "torch==2.13.0", "trl==1.12.0", f"transformers=={transformers_version}",
                    "datasets", "accelerate"], check=True)
    return python


def build_toy(work: Path) -> dict[str, str]:
    """Save the toy policy and reward model under ``work``."""
    sys.path.insert(0, str(REPO / "tests"))
    from align_models import (
        alphabetic_token_ids,
        build_policy,
        build_token_reward_model,
        build_tokenizer,
    )

    tokenizer = build_tokenizer()
    policy = build_policy(tokenizer, work / "policy")
    reward = build_token_reward_model(tokenizer, work / "reward", alphabetic_token_ids(tokenizer),
                                      pooling="mean", scale=5.0)
    return {"policy": str(policy), "reward": str(reward)}


def run_ours(spec: dict) -> dict[str, list[float]]:
    """One run of align.ppo.loop with the bench settings."""
    import torch

    from align.ppo.loop import PPOConfig, train_ppo

    torch.set_num_threads(spec["threads"])
    config = PPOConfig(
        learning_rate=spec["learning_rate"], lr_schedule="constant", max_grad_norm=None,
        batch_size=spec["batch_size"], total_episodes=spec["batch_size"] * spec["updates"],
        num_ppo_epochs=spec["num_ppo_epochs"], response_length=spec["response_length"],
        temperature=spec["temperature"], kl_coef=spec["kl_coef"], seed=spec["seed"],
    )
    out = Path(spec["work"]) / "ours_out"
    shutil.rmtree(out, ignore_errors=True)
    metrics = train_ppo(config, policy=spec["policy"], reward_model=spec["reward"],
                        prompts=spec["prompts"], output_dir=out).metrics
    return {"score": [m["score"] for m in metrics], "kl": [m["kl"] for m in metrics],
            "seconds": [m["seconds"] for m in metrics]}


def summarise(run: dict[str, list[float]]) -> dict[str, float]:
    """Reward gain (last 5 vs first 5 updates), final KL, median seconds per update."""
    score = run["score"]
    return {
        "score_first5": statistics.mean(score[:5]),
        "score_last5": statistics.mean(score[-5:]),
        "reward_gain": statistics.mean(score[-5:]) - statistics.mean(score[:5]),
        "kl_last5": statistics.mean(run["kl"][-5:]),
        "s_per_update": statistics.median(run["seconds"][1:]),
        "updates": len(score),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/rlaif-ppo-bench"))
    parser.add_argument("--venv", type=Path, default=Path("/tmp/rlaif-trl112"))
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"
    import transformers

    sys.path.insert(0, str(REPO))
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    python = ensure_trl_venv(args.venv, transformers.__version__)
    print(f"TRL venv ready at {args.venv} ({time.perf_counter() - started:.0f}s)")
    spec = {
        "work": str(args.work), "updates": args.updates, "threads": args.threads,
        "seed": args.seed, "batch_size": 16, "num_ppo_epochs": 4, "response_length": 8,
        "learning_rate": 3e-3, "kl_coef": 0.05, "temperature": 0.7,
        **build_toy(args.work),
    }
    from align_models import toy_prompts

    spec["prompts"] = toy_prompts(64)
    (args.work / "spec.json").write_text(json.dumps(spec))
    (args.work / "trl_runner.py").write_text(TRL_RUNNER)
    ours = summarise(run_ours(spec))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    with open(args.work / "trl.log", "w") as log:
        subprocess.run([str(python), str(args.work / "trl_runner.py"),
                        str(args.work / "spec.json")], check=True, env=env, stdout=log,
                       stderr=subprocess.STDOUT)
    trl = summarise(json.loads((args.work / "trl_result.json").read_text()))
    print(f"{'':24}{'project PPO':>14}{'TRL 1.12.0':>14}")
    for key in ours:
        print(f"{key:24}{ours[key]:>14.3f}{trl[key]:>14.3f}")
    (args.work / "results.json").write_text(json.dumps({"ours": ours, "trl": trl, "spec": {
        k: v for k, v in spec.items() if k != "prompts"}}, indent=2))


if __name__ == "__main__":
    main()
