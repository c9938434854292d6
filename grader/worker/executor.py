"""Run notebook cells with IPython semantics and record what they produce.

Outputs are captured into nbformat-shaped dicts with hard size caps, so a cell that prints
gigabytes costs the grader nothing. Shell commands are not run, by whichever IPython path
they come (``!cmd``, ``%sx``, ``%system``, ``%%bash``, ``%%sh``, ``%%script`` and the other
script cell magics, ``get_ipython().system_raw``, ``system_piped``, ``getoutput``): they are
all recorded and reported the same way. (They would run inside the sandbox; the point is
one policy, not a second line of defence.)
"""

from __future__ import annotations

import builtins
import re
import sys
import time

MAX_STREAM_CHARS = 64 * 1024
MAX_CELL_OUTPUT_CHARS = 256 * 1024
MAX_IMAGE_CHARS = 1024 * 1024
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")  # object addresses differ from run to run
_KEPT_MIME = ("text/plain", "text/html", "text/markdown", "image/png", "image/svg+xml")


def restore_builtins(before: dict) -> list[str]:
    """Put back builtins a cell replaced: the worker's own machinery relies on them."""
    current = vars(builtins)
    changed = [k for k, v in before.items() if current.get(k) is not v]
    for k in changed:
        current[k] = before[k]
    return changed


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


class BoundedStream:
    """A write-only text stream that keeps at most ``limit`` characters and counts the rest."""

    def __init__(self, limit: int = MAX_STREAM_CHARS) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.kept = 0
        self.dropped = 0

    def write(self, text: object) -> int:
        text = str(text)
        room = self.limit - self.kept
        if room > 0:
            piece = text[:room]
            self.parts.append(piece)
            self.kept += len(piece)
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:
        return "utf-8"

    def getvalue(self) -> str:
        text = "".join(self.parts)
        if self.dropped:
            text += f"\n[convgrade: {self.dropped} more characters of output were cut]\n"
        return text


def _bounded_bundle(data: dict) -> dict:
    kept = {}
    for mime in _KEPT_MIME:
        if mime not in data:
            continue
        value = data[mime]
        if not isinstance(value, str):
            value = str(value)
        limit = MAX_IMAGE_CHARS if mime.startswith("image/") else MAX_STREAM_CHARS
        if len(value) <= limit:
            kept[mime] = value
    if "text/plain" not in kept and data.get("text/plain") is not None:
        kept["text/plain"] = str(data["text/plain"])[:MAX_STREAM_CHARS] + " [cut]"
    return kept


_prepared: CellRunner | None = None


def prepare_runner() -> None:
    """In the zygote: build the shell once, so every worker inherits it already built.

    Building an InteractiveShell (traitlets configuration, ``%matplotlib inline``) cost each
    worker about 25 ms of CPU. The shell built here has run no cell, so each worker still
    starts from the same clean state.
    """
    global _prepared
    _prepared = CellRunner()


def take_runner() -> CellRunner:
    """The zygote's prepared runner (once per worker), else a new one."""
    global _prepared
    runner, _prepared = _prepared, None
    if runner is None:
        return CellRunner()
    profile_dir = runner.shell.profile_dir
    try:  # the profile folders were made in the zygote's /tmp, not this worker's own
        if profile_dir is not None:
            profile_dir.check_dirs()
    except Exception:
        pass
    return runner


class CellRunner:
    """Owns one IPython shell and runs cells in it, one at a time."""

    def __init__(self) -> None:
        from IPython.core.displayhook import DisplayHook
        from IPython.core.displaypub import DisplayPublisher
        from IPython.core.interactiveshell import InteractiveShell
        from traitlets.config import Config

        runner = self

        class _Publisher(DisplayPublisher):
            def publish(
                self, data, metadata=None, source=None, *, transient=None, update=False, **kw
            ):
                runner._add_output(
                    {"output_type": "display_data", "data": _bounded_bundle(data), "metadata": {}}
                )

            def clear_output(self, wait=False):
                runner._outputs.clear()

        class _Hook(DisplayHook):
            def write_output_prompt(self):
                pass

            def write_format_data(self, format_dict, md_dict=None):
                runner._add_output(
                    {
                        "output_type": "execute_result",
                        "data": _bounded_bundle(format_dict),
                        "metadata": {},
                        "execution_count": self.prompt_count,
                    }
                )

        cfg = Config()
        cfg.HistoryManager.enabled = False
        cfg.InteractiveShell.colors = "NoColor"
        # Plain, not Context: Context re-parses every source file in a traceback (stack_data),
        # which took about 0.3 s of CPU for one error raised deep inside Keras.
        cfg.InteractiveShell.xmode = "Plain"
        self.shell = InteractiveShell.instance(config=cfg)
        self.shell.display_pub = _Publisher(shell=self.shell)
        self.shell.displayhook = _Hook(shell=self.shell, cache_size=0)
        self._take_over_shell()
        try:
            self.shell.run_line_magic("matplotlib", "inline")
        except Exception:  # matplotlib is optional in a notebook
            pass
        from . import imports

        imports.install(self.shell)
        self._outputs: list[dict] = []
        self._error: dict | None = None
        self._shell_commands: list[str] = []
        self._chars = 0

    @property
    def namespace(self) -> dict:
        return self.shell.user_ns

    def _add_output(self, output: dict) -> None:
        size = sum(len(v) for v in output.get("data", {}).values()) + len(output.get("text", ""))
        if self._chars + size > MAX_CELL_OUTPUT_CHARS:
            return
        self._chars += size
        self._outputs.append(output)

    def _take_over_shell(self) -> None:
        """Route the shell's displays, errors and shell commands to this runner.

        The shell object's own methods are replaced: a subclass of InteractiveShell would be
        a second singleton class, which IPython refuses (MultipleInstanceError) once the
        process holds a plain shell.
        """
        shell = self.shell
        trap = shell.display_trap
        if trap is None:  # every InteractiveShell builds one; output capture relies on it
            raise RuntimeError("IPython's shell has no display trap")
        trap.hook = shell.displayhook
        self._refuse_shell_paths()
        shell._showtraceback = self._record_traceback  # type: ignore[method-assign]
        # The base shell has no GUI loop; the inline backend needs none, so accept the call.
        shell.enable_gui = lambda gui=None: None  # type: ignore[method-assign]

    def _refuse_shell_paths(self) -> None:
        """One shell policy for every way IPython offers to run a command."""
        shell = self.shell
        # The shell's own methods are replaced (see _take_over_shell for why).
        shell.system = shell.system_raw = shell.system_piped = self._refuse_shell  # type: ignore[method-assign]
        shell.getoutput = self._refuse_getoutput  # type: ignore[method-assign]
        manager = shell.magics_manager
        if manager is None:  # every InteractiveShell builds one; the policy needs it
            raise RuntimeError("IPython's shell has no magics manager")
        # %%script, %%bash, %%sh, %%perl, ...: ScriptMagics starts them as subprocesses
        # itself, without shell.system.
        script = manager.registry.get("ScriptMagics")
        names = set(script.magics["cell"]) if script is not None else set()
        for name in sorted(names | {"script", "bash", "sh"}):
            # What shell.register_magic_function does (whose functools.wraps hides its
            # signature from the type checker).
            manager.register_function(self._refuser(name), magic_kind="cell", magic_name=name)

    def _refuser(self, name: str):
        def refuse(line: str = "", cell: str = "") -> None:
            first = next((t for t in str(cell).splitlines() if t.strip()), "")
            self._refuse_shell(f"%%{name} {line}".rstrip() + (f": {first}" if first else ""))

        return refuse

    def _refuse_shell(self, cmd: str) -> None:
        self._shell_commands.append(str(cmd)[:500])
        shown = cmd if str(cmd).startswith("%") else f"!{cmd}"
        sys.stderr.write(f"[convgrade: shell command not run under grading: {shown}]\n")

    def _refuse_getoutput(self, cmd: str, split: bool = True, depth: int = 0):
        self._refuse_shell(cmd)
        return []

    def _record_traceback(self, etype, evalue, stb) -> None:
        text = strip_ansi("\n".join(stb) if isinstance(stb, list) else str(stb))
        self._error = {
            "ename": getattr(etype, "__name__", str(etype)),
            "evalue": strip_ansi(str(evalue))[:2000],
            "traceback": text[-20000:],
        }

    def run(self, source: str) -> dict:
        """Run one cell; returns a plain dict (outputs, error, timing)."""
        self._outputs, self._error, self._shell_commands, self._chars = [], None, [], 0
        out, err = BoundedStream(), BoundedStream()
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = out, err
        started = time.perf_counter()
        builtins_before = dict(vars(builtins))
        try:
            self.shell.run_cell(source, store_history=True, silent=False)
        except KeyboardInterrupt:
            self._error = {"ename": "KeyboardInterrupt", "evalue": "interrupted", "traceback": ""}
        finally:
            sys.stdout, sys.stderr = saved
            restored = restore_builtins(builtins_before)
        if restored:
            err.write(
                "[convgrade: replaced Python builtins were put back after this cell: "
                + ", ".join(sorted(restored))
                + "]\n"
            )
        elapsed = time.perf_counter() - started
        streams = []
        for name, stream in (("stdout", out), ("stderr", err)):
            text = stream.getvalue()
            if text:
                streams.append({"output_type": "stream", "name": name, "text": text})
        outputs = streams + self._outputs
        if self._error is not None:
            e = self._error
            outputs.append(
                {
                    "output_type": "error",
                    "ename": e["ename"],
                    "evalue": e["evalue"],
                    "traceback": e["traceback"].splitlines()[-60:],
                }
            )
        error = self._error
        if error is not None:  # the record kept in result.json: identical on every re-grade
            error = {**error, "evalue": _ADDRESS.sub("0x...", error["evalue"])}
        return {
            "outputs": outputs,
            "error": error,
            "shell_commands": list(self._shell_commands),
            "duration": elapsed,
        }
