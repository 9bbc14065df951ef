"""`rlaif run PIPELINE.yaml` and `rlaif demo`: parse, call, print.

The work is elsewhere: ``align.pipeline.file`` reads and checks a pipeline file and
``align.pipeline.run`` runs its stages. ``run`` checks a pipeline file and runs its stages;
``demo`` runs the built-in ``align/pipeline/recipes/demo.yaml`` (the whole journey from generated
data to a trained policy on the embedded model), which ends with `rlaif eval constraints`
(``align.eval.heldout``), whose table it prints.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path

import click

from align.eval.heldout import format_eval
from align.eval.ifeval import format_side_by_side
from align.pipeline.file import Plan, load_plan
from align.pipeline.run import describe_plan, last_output, run_plan
from align.pipeline.source import parse_sets
from datagen.cli_checks import output_option

DEMO_FILE = "demo.yaml"


def print_outputs(plan: Plan) -> None:
    """Say where everything went (stdout)."""
    def rel(path: Path) -> str:
        return str(path.relative_to(plan.output)) if plan.output in path.parents else str(path)

    click.echo(f"output:   {plan.output}")
    click.echo(f"database: {plan.db} (stage status: table pipeline_stages)")
    click.echo(f"logs:     {plan.output / 'logs'}")
    for stage in plan.stages:
        written = [rel(p) for p in stage.outputs if p != plan.db]
        if written:
            click.echo(f"  {stage.index + 1:>2} {stage.name}: {', '.join(written)}")
    report = plan.output / "report.html"
    if report.is_file():
        click.echo(f"report:   {report}")


def execute(plan: Plan, from_stage: str | None, dry_run: bool) -> int:
    start = plan.find(from_stage) if from_stage else None
    if dry_run:
        for line in describe_plan(plan, start if start is not None else len(plan.stages)):
            click.echo(line)
        return 0
    code = run_plan(plan, start)
    print_outputs(plan)
    return code


@click.command("run")
@click.argument("pipeline_file", metavar="PIPELINE.yaml",
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--from", "from_stage", metavar="STAGE",
              help="Rerun from this stage on (its number, name: or command); finished stages "
                   "before it are skipped.")
@click.option("--dry-run", is_flag=True, help="Check the file, print the stages, run nothing.")
@output_option("Output folder instead of the file's output: (default ./<file stem>).",
               required=False, directory=True)
@click.option("--profile", default=None, help="Apply the vars of this profile of the file.")
@click.option("--set", "sets", multiple=True, metavar="NAME=VALUE",
              help="Set a variable of the file (repeatable).")
def run(pipeline_file: Path, from_stage: str | None, dry_run: bool, output: Path | None,
        profile: str | None, sets: tuple[str, ...]) -> None:
    """Run the stages of a pipeline file in order, each as its own `rlaif` command.

    Every stage is checked before anything runs (exit status 2 with FILE:LINE: key: what is
    wrong). Finished stages are recorded in the project database and skipped when the
    pipeline is run again, so a killed run resumes where it stopped. Exit status: 0 when
    every stage finished, else the failing stage's.
    """
    plan = load_plan(pipeline_file, output=output, profile=profile, overrides=parse_sets(sets))
    sys.exit(execute(plan, from_stage, dry_run))


def ifeval_outputs(plan: Plan) -> dict[str, Path]:
    """Policy name -> the `-o` file of each finished `eval ifeval` stage."""
    found = {}
    for stage in plan.stages:
        if stage.words == ("eval", "ifeval") and "--policy" in stage.argv:
            policy = Path(stage.argv[stage.argv.index("--policy") + 1]).name
            for path in stage.outputs:
                if path.suffix == ".jsonl" and path.is_file():
                    found[policy] = path
    return found


def constraint_reports(plan: Plan) -> list[Path]:
    """The JSON report of each finished `eval constraints` stage (not the database it also
    names as an output)."""
    return [path for stage in plan.stages if stage.words == ("eval", "constraints")
            for path in stage.outputs if path.suffix == ".json" and path.is_file()]


def demo_path() -> Path:
    """The built-in demo pipeline file."""
    return Path(str(resources.files("align.pipeline") / "recipes" / DEMO_FILE))


@click.command("demo")
@output_option("Folder for everything.", required=False, directory=True,
               default=Path("rlaif-demo"), show_default=True)
@click.option("--quick", is_flag=True,
              help="Tiny sizes and step counts (checks that everything runs; the numbers mean "
                   "nothing).")
@click.option("--base-url", default=None,
              help="Generate and judge with this endpoint instead of the embedded model.")
@click.option("--from", "from_stage", metavar="STAGE", help="Rerun from this stage on.")
@click.option("--dry-run", is_flag=True, help="Print the stages, run nothing.")
def demo(output: Path, quick: bool, base_url: str | None, from_stage: str | None,
         dry_run: bool) -> None:
    """The whole journey on the embedded SmolLM2-135M model, on CPU, in about 15 minutes.

    Self-instruct, FLAN and constitutional data; constrained prompts, response pairs and exact
    verifier labels that train a reward model, DPO and a short PPO; the LLM judge's agreement
    with the verifier; and the held-out constraint satisfaction of the trained policies against
    the starting one. Rerun to resume; everything goes under --output.
    """
    overrides = {"base_url": base_url} if base_url else {}
    plan = load_plan(demo_path(), output=output, profile="quick" if quick else None,
                     overrides=overrides)
    code = execute(plan, from_stage, dry_run)
    if not dry_run:
        for stage in plan.stages:
            if stage.words == ("judge-report",) and last_output(plan, stage).strip():
                click.echo(f"\nLLM judge vs the verifier (stage {stage.index + 1}):")
                click.echo(last_output(plan, stage).rstrip())
        scored = ifeval_outputs(plan)
        if scored:
            click.echo("")
            for line in format_side_by_side(scored):
                click.echo(line)
        for path in constraint_reports(plan):
            click.echo("")
            for line in format_eval(json.loads(path.read_text())):
                click.echo(line)
    sys.exit(code)
