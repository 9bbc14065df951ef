"""IFEval's 25 instruction ids as verifier kinds, and the IFEval evaluation (strict and loose).

IFEval (Zhou et al. 2023, arXiv 2311.07911) is the field's common form for rule-checked
instructions: a prompt carries ``instruction_id_list`` and one ``kwargs`` dict per id. Each id
is a constraint kind here (``judges.constraints.ifeval.instructions``) with IFEval's own kwargs
and semantics, so the verifier reads IFEval, IFBench-style and our own files alike; the text
measurements IFEval relies on (NLTK punkt sentences with bundled parameters, seeded langdetect)
are in ``judges.constraints.ifeval.text`` and the benchmark itself in
``judges.constraints.ifeval.evaluate``.
"""
