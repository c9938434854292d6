"""What a check may tell the student: failure messages, with student text cut short.

A hidden check's message must not carry back what it fed the student's code: text the
student's code produced is cut to a sanitised first line, and lines with the expected and
actual arrays are dropped. Object addresses are masked, so a re-grade reads the same.
"""

from __future__ import annotations

import re

from grader.engine.proxy import CheckFailure, StudentCodeRaised

_HIDDEN_LINE_PREFIXES = (" x:", " y:", "x:", "y:", "ACTUAL", "DESIRED", " ACTUAL", " DESIRED")


def check_message(excinfo, visibility: str) -> str:
    """The message a failed check shows the student."""
    exc = excinfo.value
    if visibility == "hidden":
        return hidden_message(exc)
    if isinstance(exc, CheckFailure):
        return str(exc)
    if isinstance(exc, AssertionError):
        return str(exc).strip() or "the result did not meet this check's condition"
    return f"{type(exc).__name__}: {str(exc)[:400]}"


def hidden_message(exc: BaseException) -> str:
    """What a hidden check may tell the student.

    Text the student's own code produced (exception messages, wherever a check quotes them)
    is cut to a short, sanitised first line: it must not carry what the hidden check fed the
    code back out to the student. Lines with the expected and actual arrays are dropped.
    """
    if isinstance(exc, AssertionError):
        text = str(exc).strip()
    else:
        text = f"{type(exc).__name__}: {str(exc)}"
    text = redact_student_text(text, _student_texts(exc))
    # Student text can also arrive without an exception to trace it to (a class name the
    # worker reports, say); a check's own words are never this long.
    text = _LONG_TOKEN.sub(lambda m: m.group(0)[:40] + " [...]", text)
    lines = [ln for ln in text.splitlines() if not ln.startswith(_HIDDEN_LINE_PREFIXES)]
    text = "\n".join(lines).strip()[:400]
    return text or "the result did not meet this check's condition"


# Object addresses ("<function f at 0x7f3a...>") differ from run to run; a re-grade must not.
ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
_LONG_TOKEN = re.compile(r"\S{41,}")
MAX_STUDENT_LINE = 80
_UNSAFE = re.compile(r"[^A-Za-z0-9 _.,:;'\"()\[\]=/+*-]")
_MIN_QUOTE = 12  # shorter common substrings are ordinary words, not quoted student text


def student_line(text: str) -> str:
    """The first line of student-produced text, sanitised and at most 80 characters."""
    lines = str(text).strip().splitlines()
    first = _UNSAFE.sub("?", lines[0].strip() if lines else "")
    if len(first) > MAX_STUDENT_LINE or len(lines) > 1:
        return first[:MAX_STUDENT_LINE] + " [...]"
    return first


def _student_texts(first: BaseException) -> list[str]:
    """Exception messages and type names the student's code produced, along the chain."""
    found: list[str] = []
    seen: set[int] = set()
    exc: BaseException | None = first
    while exc is not None and id(exc) not in seen and len(seen) < 20:
        seen.add(id(exc))
        if isinstance(exc, StudentCodeRaised):
            found += [exc.evalue, exc.ename]
        exc = exc.__cause__ or exc.__context__
    return [t for t in found if t]


def redact_student_text(text: str, student_texts: list[str]) -> str:
    """Replace every long run of ``text`` quoted from ``student_texts`` by its student_line."""
    for quoted in sorted(set(student_texts), key=len, reverse=True):
        if len(quoted) < _MIN_QUOTE:  # a type name: keep it, but only its safe characters
            safe = re.sub(r"[^A-Za-z0-9_.]", "?", quoted)[:60]
            text = text.replace(quoted, safe)
            continue
        out, i = [], 0
        while i < len(text):
            j = i + _MIN_QUOTE
            if j <= len(text) and text[i:j] in quoted:
                while j < len(text) and text[i : j + 1] in quoted:
                    j += 1
                out.append(student_line(text[i:j]))
                i = j
            else:
                out.append(text[i])
                i += 1
        text = "".join(out)
    return text


def mask_addresses(text: str) -> str:
    """``text`` with object addresses masked (they differ from run to run)."""
    return ADDRESS.sub("0x...", text)
