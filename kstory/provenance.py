"""Where a result came from: command, config, backend, machine, versions."""

import datetime
import os
import platform
import shlex
import subprocess
import sys


def _git(*arguments):
    try:
        return subprocess.run(
            ["git", *arguments],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _git_commit():
    return _git("rev-parse", "--short", "HEAD") or "unknown"


def _git_tree():
    """`"clean"`, or `"dirty"` when tracked files other than `results/` differ
    from the commit (`make results` rewrites those as it goes)."""
    status = _git(
        "-C",
        _git("rev-parse", "--show-toplevel") or ".",
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        ".",
        ":(exclude)results",
    )
    if status is None:
        return "unknown"
    return "dirty" if status else "clean"


def _memory_gib():
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        return round(pages * page_size / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def provenance(config_path=None):
    """Returns a dict that says what produced a result, for `results/` files."""
    import keras

    return {
        "command": "kstory " + shlex.join(sys.argv[1:]),
        "config": config_path,
        "backend": keras.config.backend(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {_memory_gib()} GiB, "
        f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "keras": keras.__version__,
        "kstory_commit": _git_commit(),
        "kstory_tree": _git_tree(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def provenance_markdown(record):
    """Renders `provenance()` as the header of a results file."""
    return "\n".join(f"- {name}: `{value}`" for name, value in record.items())


def write_report(path, title, body, record):
    """Writes a results file: its title, what produced it, then its body.

    Args:
        path: str. The results file.
        title: str. Its heading.
        body: str. Markdown.
        record: dict. `provenance()`, perhaps with fields changed.
    """
    with open(path, "w") as file:
        file.write(f"# {title}\n\nProduced by:\n\n{provenance_markdown(record)}\n\n")
        file.write(body.rstrip("\n") + "\n")


def write_script_report(path, title, table, raw_lines, **overrides):
    """Writes a benchmark script's results file: title, provenance of the
    script's command line, its table and the raw JSON lines.

    Args:
        path: str. The results file.
        title: str. Its heading.
        table: str. Markdown body.
        raw_lines: list of str. One raw result per line.
        **overrides: provenance fields to set (e.g. `backend="jax"`).
    """
    record = dict(provenance(), command="python " + " ".join(sys.argv), **overrides)
    raw = "\n".join(raw_lines)
    write_report(path, title, f"{table}\n\nRaw results:\n\n```\n{raw}\n```", record)
