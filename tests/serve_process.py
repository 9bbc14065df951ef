"""A running ``rlaif serve`` subprocess for tests, and a reader of its counters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

RLAIF = str(Path(sys.executable).parent / "rlaif")
BACKENDS = ["ctranslate2", "transformers"]


def session_cache_env(tmp_path_factory) -> dict[str, str]:
    """The environment that points a server at this session's cache folder (the autouse
    fixture that sets it for tests has not run yet when a module-scoped server starts)."""
    return {"RLAIF_CACHE_DIR": str(tmp_path_factory.getbasetemp() / "rlaif-cache")}


class Server:
    """A running `rlaif serve` subprocess; ``base_url`` is its /v1 URL."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None,
                 key: str = "") -> None:
        self.log, self.key = log, key
        env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        with log.open("w") as err:
            self.proc = subprocess.Popen([RLAIF, "serve", *args], stdout=subprocess.PIPE,
                                         stderr=err, stdin=subprocess.DEVNULL, text=True, env=env)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(self.proc.stdout.readline()))
        reader.start()
        reader.join(300)
        if not lines or not lines[0].startswith("http://"):
            self.stop()
            raise RuntimeError(f"server did not start:\n{log.read_text()}")
        self.base_url = lines[0].strip()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.proc.stdout.close()

    def get(self, path: str, key: str | None = None) -> dict:
        request = urllib.request.Request(
            self.base_url + path, headers={"Authorization": f"Bearer {key or self.key}"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            return json.loads(resp.read())
