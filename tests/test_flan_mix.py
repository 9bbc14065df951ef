"""Examples-proportional mixing with a per-task cap (Flan Collection style), seeded."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter

from datagen.flan.mix import interleave, mixture_rates
from datagen.flan.render import TaskInput, convert
from datagen.flan.template_files import TaskTemplates


def test_rates_are_proportional_to_capped_sizes():
    assert mixture_rates([1_000, 50_000, 500_000], 30_000) == [1 / 61, 30 / 61, 30 / 61]
    assert mixture_rates([10, 30], None) == [0.25, 0.75]


def test_mixing_hits_the_capped_rates_within_half_a_percent_over_a_million_draws():
    sizes = [1_000, 50_000, 500_000, 2_000_000, 5_000_000]
    cap = 400_000
    quotas = [min(n, cap) for n in sizes]
    rates = mixture_rates(sizes, cap)
    streams = [itertools.repeat(task) for task in range(len(sizes))]
    draws = 1_000_000
    counts = Counter(itertools.islice(interleave(streams, quotas, random.Random(0)), draws))
    for task, rate in enumerate(rates):
        share = counts[task] / draws
        assert abs(share - rate) < 0.005, (task, share, rate)
        if rate > 0.01:  # the large tasks also within 0.5% of their own expected count
            assert abs(counts[task] - rate * draws) / (rate * draws) < 0.005, (task, counts[task])


def test_a_full_mix_takes_exactly_each_cap():
    quotas = [3, 500, 500, 120]
    streams = [itertools.repeat(task) for task in range(len(quotas))]
    counts = Counter(interleave(streams, quotas, random.Random(1)))
    assert [counts[t] for t in range(len(quotas))] == quotas


def test_a_stream_that_runs_dry_drops_out():
    streams = [iter(["a"] * 5), itertools.repeat("b")]
    out = list(interleave(streams, [100, 50], random.Random(2)))
    assert out.count("a") == 5 and out.count("b") == 50


def test_mixing_is_seeded():
    def run(seed):
        streams = [itertools.repeat(t) for t in range(3)]
        return list(interleave(streams, [50, 50, 50], random.Random(seed)))

    assert run(3) == run(3) != run(4)


def test_convert_mixes_inputs_and_caps_each(tmp_path):
    spec = TaskTemplates.model_validate({
        "task": "toy", "fields": ["text"], "label_field": "label",
        "templates": [{"id": "t1", "input": "{text}", "target": "{answer}"}],
    })
    inputs = []
    for name, n in (("small", 20), ("big", 400), ("huge", 900)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"text": f"{name} {i}", "label": name}) + "\n"
                                for i in range(n)))
        inputs.append(TaskInput(path, spec, {}))
    examples = list(convert(inputs, max_per_task=300, seed=0))
    counts = Counter(e.answer for e in examples)
    assert counts == {"small": 20, "big": 300, "huge": 300}
    first = Counter(e.answer for e in examples[:100])
    assert first["small"] < first["big"] and first["small"] < first["huge"]
    rows = {name: [e.source.row for e in examples if e.answer == name] for name in counts}
    assert all(r == sorted(r) for r in rows.values())  # each input is read in order
    limited = list(convert(inputs, max_per_task=300, seed=0, limit=50))
    assert [e.id for e in limited] == [e.id for e in examples[:50]]
