"""Which training raises instruction following most in the same wall time? (SmolLM2-135M, CPU)

Four ways to spend one time budget on the embedded SmolLM2-135M-Instruct, all on the project's
own constrained prompts (the bundled everyday prompts with 1-2 verifiable constraints each,
``judges.constraints.prompts``; never IFEval's prompts):

1. GRPO with the verifier as reward (``align.rl.online.train_online``, ``--reward verify``);
2. RLOO with the verifier as reward;
3. DPO on verifier-labelled pairs of the start model's own answers (offline; the sampling and
   labelling come first and are timed apart, as in ``bench/alignment_effect.py``);
4. the project PPO against a reward model trained on those verifier-labelled pairs (the RM's
   training is timed apart).

Each method's optimisation phase gets the same ``--minutes`` on the same machine, run one after
the other (never side by side). Then the start model and the four trained ones are evaluated
with the same settings, greedy:

- with ``rlaif eval ifeval`` on IFEval's 541 prompts when that command exists (issue 16: the
  four IFEval accuracies with Wilson 95% intervals at ``--eval-tokens`` new tokens, each
  method's change from the start model with a paired bootstrap interval over prompts, the
  instructions each method gained and lost, and the contamination check of the training
  prompts against IFEval's with ``--check-train``);
- otherwise on held-out prompts of the project's own (prompts split off by a hash of their id,
  never trained on), with ``align.eval.heldout.constraint_eval``: the share of answers that
  satisfy every constraint, per kind, with Wilson 95% intervals and a paired bootstrap
  interval of each method's change from the start model. The table says which was used.

The reward-hacking curves of every online run (reward, KL, length, truncation, reward-length
correlation, alarms) are summarised from their ``metrics.jsonl``; the whole result goes to
``--out`` as JSON and a Markdown table is printed.

    .venv/bin/python bench/ifeval_effect.py --minutes 45           # the issue's 3-hour budget
    .venv/bin/python bench/ifeval_effect.py --minutes 15 --online-lr 5e-6 --samples 2 \
        --workdir DIR                                              # the README's run (2 h 10 min)
    .venv/bin/python bench/ifeval_effect.py --minutes 3 --train-prompts 16 --heldout 16 \\
        --tokens 48 --methods grpo,rloo,dpo,ppo                    # a short check
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from alignment_effect import split_prompts, train_dpo, verifier_pairs  # noqa: E402

from align.eval.heldout import constraint_eval, format_eval, sample_policy  # noqa: E402
from align.eval.ifeval import accuracies, read_scored  # noqa: E402
from align.ppo.cli import build_config as ppo_config  # noqa: E402
from align.ppo.loop import train_ppo  # noqa: E402
from align.rl.online import train_online  # noqa: E402
from align.rl.rewards import parse_reward  # noqa: E402
from align.train.metrics import read_metrics  # noqa: E402
from align.train.trainers import resolve_model, train  # noqa: E402
from datagen import store  # noqa: E402
from datagen.jsonl import write_jsonl  # noqa: E402
from judges.constraints.prompts import add_constraints  # noqa: E402

METHODS = ("grpo", "rloo", "dpo", "ppo")
NUMBERS = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc",
           "inst_level_loose_acc", "average")


def ifeval_available() -> bool:
    """Whether `rlaif eval ifeval` exists in this checkout (issue 16)."""
    from align.cli import EVAL_COMMANDS

    return "ifeval" in EVAL_COMMANDS


def online(kind: str, start: str, prompts: Path, out: Path, args: argparse.Namespace) -> dict:
    """GRPO or RLOO on the verifier reward for ``--minutes``."""
    started = time.perf_counter()
    summary = train_online(
        kind, prompts, start, out, [parse_reward("verify")], db=out.parent / "rlaif.db",
        max_minutes=args.minutes, save_steps=10**6, max_steps=10**6, seed=args.seed,
        learning_rate=args.online_lr, num_generations=args.group,
        per_device_train_batch_size=args.group, max_completion_length=args.tokens,
        temperature=1.0, lr_scheduler_type="constant")
    return {"steps": summary["steps"], "seconds": round(time.perf_counter() - started, 1),
            "alarms": summary["alarms"]}


def ppo(start: str, pairs_file: Path, prompts: list[str], out: Path,
        args: argparse.Namespace) -> dict:
    """A reward model on the verifier pairs (timed apart), then PPO for ``--minutes``."""
    started = time.perf_counter()
    train("rm", pairs_file, start, out.parent / "rm", max_steps=args.rm_steps,
          per_device_train_batch_size=4, learning_rate=5e-5, max_length=args.tokens * 3)
    rm_seconds = time.perf_counter() - started
    config = ppo_config(None, {"total_episodes": 10**6, "batch_size": 4, "response_length":
                               args.tokens, "lr": args.ppo_lr, "seed": args.seed,
                               "num_ppo_epochs": 2, "max_minutes": args.minutes})
    started = time.perf_counter()
    result = train_ppo(config, policy=start, reward_model=out.parent / "rm",
                       prompts=[[{"role": "user", "content": p}] for p in prompts],
                       output_dir=out)
    return {"updates": len(result.metrics), "seconds": round(time.perf_counter() - started, 1),
            "rm_seconds": round(rm_seconds, 1),
            "alarms": [m for row in result.metrics for m in row["alarms"]]}


def curves(metrics_file: Path) -> dict[str, Any]:
    """First and last values of the watch's curves, and the number of alarms."""
    rows = [r for r in read_metrics(metrics_file, skipped=[]) if "reward/mean" in r]
    keys = ("reward/mean", "kl", "length/mean", "truncated/share", "reward_length_corr")
    pick = {k: [rows[0].get(k), rows[-1].get(k)] for k in keys} if rows else {}
    return {"points": len(rows), "first_last": pick,
            "alarms": sum(len(r.get("alarms") or []) for r in rows)}


def ifeval_policy(model: str, workdir: Path, args: argparse.Namespace) -> dict:
    """One policy's IFEval result through `rlaif eval ifeval`, kept in ``workdir`` so that an
    interrupted benchmark does not evaluate a finished policy again."""
    name = Path(model).name
    answers, result = workdir / f"ifeval-{name}.jsonl", workdir / f"ifeval-{name}.json"
    if result.is_file() and answers.is_file():
        try:
            return json.loads(result.read_text())
        except json.JSONDecodeError:
            pass
    print(f"{name}: rlaif eval ifeval on 541 prompts ...", file=sys.stderr)
    done = subprocess.run(
        [sys.executable, "-m", "align.cli", "eval", "ifeval", "--policy", model, "--json",
         "--max-tokens", str(args.eval_tokens), "--concurrency", str(args.eval_concurrency),
         "--db", str(workdir / "rlaif.db"), "-o", str(answers), "--progress", "none"],
        capture_output=True, text=True, check=True)
    result.write_text(done.stdout)
    return json.loads(done.stdout)


def contamination_check(answers: Path, train_prompts: Path) -> dict:
    """`rlaif eval ifeval --check-train` on the training prompts (exit 0: clean, 1: too close)."""
    done = subprocess.run(
        [sys.executable, "-m", "align.cli", "eval", "ifeval", "--responses", str(answers),
         "--check-train", str(train_prompts), "--json"], capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"contamination check failed: {done.stderr.strip()}")
    return {"clean": done.returncode == 0, "stderr": done.stderr.strip()[-500:]}


def compare(start: Path, other: Path, rounds: int, seed: int) -> dict[str, Any]:
    """The change of the four IFEval numbers and their average from ``start`` to ``other`` with
    a paired bootstrap interval (prompts resampled, both policies' answers to a prompt kept
    together), and the instructions whose strict accuracy moved."""
    before = {str(row["key"]): row for row in read_scored(start)}
    after = {str(row["key"]): row for row in read_scored(other)}
    pairs = [(before[key], after[key]) for key in sorted(set(before) & set(after))]

    def change(sample: list[tuple[dict, dict]]) -> dict[str, float]:
        was, now = accuracies([p[0] for p in sample]), accuracies([p[1] for p in sample])
        return {name: now[name] - was[name] for name in NUMBERS}

    rng = random.Random(seed)
    draws = [change([pairs[rng.randrange(len(pairs))] for _ in pairs]) for _ in range(rounds)]
    intervals = {}
    for name in NUMBERS:
        ordered = sorted(draw[name] for draw in draws)
        intervals[name] = [ordered[int(0.025 * rounds)], ordered[int(0.975 * rounds) - 1]]
    moved: dict[str, list[int]] = {}
    for was, now in pairs:
        for instruction, old, new in zip(was["instruction_id_list"],
                                         was["follow_instruction_list_strict"],
                                         now["follow_instruction_list_strict"], strict=True):
            tally = moved.setdefault(instruction, [0, 0, 0])
            tally[0] += 1
            tally[1] += int(new and not old)
            tally[2] += int(old and not new)
    return {"prompts": len(pairs), "change": change(pairs), "ci95": intervals,
            "instructions_gained_lost": {k: {"n": v[0], "gained": v[1], "lost": v[2]}
                                         for k, v in sorted(moved.items()) if v[1] or v[2]}}


def evaluate(models: list[str], heldout: Path, train_prompts: Path, workdir: Path,
             args: argparse.Namespace) -> dict:
    """IFEval through `rlaif eval ifeval` when it exists, else held-out constraint satisfaction."""
    if ifeval_available():
        results = {model: ifeval_policy(model, workdir, args) for model in models}
        start = workdir / f"ifeval-{Path(models[0]).name}.jsonl"
        changes = {model: compare(start, workdir / f"ifeval-{Path(model).name}.jsonl",
                                  args.bootstrap, args.seed) for model in models[1:]}
        return {"kind": "ifeval", "results": results, "changes": changes,
                "contamination": contamination_check(start, train_prompts)}
    report = constraint_eval(models, heldout, db=workdir / "rlaif.db", temperature=0.0,
                             max_new_tokens=args.tokens, samples=1, seed=args.seed,
                             batch_size=args.gen_batch)
    return {"kind": "heldout-constraints", "report": report}


def markdown(evaluation: dict, runs: dict) -> list[str]:
    """The README table: the four numbers and their average per policy (Wilson 95% intervals),
    then each method's change with its paired bootstrap interval."""
    lines = ["| policy | steps | prompt strict | inst strict | prompt loose | inst loose "
             "| average |", "|---|---|---|---|---|---|---|"]
    for model, result in evaluation["results"].items():
        name = Path(model).name
        run = runs.get(name, {})
        steps = run.get("steps", run.get("updates", run.get("optimizer_steps", "")))
        cells = [f"{100 * result[m]:.1f} [{100 * result[m + '_ci'][0]:.1f}, "
                 f"{100 * result[m + '_ci'][1]:.1f}]" for m in NUMBERS[:4]]
        lines.append(f"| {name} | {steps} | " + " | ".join(cells)
                     + f" | {100 * result['average']:.1f} |")
    lines += ["", "| change from start | prompt strict | inst strict | prompt loose | inst loose "
              "| average |", "|---|---|---|---|---|---|"]
    for model, change in evaluation["changes"].items():
        cells = [f"{100 * change['change'][m]:+.1f} [{100 * change['ci95'][m][0]:+.1f}, "
                 f"{100 * change['ci95'][m][1]:+.1f}]" for m in NUMBERS]
        lines.append(f"| {Path(model).name} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=45.0,
                        help="Optimisation wall time per method.")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--model", default="default")
    parser.add_argument("--train-prompts", type=int, default=120)
    parser.add_argument("--heldout", type=int, default=60)
    parser.add_argument("--tokens", type=int, default=128, help="New tokens per answer.")
    parser.add_argument("--samples", type=int, default=4, help="Answers per prompt for DPO pairs.")
    parser.add_argument("--group", type=int, default=4, help="GRPO/RLOO samples per prompt.")
    parser.add_argument("--online-lr", type=float, default=2e-6)
    parser.add_argument("--ppo-lr", type=float, default=3e-6)
    parser.add_argument("--lr", type=float, default=5e-6, help="DPO learning rate.")
    parser.add_argument("--beta", type=float, default=0.1, help="DPO beta.")
    parser.add_argument("--batch-size", type=int, default=4, help="DPO batch.")
    parser.add_argument("--max-length", type=int, default=384, help="DPO max length.")
    parser.add_argument("--rm-steps", type=int, default=40)
    parser.add_argument("--gen-batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-tokens", type=int, default=256,
                        help="eval ifeval --max-tokens (its 1280 default takes hours here).")
    parser.add_argument("--eval-concurrency", type=int, default=32)
    parser.add_argument("--bootstrap", type=int, default=2000, help="Paired bootstrap rounds.")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="Keep data and models here; a rerun reuses finished methods and "
                             "answers its samples from the ledger.")
    parser.add_argument("--out", type=Path, default=Path("ifeval_effect.json"))
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rlaif-ifeval-effect-"))
    workdir.mkdir(parents=True, exist_ok=True)
    start = resolve_model(args.model)
    t0 = time.perf_counter()

    train_base, heldout_base = split_prompts(0.27, args.seed)
    train_rows = add_constraints(train_base[:args.train_prompts], 1, 2, args.seed)
    heldout_rows = add_constraints(heldout_base[:args.heldout], 1, 2, args.seed + 1)
    prompts_file, heldout_file = workdir / "train_prompts.jsonl", workdir / "heldout.jsonl"
    write_jsonl(prompts_file, [r.model_dump(mode="json") for r in train_rows])
    write_jsonl(heldout_file, [r.model_dump(mode="json") for r in heldout_rows])
    runs: dict[str, Any] = {}
    pairs_file = workdir / "pairs.jsonl"
    if {"dpo", "ppo"} & set(methods):
        started = time.perf_counter()
        answers, _ = sample_policy(start, [r.prompt for r in train_rows], temperature=1.0,
                                   max_new_tokens=args.tokens, seed=args.seed,
                                   db=store.open_db(workdir / "rlaif.db"),
                                   samples=args.samples, concurrency=args.gen_batch)
        pairs, ties = verifier_pairs(train_rows, answers)
        write_jsonl(pairs_file, pairs)
        runs["pairs"] = {"pairs": len(pairs), "ties": ties,
                         "seconds": round(time.perf_counter() - started, 1)}
    for method in methods:
        out = workdir / method
        if (out / "bench_run.json").is_file():  # finished in an earlier, interrupted call
            runs[method] = json.loads((out / "bench_run.json").read_text())
            continue
        print(f"{method}: training for {args.minutes:g} min ...", file=sys.stderr)
        if method in ("grpo", "rloo"):
            runs[method] = online(method, start, prompts_file, out, args)
        elif method == "dpo":
            runs[method] = train_dpo(start, [json.loads(line) for line in
                                             pairs_file.read_text().splitlines()], out, args)
        else:
            runs[method] = ppo(start, pairs_file, [r.prompt for r in train_rows], out, args)
        if (out / "metrics.jsonl").is_file():
            runs[method]["curves"] = curves(out / "metrics.jsonl")
        (out / "bench_run.json").write_text(json.dumps(runs[method]))
    models = [args.model] + [str(workdir / m) for m in methods]
    evaluation = evaluate(models, heldout_file, prompts_file, workdir, args)
    result = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "train_prompts": len(train_rows), "heldout_prompts": len(heldout_rows),
              "runs": runs, "eval": evaluation, "total_seconds": round(time.perf_counter() - t0, 1),
              "workdir": str(workdir)}
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(runs, indent=1))
    if evaluation["kind"] == "heldout-constraints":
        for line in format_eval(evaluation["report"]):
            print(line)
    else:
        print("\n".join(markdown(evaluation, runs)))
        print(json.dumps({m: c["instructions_gained_lost"]
                          for m, c in evaluation["changes"].items()}, indent=1))
        print(f"contamination check: {evaluation['contamination']}")
    print(f"written: {args.out} (data and models in {workdir})")


if __name__ == "__main__":
    main()
