"""How far CTranslate2 int8 log-probabilities are from float32 transformers, on a fixed set.

Judges that read probabilities (``rlaif label --soft``, echo scoring) should know what the
faster default backend changes. This starts ``rlaif serve`` on the default model with each
backend and asks both the same questions:

1. echo scoring of 24 fixed texts (``/v1/completions``, ``echo``, ``max_tokens`` 0): per-token
   log-probability differences (mean and max of the absolute difference, over every token);
2. 24 judge-style verdicts (``max_tokens`` 1, ``top_logprobs`` 5): whether the top token
   agrees and how far the probability of the float32 top token moves.

    .venv/bin/python bench/serve_int8_logprobs.py
"""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
import threading
from pathlib import Path

import openai

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "To bake bread, mix flour, water, salt and yeast, then let the dough rise.",
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "A bicycle has two wheels, a frame, pedals, a chain and handlebars.",
    "Rain forms when water vapour cools and condenses into droplets.",
    "Please write a short poem about the sea at night.",
    "The library opens at nine in the morning and closes at six.",
    "Photosynthesis turns light, water and carbon dioxide into sugar.",
    "My favourite colour is green because it reminds me of forests.",
    "Two plus two equals four, and three times three equals nine.",
    "The meeting has been moved from Tuesday to Thursday afternoon.",
]
QUESTIONS = [(a, b, a + b + (i % 2)) for i, (a, b) in enumerate(
    [(2, 3), (4, 5), (7, 1), (6, 6), (9, 2), (3, 8), (5, 5), (8, 7), (1, 1), (4, 9), (6, 3),
     (2, 2)])]


def start(backend: str) -> tuple[subprocess.Popen, str]:
    command = [str(Path(sys.executable).parent / "rlaif"), "serve", "--backend", backend,
               "--port", "0", "--no-record"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(900)
    if not lines or not lines[0].startswith("http"):
        proc.kill()
        raise SystemExit(f"the {backend} server did not start")
    return proc, lines[0].strip()


def ask(url: str) -> tuple[list[list[float]], list[dict[str, float]]]:
    client = openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=600)
    echoed = []
    for text in TEXTS + [t.lower() for t in TEXTS]:
        reply = client.completions.create(model="default", prompt=text, max_tokens=0,
                                          echo=True, logprobs=0)
        echoed.append(reply.choices[0].logprobs.token_logprobs[1:])
    verdicts = []
    for a, b, c in QUESTIONS + [(a, b, a + b) for a, b, _ in QUESTIONS]:
        content = f"Is this answer correct? Question: what is {a} plus {b}? Answer: {c}. " \
                  "Reply Yes or No."
        reply = client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": content}], max_tokens=1,
            temperature=0, logprobs=True, top_logprobs=5)
        top = reply.choices[0].logprobs.content[0].top_logprobs
        verdicts.append({t.token: t.logprob for t in top})
    return echoed, verdicts


def main() -> None:
    answers = {}
    for backend in ("transformers", "ctranslate2"):
        proc, url = start(backend)
        try:
            answers[backend] = ask(url)
        finally:
            proc.terminate()
            proc.wait(60)
    (ref_echo, ref_verdicts), (q_echo, q_verdicts) = answers["transformers"], answers[
        "ctranslate2"]
    diffs = [abs(a - b) for ref, q in zip(ref_echo, q_echo, strict=True)
             for a, b in zip(ref, q, strict=True)]
    print(f"echo scoring, {len(ref_echo)} texts, {len(diffs)} tokens: |int8 - fp32| logprob "
          f"mean {statistics.mean(diffs):.3f}, median {statistics.median(diffs):.3f}, "
          f"p95 {sorted(diffs)[int(0.95 * len(diffs))]:.3f}, max {max(diffs):.3f}")
    totals = [abs(sum(r) - sum(q)) for r, q in zip(ref_echo, q_echo, strict=True)]
    print(f"  whole-text log-likelihood |difference|: mean {statistics.mean(totals):.3f}, "
          f"max {max(totals):.3f}")
    agree, moves = 0, []
    for ref, q in zip(ref_verdicts, q_verdicts, strict=True):
        best = max(ref, key=ref.get)
        agree += best == max(q, key=q.get)
        if best in q:
            moves.append(abs(math.exp(ref[best]) - math.exp(q[best])))
    print(f"judge verdicts, {len(ref_verdicts)} questions: same top token {agree}/"
          f"{len(ref_verdicts)}; probability of the fp32 top token moves by mean "
          f"{statistics.mean(moves):.3f}, max {max(moves):.3f}")


if __name__ == "__main__":
    main()
