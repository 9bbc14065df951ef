"""The model endpoints `rlaif service` may call, named by the admin at start.

A job never says where to send requests or which secret to send: it names an endpoint
(``"endpoint": "openai"``) from those given to the service as
``--endpoint NAME=URL[,key_env=VAR][,models=a|b]``, and the job process gets that URL and that
key only (as ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` in an environment built from an
allow-list, never the service's own), so a key is only ever sent to the URL it was configured
for. ``default`` is the embedded model (started by the job on demand) unless the admin names
another. Keys are read from the environment once, at start, and kept in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr

from datagen.errors import UserInputError

DEFAULT = "default"
# What a job process may inherit from the service's environment; everything else (API keys,
# cloud credentials, the service's own settings) stays out.
CHILD_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV",
             "HF_HOME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE",
             "HF_HUB_CACHE", "TRANSFORMERS_CACHE", "XDG_CACHE_HOME", "TORCH_HOME",
             "TOKENIZERS_PARALLELISM", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
             "CUDA_VISIBLE_DEVICES", "RLAIF_SERVE_MODEL", "RLAIF_SERVE_DEVICE",
             "RLAIF_SERVE_BACKEND")


class Endpoint(BaseModel):
    """One endpoint jobs may use: its URL (None: the embedded model), key and models."""

    name: str
    url: str | None = None
    key_env: str | None = None
    key: SecretStr | None = Field(default=None, exclude=True)
    models: list[str] | None = None


def parse_endpoint(spec: str, env: Mapping[str, str]) -> Endpoint:
    """``NAME=URL[,key_env=VAR][,models=a|b]`` as an Endpoint, its key read from ``env``."""
    where = f"--endpoint {spec}"
    name, sep, rest = spec.partition("=")
    if not sep or not name.strip() or not rest:
        raise UserInputError(f"{where}: expected NAME=URL[,key_env=VAR][,models=a|b]")
    url, *extras = rest.split(",")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserInputError(f"{where}: {url!r} is not an http(s) URL")
    fields: dict[str, str] = {}
    for extra in extras:
        key, sep, value = extra.partition("=")
        if key not in ("key_env", "models") or not sep or not value or key in fields:
            raise UserInputError(f"{where}: {extra!r}: expected key_env=VAR or models=a|b once")
        fields[key] = value
    key = None
    if "key_env" in fields:
        key = env.get(fields["key_env"])
        if not key:
            raise UserInputError(f"{where}: the variable {fields['key_env']} is not set or empty")
    models = fields["models"].split("|") if "models" in fields else None
    return Endpoint(name=name.strip(), url=url.rstrip("/"), key_env=fields.get("key_env"),
                    key=key, models=models)


def endpoint_table(specs: list[str], env: Mapping[str, str]) -> dict[str, Endpoint]:
    """The named endpoints of the service; ``default`` is the embedded model unless given."""
    table = {DEFAULT: Endpoint(name=DEFAULT)}
    named: set[str] = set()
    for spec in specs:
        endpoint = parse_endpoint(spec, env)
        if endpoint.name in named:
            raise UserInputError(f"--endpoint {spec}: {endpoint.name!r} is named twice")
        named.add(endpoint.name)
        table[endpoint.name] = endpoint
    return table


def child_env(env: Mapping[str, str], endpoint: Endpoint) -> dict[str, str]:
    """The environment of a job process: the allow-listed variables, and the endpoint's URL
    and key (nothing else of the service's environment)."""
    out = {k: env[k] for k in CHILD_ENV if k in env}
    out["PYTHONUNBUFFERED"] = "1"
    if endpoint.url is not None:
        out["OPENAI_BASE_URL"] = endpoint.url
    if endpoint.key is not None:
        out["OPENAI_API_KEY"] = endpoint.key.get_secret_value()
    return out
