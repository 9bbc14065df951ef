"""Does DPO on verifier-labelled pairs raise held-out constraint satisfaction? (SmolLM2-135M, CPU)

The claim behind the constrained-prompt recipe is that exact labels from the constraint
verifier are a usable training signal: a policy trained on them should satisfy the
constraints of prompts it never saw more often than the policy it started from. This script
measures that, end to end, with the project's own pieces:

1. the bundled everyday prompts (``judges/constraints/data/constrained_prompts.jsonl``) are split
by a hash
   of their id into training and held-out prompts, and each gets 1-2 constraints
   (``judges.constraints.prompts.add_constraints``, seeded);
2. the starting policy samples ``--samples`` answers per training prompt
   (``align.eval.heldout.sample_policy``: served by `rlaif serve`, through the ledger); every
   pair of answers to a prompt is labelled by the verifier
   (``judges.constraints.verify.verify_pair``) and ties are dropped, giving
   prompt/chosen/rejected rows;
3. DPO (``align.train.trainers.build_config`` and TRL's ``DPOTrainer``, constant learning rate)
runs for
   ``--minutes`` of wall time, cycling over the pairs, and the model is saved;
4. the starting and the trained policy answer the same held-out prompts with the same
   sampling settings and seeds (``align.eval.heldout.constraint_eval``): the share of answers
   satisfying every constraint, per constraint kind, with Wilson 95% intervals, and a paired
   bootstrap interval of the difference.

Sampling and evaluation come on top of the DPO budget (about 15 minutes more at the defaults
on 2 cores). The JSON result goes to ``--out``.

    .venv/bin/python bench/alignment_effect.py                      # ~30 min of DPO
    .venv/bin/python bench/alignment_effect.py --minutes 5 --train-prompts 40 --heldout 40
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

from transformers import AutoTokenizer, TrainerCallback

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from align.eval.heldout import constraint_eval, format_eval, sample_policy  # noqa: E402
from align.train.trainers import build_config, resolve_model, save_model  # noqa: E402
from datagen import store  # noqa: E402
from datagen.jsonl import write_jsonl  # noqa: E402
from judges.constraints.prompts import add_constraints, load_base_prompts  # noqa: E402
from judges.constraints.verify import verify_pair  # noqa: E402


class Deadline(TrainerCallback):
    """Stop training once the wall-clock budget is spent (checked after each step)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = 0.0
        self.steps = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.steps = state.global_step
        if time.perf_counter() - self.start >= self.seconds:
            control.should_training_stop = True


def split_prompts(heldout_share: float, seed: int) -> tuple[list, list]:
    """(train, held-out) base prompts, split by a seeded hash of the id."""
    train, heldout = [], []
    for prompt in load_base_prompts():
        digest = hashlib.sha256(f"{seed}:{prompt.id}".encode()).digest()
        (heldout if digest[0] / 256 < heldout_share else train).append(prompt)
    return train, heldout


def verifier_pairs(rows: list, answers: list[list[str]]) -> tuple[list[dict], int]:
    """prompt/chosen/rejected rows from every decided pair of answers; also the tie count."""
    pairs, ties = [], 0
    for row, texts in zip(rows, answers, strict=True):
        for a, b in itertools.combinations(texts, 2):
            label = verify_pair(row.constraints, a, b)
            if label["preferred"] == "tie":
                ties += 1
                continue
            chosen, rejected = (a, b) if label["preferred"] == "a" else (b, a)
            pairs.append({"prompt": [{"role": "user", "content": row.prompt}],
                          "chosen": [{"role": "assistant", "content": chosen}],
                          "rejected": [{"role": "assistant", "content": rejected}]})
    return pairs, ties


def train_dpo(model_dir: str, pairs: list[dict], out: Path, args: argparse.Namespace) -> dict:
    """DPO on the pairs until the time budget is spent; saves the policy to ``out``."""
    from datasets import Dataset
    from trl import DPOTrainer

    config = build_config(
        "dpo", out, max_steps=10**6, per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr, lr_scheduler_type="constant", beta=args.beta,
        max_length=args.max_length, seed=args.seed, logging_steps=10, disable_tqdm=True,
    )
    deadline = Deadline(args.minutes * 60)
    trainer = DPOTrainer(model=model_dir, args=config, train_dataset=Dataset.from_list(pairs),
                         processing_class=AutoTokenizer.from_pretrained(model_dir),
                         callbacks=[deadline])
    started = time.perf_counter()
    result = trainer.train()
    took = time.perf_counter() - started
    save_model(trainer, out)
    return {"steps": deadline.steps, "seconds": round(took, 1), "train_loss": result.training_loss,
            "pairs_seen": deadline.steps * args.batch_size,
            "epochs": round(deadline.steps * args.batch_size / max(1, len(pairs)), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="DPO wall-time budget.")
    parser.add_argument("--model", default="default", help="Starting policy ('default').")
    parser.add_argument("--train-prompts", type=int, default=120)
    parser.add_argument("--heldout", type=int, default=60, help="Held-out prompts (at most ~60).")
    parser.add_argument("--constraints", default="1-2", help="MIN-MAX constraints per prompt.")
    parser.add_argument("--samples", type=int, default=4, help="Answers per training prompt.")
    parser.add_argument("--temperature", type=float, default=1.0, help="Training sampling.")
    parser.add_argument("--tokens", type=int, default=128, help="New tokens per answer.")
    parser.add_argument("--eval-temperature", type=float, default=0.7)
    parser.add_argument("--eval-samples", type=int, default=2, help="Answers per held-out prompt.")
    parser.add_argument("--lr", type=float, default=5e-6)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=384)
    parser.add_argument("--gen-batch", type=int, default=32,
                        help="Answers requested at once (the server batches them).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="Keep data and model here.")
    parser.add_argument("--out", type=Path, default=Path("alignment_effect.json"))
    args = parser.parse_args()

    low, _, high = args.constraints.partition("-")
    k_min, k_max = int(low), int(high or low)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rlaif-alignment-effect-"))
    workdir.mkdir(parents=True, exist_ok=True)
    start_dir = resolve_model(args.model)
    t0 = time.perf_counter()

    train_base, heldout_base = split_prompts(0.27, args.seed)
    train_rows = add_constraints(train_base[:args.train_prompts], k_min, k_max, args.seed)
    heldout_rows = add_constraints(heldout_base[:args.heldout], k_min, k_max, args.seed + 1)
    heldout_file = workdir / "heldout.jsonl"
    write_jsonl(heldout_file, [r.model_dump(mode="json") for r in heldout_rows])
    print(f"prompts: {len(train_rows)} train, {len(heldout_rows)} held out; sampling "
          f"{args.samples} answers each ...", file=sys.stderr)

    answers, _ = sample_policy(str(start_dir), [r.prompt for r in train_rows],
                               temperature=args.temperature, max_new_tokens=args.tokens,
                               seed=args.seed, db=store.open_db(workdir / "rlaif.db"),
                               samples=args.samples, concurrency=args.gen_batch)
    pairs, ties = verifier_pairs(train_rows, answers)
    write_jsonl(workdir / "pairs.jsonl", pairs)
    sampled_s = time.perf_counter() - t0
    print(f"pairs: {len(pairs)} decided, {ties} ties ({sampled_s:.0f} s); DPO for "
          f"{args.minutes:g} min ...", file=sys.stderr)
    if not pairs:
        sys.exit("no decided pairs: sample more answers or prompts")

    dpo = train_dpo(start_dir, pairs, workdir / "dpo", args)
    print(f"dpo: {dpo['steps']} steps in {dpo['seconds']:.0f} s ({dpo['epochs']} epochs); "
          "evaluating ...", file=sys.stderr)
    report = constraint_eval([args.model, str(workdir / "dpo")], heldout_file,
                             db=workdir / "rlaif.db", temperature=args.eval_temperature,
                             max_new_tokens=args.tokens, samples=args.eval_samples,
                             seed=args.seed, batch_size=args.gen_batch)
    result = {"settings": {k: str(v) if isinstance(v, Path) else v
                           for k, v in vars(args).items()},
              "train_prompts": len(train_rows), "heldout_prompts": len(heldout_rows),
              "pairs": len(pairs), "ties": ties, "sampling_seconds": round(sampled_s, 1),
              "dpo": dpo, "total_seconds": round(time.perf_counter() - t0, 1),
              "workdir": str(workdir), "eval": report}
    args.out.write_text(json.dumps(result, indent=1))
    for line in format_eval(report):
        print(line)
    print(f"written: {args.out} (data and model in {workdir})")


if __name__ == "__main__":
    main()
