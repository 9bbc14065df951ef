"""`rlaif serve`: run a local model behind an OpenAI-compatible HTTP API.

A thin layer over ``datagen.serve.app.run_server``: it parses options, refuses to listen beyond
this machine without an API key (taken from ``--api-key-env NAME`` so it never shows in
``ps``), resolves ``--model`` (the embedded default or a local directory) and ``--backend``,
prints the base URL once the server listens, and records a loopback server without a key so
other commands reuse it instead of starting their own. Also runnable as
``python -m datagen.serve.cli`` (that is how commands start a private server).
"""

from __future__ import annotations

import ipaddress
import os

import click

from datagen.cli_checks import model_dir_option
from datagen.errors import UserInputError
from datagen.serve.admission import Limits
from datagen.serve.autostart import remove_record, write_record
from datagen.serve.default_model import DEFAULT_BACKEND, resolve_model, served_model_id


@click.command()
@model_dir_option("--model-dir", "model_spec", default="default", show_default=True,
                  help="'default' (the embedded SmolLM2-135M-Instruct) or a local Hugging "
                       "Face causal-LM directory.")
@click.option("--backend", type=click.Choice(["ctranslate2", "transformers"]),
              default=DEFAULT_BACKEND, show_default=True, envvar="RLAIF_SERVE_BACKEND",
              help="ctranslate2: an int8 copy, about 3x faster on CPU (converted once into the "
                   "cache); transformers: float32, exact scores, any causal LM.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs an API key.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port; 0 picks a free one.")
@click.option("--max-batch", default=16, show_default=True, type=click.IntRange(1, 1024),
              help="Most sequences decoded together.")
@click.option("--threads", default=None, type=click.IntRange(1),
              help="Torch threads  [default: the CPU cores this process may use].")
@click.option("--api-key", default=None,
              help="Require 'Authorization: Bearer KEY' (visible in ps; prefer --api-key-env).")
@click.option("--api-key-env", default=None,
              help="Name of an environment variable holding the required key.")
@click.option("--max-body-bytes", default=Limits.max_body_bytes, show_default=True,
              type=click.IntRange(1024), help="Largest request body accepted (413 above).")
@click.option("--max-request-tokens", default=Limits.max_request_tokens, show_default=True,
              type=click.IntRange(1),
              help="Most tokens one request may cost: rows x (prompt + max_tokens) (400 above).")
@click.option("--max-inflight-tokens", default=Limits.max_inflight_tokens, show_default=True,
              type=click.IntRange(1),
              help="Most tokens all admitted requests may cost together; others queue.")
@click.option("--idle-timeout", default=Limits.idle_timeout_s, show_default=True,
              type=click.FloatRange(0.1),
              help="Seconds an idle connection is kept open, and a request body may take.")
@click.option("--shutdown-grace", default=Limits.shutdown_grace_s, show_default=True,
              type=click.FloatRange(0),
              help="Seconds requests in flight may finish after SIGTERM/SIGINT.")
@click.option("--record/--no-record", default=True, hidden=True,
              help="Let commands without --base-url reuse this server (loopback, no key only).")
@click.option("--exit-with-parent", is_flag=True, hidden=True,
              help="Stop when the process that started this one exits.")
def serve(model_spec: str, backend: str, host: str, port: int, max_batch: int,
          threads: int | None, api_key: str | None, api_key_env: str | None,
          max_body_bytes: int, max_request_tokens: int, max_inflight_tokens: int,
          idle_timeout: float, shutdown_grace: float, record: bool,
          exit_with_parent: bool) -> None:
    """Serve a local model over an OpenAI-compatible API, batching concurrent requests."""
    # Idle OpenMP threads sleep instead of spinning: on a machine shared with other busy
    # processes spinning made each decode step up to 30x slower (read before torch loads).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    key = required_key(api_key, api_key_env)
    loopback = is_loopback(host)
    if not loopback and key is None:
        raise UserInputError(f"--host {host}: listening beyond this machine needs --api-key or "
                             "--api-key-env")
    if max_request_tokens > max_inflight_tokens:
        raise UserInputError(f"--max-request-tokens {max_request_tokens}: above "
                             f"--max-inflight-tokens {max_inflight_tokens}; no such request "
                             "could ever run")
    limits = Limits(max_body_bytes=max_body_bytes, max_request_tokens=max_request_tokens,
                    max_inflight_tokens=max_inflight_tokens, idle_timeout_s=idle_timeout,
                    shutdown_grace_s=shutdown_grace)
    model_dir = resolve_model(model_spec)
    model_id = served_model_id(model_spec, backend)
    try:
        from datagen.serve.app import run_server
    except ImportError as exc:
        raise UserInputError(f"rlaif serve needs the serve extra (pip install 'rlaif[serve]'): "
                             f"{exc}") from None
    recorded = record and loopback and key is None

    def ready(base_url: str) -> None:
        click.echo(base_url)
        click.echo(f"rlaif: serving {model_id} at {base_url} (max batch {max_batch}); "
                   "Ctrl-C stops", err=True)
        if recorded:
            write_record(model_spec, base_url, model_id)

    try:
        run_server(model_dir, model_id, backend=backend, host=host, port=port,
                   max_batch=max_batch, threads=threads or len(os.sched_getaffinity(0)),
                   api_key=key, limits=limits, on_ready=ready,
                   exit_with_parent=exit_with_parent)
    finally:
        if recorded:
            remove_record(model_spec)


def required_key(api_key: str | None, api_key_env: str | None) -> str | None:
    """The API key clients must send, from --api-key or --api-key-env (None: no check)."""
    if api_key is not None and api_key_env is not None:
        raise UserInputError("--api-key and --api-key-env: give one, not both")
    if api_key_env is not None:
        value = os.environ.get(api_key_env)
        if not value:
            raise UserInputError(f"--api-key-env {api_key_env}: the variable is not set")
        return value
    if api_key == "":
        raise UserInputError("--api-key: must not be empty")
    return api_key


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    serve()
