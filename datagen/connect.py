"""Shared command-line options for anything that calls a model, and how they become a client.

Every command that talks to an endpoint takes the same options (``--base-url``,
``--api-key-env``, ``--model``, limits, retries, budget); those that make many requests also
take ``--hosted`` (send them through the hosted Batch API). When neither ``--base-url`` nor
``OPENAI_BASE_URL`` is given, the embedded server (the model ``$RLAIF_SERVE_MODEL`` names, a
local model directory, else SmolLM2-135M-Instruct) is started on a free loopback port for the
command's lifetime (or an already running one is reused), and the command says so in one line.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import SecretStr, ValidationError

from datagen.endpoint.client import ClientConfig, LLMClient
from datagen.endpoint.hosted_options import HostedOptions
from datagen.endpoint.limits import Prices
from datagen.errors import UserInputError
from datagen.progress import MODES as PROGRESS_MODES

CLIENT_OPTION_NAMES = (
    "base_url", "api_key_env", "model", "concurrency", "rpm", "tpm", "max_retries",
    "timeout", "budget_usd", "prices", "hosted", "completion_window", "poll_interval",
    "progress",
)
EXECUTOR_OPTION_NAMES = ("executor", "ray_address", "endpoint_per_node")
KEY_ENV = "OPENAI_API_KEY"  # where the API key is read from unless --api-key-env names another
# Options that are ClientConfig fields of the same name: their defaults are the config's.
CONFIG_FIELDS = ("model", "concurrency", "rpm", "tpm", "max_retries", "timeout", "budget_usd")
HOSTED_BASE_URL = "https://api.openai.com/v1"
LEDGER_ONLY_URL = "http://127.0.0.1:9/v1"  # stands in when the ledger answers everything


def _default(field: str) -> Any:
    return ClientConfig.model_fields[field].default


def client_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add the endpoint options to a click command (they arrive as keyword arguments)."""
    options = [
        click.option("--base-url", default=None,
                     help="OpenAI-style base URL (http://host:port/v1). Default: $OPENAI_BASE_URL, "
                          "else the embedded model, started on demand."),
        click.option("--api-key-env", default=KEY_ENV, show_default=True,
                     help="Name of the environment variable holding the API key."),
        click.option("--model", default=None, help="Model name sent to the endpoint."),
        click.option("--concurrency", default=_default("concurrency"), show_default=True,
                     type=click.IntRange(1),
                     help="Requests in flight at once."),
        click.option("--rpm", default=None, type=click.FloatRange(min=0, min_open=True),
                     help="Requests-per-minute limit."),
        click.option("--tpm", default=None, type=click.FloatRange(min=0, min_open=True),
                     help="Tokens-per-minute limit."),
        click.option("--max-retries", default=_default("max_retries"), show_default=True,
                     type=click.IntRange(0),
                     help="Retries on 429/5xx, timeouts, connection errors, bad bodies."),
        click.option("--timeout", default=_default("timeout"), show_default=True,
                     type=click.FloatRange(min=0, min_open=True), help="Seconds per attempt."),
        click.option("--budget-usd", default=None, type=click.FloatRange(min=0),
                     help="Stop scheduling new requests once this much has been spent."),
        click.option("--prices", default=None, type=click.Path(dir_okay=False),
                     help="JSON/YAML file {model: [input, output]} or {model: [input, output, "
                          "batch_input, batch_output]} in $ per million tokens (batch prices "
                          "default to half)."),
        click.option("--progress", type=click.Choice(PROGRESS_MODES), default="auto",
                     show_default=True,
                     help="auto: a live bar on a terminal, else only the summary line; bar; "
                          "jsonl: one JSON object a second on stderr; none."),
    ]
    return functools.reduce(lambda f, opt: opt(f), reversed(options), fn)


def _ray_address_option() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option("--ray-address", default=None, metavar="ADDRESS",
                        help="Ray cluster to join (auto, ray://host:10001); default: "
                             "$RAY_ADDRESS, else a local one-node cluster.")


def executor_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--executor local|ray`` and its settings to a command that sends requests in bulk."""
    options = [
        click.option("--executor", default="local", show_default=True,
                     type=click.Choice(["local", "ray"]),
                     help="Send from this process, or from the nodes of a Ray cluster "
                          "(global --rpm/--tpm/--budget-usd, one shared ledger)."),
        _ray_address_option(),
        click.option("--endpoint-per-node", default=None, metavar="URL_TEMPLATE",
                     help="Each node sends to its own endpoint, e.g. http://127.0.0.1:8000/v1; "
                          "${VAR} is taken from the node's environment."),
    ]
    return functools.reduce(lambda f, opt: opt(f), reversed(options), fn)


def block_executor_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--executor local|ray`` and ``--ray-address`` to a command whose heavy stage is
    CPU work over rows (checking, rendering), run in blocks on the cluster's nodes."""
    options = [
        click.option("--executor", default="local", show_default=True,
                     type=click.Choice(["local", "ray"]),
                     help="Do the CPU work in this process, or in blocks of rows on the nodes "
                          "of a Ray cluster (same output)."),
        _ray_address_option(),
    ]
    return functools.reduce(lambda f, opt: opt(f), reversed(options), fn)


def hosted_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--hosted`` and its settings to a command that also has ``client_options``."""
    options = [
        click.option("--hosted", is_flag=True,
                     help="Send requests through the hosted Batch API (half price, answers "
                          "within the completion window) instead of online. Default endpoint: "
                          f"$OPENAI_BASE_URL, else {HOSTED_BASE_URL}."),
        click.option("--completion-window", default="24h", show_default=True,
                     help="Completion window of hosted batches."),
        click.option("--poll-interval", default=30.0, show_default=True,
                     type=click.FloatRange(min=0, min_open=True),
                     help="Seconds between polls of a hosted batch."),
    ]
    return functools.reduce(lambda f, opt: opt(f), reversed(options), fn)


def open_client(config: ClientConfig, database: Any, options: dict[str, Any]) -> Any:
    """The client a command uses: ``LLMClient`` here, or ``RayClient`` with ``--executor ray``
    (both are async context managers with ``call_many``, ``chat`` and ``stats``)."""
    if options.get("executor") != "ray":
        return LLMClient(config, database)
    from datagen import store
    from datagen.distributed.executor import RayClient

    return RayClient(config, store.shared_target(database) if database is not None else None,
                     address=options.get("ray_address"),
                     api_key_env=options.get("api_key_env") or KEY_ENV,
                     endpoint_per_node=options.get("endpoint_per_node"))


def load_prices(path: str | None) -> Prices:
    """Read a price table file: {model: [input, output]} or {model: [input, output,
    batch_input, batch_output]}, dollars per million tokens."""
    if not path:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserInputError(f"{path}: cannot read price table: {exc}") from None
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: price table must map model names to [input, output]")
    prices = {}
    for model, pair in data.items():
        if not (isinstance(pair, list) and len(pair) in (2, 4) and
                all(isinstance(x, int | float) and not isinstance(x, bool) for x in pair)):
            raise UserInputError(f"{path}: key {model!r}: expected [input, output] or "
                                 "[input, output, batch_input, batch_output] numbers")
        prices[str(model)] = tuple(float(x) for x in pair)
    return prices


def client_config(options: dict[str, Any], base_url: str, **overrides: Any) -> ClientConfig:
    """Build a ClientConfig from the parsed command-line options (an option left unset gets
    the config's default)."""
    key = os.environ.get(options.get("api_key_env") or KEY_ENV)
    hosted = None
    if options.get("hosted"):
        hosted = HostedOptions(
            label=_run_label(), completion_window=options.get("completion_window") or "24h",
            poll_interval=options.get("poll_interval") or 30.0, progress=sys.stderr.isatty())
    values = {
        "base_url": base_url,
        "api_key": SecretStr(key) if key else None,
        **{name: options[name] for name in CONFIG_FIELDS if options.get(name) is not None},
        "prices": load_prices(options.get("prices")),
        "hosted": hosted,
        **overrides,
    }
    try:
        return ClientConfig(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserInputError(f"option {'.'.join(map(str, first['loc']))}: {first['msg']}"
                             ) from None


def _run_label() -> str:
    """What names a hosted batch's run: the command line's command path."""
    names = []
    context = click.get_current_context(silent=True)
    while context is not None and context.parent is not None:
        names.append(context.info_name)
        context = context.parent
    return " ".join(["rlaif", *reversed(names)])


@contextmanager
def endpoint_url(
    base_url: str | None, model: str | None = None,
    answered: Callable[[str], bool] | None = None,
) -> Iterator[tuple[str, str | None]]:
    """Yield (base_url, model): the given URL, $OPENAI_BASE_URL, or the embedded server.

    ``answered(model)``, when given, says whether the ledger already answers every request
    the command would send to ``model``; when it does, no embedded server is started (~7 s
    saved): the client answers everything from the ledger and never connects."""
    url = base_url or os.environ.get("OPENAI_BASE_URL")
    if url:
        if not url.startswith(("http://", "https://")):
            raise UserInputError(f"--base-url: expected http(s)://host:port/v1, got {url!r}")
        yield url, model
        return
    from datagen.serve.autostart import embedded_endpoint
    from datagen.serve.default_model import served_model_id

    spec = os.environ.get("RLAIF_SERVE_MODEL") or "default"
    planned = model or served_model_id(spec)
    if answered is not None and answered(planned):
        print(f"rlaif: the ledger answers every request to {planned}; the embedded model is "
              "not started", file=sys.stderr)
        yield LEDGER_ONLY_URL, planned
        return
    with embedded_endpoint(spec) as (url, served_model):
        yield url, model or served_model


def ledger_answers_all(db_path: Path, keys: list[str]) -> bool:
    """Whether every one of these requests completed before in the ledger at ``db_path``."""
    from datagen import store

    if not keys or not store.database_exists(db_path):
        return False
    rows = store.ledger_lookup(store.open_db(db_path), set(keys))
    return len(rows) == len(set(keys)) and all(r["status"] == "ok" for r in rows.values())


def pop_client_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Split the endpoint (and executor) options off a command's keyword arguments.

    With ``--endpoint-per-node`` and no ``--base-url`` the template stands in for the base URL,
    so no embedded model is started on the driver: the nodes' own endpoints answer. With
    ``--hosted`` and no endpoint given, the endpoint is OpenAI's API (there is no embedded
    Batch API)."""
    options = {name: kwargs.pop(name) for name in CLIENT_OPTION_NAMES + EXECUTOR_OPTION_NAMES
               if name in kwargs}
    per_node = options.get("endpoint_per_node")
    if per_node and options.get("executor") != "ray":
        raise UserInputError("--endpoint-per-node needs --executor ray")
    if per_node and not options.get("base_url"):
        options["base_url"] = per_node
    if options.get("hosted") and options.get("executor") == "ray":
        raise UserInputError("--hosted and --executor ray: choose one (a hosted batch needs "
                             "no cluster)")
    if options.get("hosted") and not (options.get("base_url") or os.environ.get(
            "OPENAI_BASE_URL")):
        options["base_url"] = HOSTED_BASE_URL
    return options


def dump_options(options: dict[str, Any]) -> str:
    """Options as stable JSON for run records (no secrets: only the key's variable name)."""
    return json.dumps(options, sort_keys=True, default=str)
