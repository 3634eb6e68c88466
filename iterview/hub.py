"""Loading a Hugging Face model by hub id without hanging: the local cache first, the network only when the
hub answers within seconds (huggingface_hub's own retries take minutes to give up on an unreachable host)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlparse

from iterview.errors import UserError

T = TypeVar("T")
PROBE_SECONDS = 5.0


def hub_reachable(timeout: float = PROBE_SECONDS) -> bool:
    """Whether the hub endpoint (HF_ENDPOINT or huggingface.co) accepts a TCP connection within timeout
    seconds, name lookup included (run in a thread, as getaddrinfo ignores socket timeouts)."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((url.hostname, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def offline() -> bool:
    """HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE set to a true value."""
    return any(
        os.environ.get(name, "").lower() in ("1", "true", "yes") for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def load_pretrained(load: Callable[..., T], name: str, option: str) -> T:
    """load(name, **kwargs) (a `from_pretrained`) for a local folder or a hub id: a folder as is; a hub id from
    the cache, else from the hub if it answers; else one UserError naming `option` and what to pass instead."""
    folder = Path(name).expanduser().is_dir()
    if not folder and name.startswith((".", "/", "~")):
        raise UserError("model folder not found", f"{option} {name}", "no such folder", "check the path")
    if not folder:
        try:
            return load(name, local_files_only=True)
        except (OSError, ValueError):
            pass  # not cached (or not a valid hub id: the hub call below says why)
    if not folder and (offline() or not hub_reachable()):
        why = "offline mode is set" if offline() else "the hub cannot be reached"
        raise UserError(
            "model neither cached nor reachable",
            f"{option} {name}",
            why,
            f"pass a local folder (the model's save_pretrained output) as {option}",
        )
    try:
        return load(name)
    except OSError as error:
        raise UserError("model could not be loaded", f"{option} {name}", str(error).splitlines()[0]) from None
