"""The endpoint client: the only package that speaks HTTP to a model.

``client`` holds ``LLMClient`` (concurrency, rate limits, retries, the ledger), ``_http`` the
project's own HTTP/1.1 transport (plain http), ``_httpx`` the httpx one (https and proxies),
``limits`` token buckets and prices (online and batch), ``keys`` how a request is named in the
ledger, ``completion`` what one request returned, ``replies`` how replies are read;
``hosted`` (with ``hosted_options`` and ``batch_api``) runs requests as hosted Batch API jobs.
Callers import from here.
"""

from datagen.endpoint.client import (
    CHAT_PATH,
    SUPPORTED_PATHS,
    ClientConfig,
    LLMClient,
    Request,
    Stats,
    run_async,
)
from datagen.endpoint.completion import Completion
from datagen.endpoint.keys import canonical_json, request_key

__all__ = [
    "CHAT_PATH",
    "SUPPORTED_PATHS",
    "ClientConfig",
    "Completion",
    "LLMClient",
    "Request",
    "Stats",
    "canonical_json",
    "request_key",
    "run_async",
]
