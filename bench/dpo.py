"""DPO step time with a live reference model versus ``precompute_ref_log_probs`` (TRL 1.16).

With a reference model every step runs the policy forward+backward and a frozen reference
forward on the same batch; with precomputed reference log-probs the reference pass happens
once, at trainer construction, over the whole dataset, and steps only run the policy. This
script builds the same toy preference set (prompts from ``tests/align_models.py``, chosen =
a pleasant object, rejected = another one), builds the DPO config the way ``rlaif train dpo``
does (``align.train.trainers.build_config``: CPU defaults), and reports trainer construction time
(including the precompute) and the median seconds per step after the first.

    .venv/bin/python bench/dpo.py                          # tiny synthetic Llama, 8 steps
    .venv/bin/python bench/dpo.py --model default --steps 4 # SmolLM2-135M (embedded default)
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from transformers import AutoTokenizer, TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from align_models import build_policy, build_tokenizer, toy_prompts  # noqa: E402

from align.train.trainers import build_config, resolve_model  # noqa: E402

GOOD = ["a good plan", "some nice music", "bright colours", "the new book"]
BAD = ["the red apple", "a long story", "a small house", "42 tiny stones"]


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)


def toy_pairs(n: int, seed: int = 0):
    from datasets import Dataset

    rng = random.Random(seed)
    return Dataset.from_list([
        {"prompt": prompt,
         "chosen": [{"role": "assistant", "content": f"It is {rng.choice(GOOD)}."}],
         "rejected": [{"role": "assistant", "content": f"It is {rng.choice(BAD)}."}]}
        for prompt in toy_prompts(n, seed=seed)
    ])


def time_dpo(model_dir: str, precompute: bool, args: argparse.Namespace, out: Path) -> dict:
    """Construct a DPOTrainer and run ``args.steps`` steps; returns the timings."""
    from trl import DPOTrainer

    config = build_config(
        "dpo", out, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        max_length=args.max_length, precompute_ref_log_probs=precompute, logging_steps=10**6,
        disable_tqdm=True,
    )
    timer = StepTimer()
    start = time.perf_counter()
    trainer = DPOTrainer(model=model_dir, args=config, train_dataset=toy_pairs(args.rows),
                         processing_class=AutoTokenizer.from_pretrained(model_dir),
                         callbacks=[timer])
    init_s = time.perf_counter() - start
    trainer.train()
    return {"precompute_ref": precompute, "init_s": round(init_s, 2),
            "first_step_s": round(timer.seconds[0], 3),
            "median_step_s": round(statistics.median(timer.seconds[1:]), 3),
            "steps": len(timer.seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", help="tiny, default, or a model directory")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--rows", type=int, default=64, help="pairs in the dataset")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.model == "tiny":
            model_dir = str(build_policy(build_tokenizer(), Path(tmp) / "policy"))
        else:
            model_dir = resolve_model(args.model)
        results = [time_dpo(model_dir, precompute, args, Path(tmp) / f"out{precompute}")
                   for precompute in (False, True)]
    for result in results:
        mode = "precomputed ref" if result["precompute_ref"] else "reference model"
        print(f"{args.model:>8} {mode:<16} init {result['init_s']:6.2f} s   "
              f"step {result['median_step_s']:.3f} s (median of {result['steps'] - 1}, "
              f"first {result['first_step_s']:.3f} s)")
    print(json.dumps({"model": args.model, "batch_size": args.batch_size,
                      "max_length": args.max_length, "rows": args.rows, "results": results}))


if __name__ == "__main__":
    main()
