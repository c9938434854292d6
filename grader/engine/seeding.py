"""Seeds for grading: the same submission sees the same numbers, another one does not.

Three seeds, all derived from the submission's *content* (its code cells, in order):

- the **notebook seed**, sent to the worker before the notebook runs (and again before a
  restarted worker replays it), so Keras initialisers, ``random`` and NumPy draw the same
  numbers on every re-grade, on a warm or a fresh worker, with any ``--jobs``;
- one **check seed** per check (pytest node id). The trusted process seeds its own ``random``
  and NumPy and the checks' ``rng`` fixture from it. For hidden checks it is an HMAC keyed
  by the assignment's secret (see :func:`assignment_secret`), so hidden inputs change with
  every change to the submission and cannot be computed without the secret: a table of
  inputs learned from one submission is useless for the next;
- the check's **worker seed**, sent before the check's calls: a one-way function of the
  check seed, so the worker learns nothing about the inputs the check draws.

The secret is 32 random bytes in hex, in the file ``secret`` of the assignment folder
(created on first use). ``convgrade assign`` never puts it in the student release, and the
sandbox never shows the assignment folder. If the folder is read-only, the secret is kept
under ``$XDG_CONFIG_HOME/convgrade/secrets/`` (default ``~/.config``) instead.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from grader.errors import StaffError

SECRET_FILE = "secret"


def content_key(sources: Iterable[str]) -> bytes:
    """A digest of a submission's code cells (what it runs), in order."""
    h = hashlib.sha256(b"convgrade-content-v1")
    for source in sources:
        data = str(source).encode("utf-8", errors="surrogatepass")
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.digest()


def notebook_seed(key: bytes) -> int:
    """The seed the worker gets before the notebook runs."""
    return _int(hashlib.sha256(b"notebook\0" + key).digest())


def check_seed(key: bytes, nodeid: str, secret: bytes | None = None) -> int:
    """A check's seed: keyed by the assignment's secret for hidden checks."""
    msg = b"check\0" + key + b"\0" + nodeid.encode()
    if secret is None:
        return _int(hashlib.sha256(msg).digest())
    return _int(hmac.new(secret, msg, hashlib.sha256).digest())


def worker_seed(seed: int) -> int:
    """What the worker gets for a check: says nothing about the check's own draws."""
    return _int(hashlib.sha256(b"worker\0" + seed.to_bytes(8, "big")).digest()) % 2**31


def _int(digest: bytes) -> int:
    return int.from_bytes(digest[:8], "big")


def _fallback_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "convgrade" / "secrets"


def assignment_secret(root: Path) -> bytes:
    """The assignment's secret, created on first use.

    Raises:
        StaffError: no secret exists and none could be written.
    """
    root = Path(root).resolve()
    candidates = [
        root / SECRET_FILE,
        _fallback_dir() / f"{root.name}-{hashlib.sha256(str(root).encode()).hexdigest()[:12]}",
    ]
    for path in candidates:
        if path.is_file():
            return _read(path)
    errors = []
    for path in candidates:
        # Written in full under a temporary name, then linked into place: a concurrent
        # grader sees either no secret or the whole of it, and exactly one link wins.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32) + "\n")
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            return _read(path)
        except OSError as exc:
            errors.append(f"{path}: {exc.strerror}")
        finally:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    raise StaffError(
        "the assignment has no secret for its hidden checks and none could be created ("
        + "; ".join(errors)
        + f"). Create one: python -c 'import secrets; print(secrets.token_hex(32))' > "
        f"{root / SECRET_FILE}"
    )


def _read(path: Path) -> bytes:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (PermissionError, UnicodeDecodeError) as exc:
        raise StaffError(
            f"cannot read the assignment's secret {path} ({exc}). It belongs to whoever "
            "grades this assignment: read it as that user, or give this user a copy of the "
            "assignment folder."
        ) from None
    if len(text) < 32:
        raise StaffError(
            f"{path} holds a secret of {len(text)} characters; use at least 32 (e.g. "
            "python -c 'import secrets; print(secrets.token_hex(32))')."
        )
    return text.encode()
