"""Run the shell examples the docs mark for it and compare what they print (cram and doctest style).

A marked example is an HTML comment, then a fenced ``console`` block:

    <!-- doctest: pool numbers -->
    ```console
    $ get_hosts --status
    HOST       STATE  RATING ...
    ```

Rules:

- The comment's first word names the fixture the test provides (daemons on
  loopback, an lts.conf); the other words are flags: ``numbers`` makes every
  number of the shown output match any number (ratings, loads and times
  differ from one machine to the next; a number inside an address or a name
  such as ``127.0.1.2`` or ``load-1min`` stays literal), ``stdout`` leaves
  standard error out of the comparison.
- ``$ `` starts a command; the lines under it, up to the next command, are
  what it shows: its standard output, then its standard error.
- All commands of a block run in one ``sh``, one after the other, so a
  variable set or ``$?`` carries over (``echo $?`` shows the last status).
- Runs of spaces compare equal (tables are aligned to their widest cell);
  ``...`` inside a line matches any text, and a line that is only ``...``
  matches any number of lines, none included.

No pytest in here: tests/test_docs.py provides the fixtures and the cases.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections import namedtuple
from pathlib import Path

MARKER = re.compile(r"^\s*<!--\s*doctest:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)```console\s*$")
FLAGS = frozenset(("numbers", "stdout"))
# A number standing alone: not part of an address (127.0.1.2, app1:3377), a name (load-1min, UTF-8) or a
# version; punctuation after it ("port 377:", "rating 50,") ends it.
NUMBER = re.compile(r"(?<![\w.:-])\d+(?:\.\d+)?(?![\w.:]\w|\w)")
ELLIPSIS = "..."

Block = namedtuple("Block", "path lineno fixture flags steps")
Block.__doc__ = "A marked example: where it is, the fixture it needs, its flags, and its Steps."
Step = namedtuple("Step", "command expected lineno")


class DocError(Exception):
    """A marked example that cannot be read (no fence after the marker, an unknown flag...)."""


def read_blocks(path):
    """Every marked example of the Markdown file at PATH, in file order."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        marker = MARKER.match(lines[index])
        index += 1
        if not marker:
            continue
        words = marker.group(1).split()
        if not words or words[0] in FLAGS:
            raise DocError(f"{path}:{index}: the doctest marker names no fixture")
        unknown = set(words[1:]) - FLAGS
        if unknown:
            raise DocError(f"{path}:{index}: unknown doctest flag(s) {', '.join(sorted(unknown))}")
        while index < len(lines) and not lines[index].strip():
            index += 1
        fence = FENCE.match(lines[index]) if index < len(lines) else None
        if not fence:
            raise DocError(f"{path}:{index}: a doctest marker must be followed by a ```console block")
        indent = len(fence.group(1))
        start = index + 1
        index = start
        while index < len(lines) and lines[index].strip() != "```":
            index += 1
        if index == len(lines):
            raise DocError(f"{path}:{start}: the ```console block never ends")
        body = [line[indent:] if line[:indent].isspace() else line.lstrip() for line in lines[start:index]]
        blocks.append(Block(str(path), start + 1, words[0], frozenset(words[1:]), _steps(body, path, start + 1)))
        index += 1
    return blocks


def _steps(body, path, lineno):
    """The commands of a block whose first line is LINENO, each with the lines it shows."""
    steps = []
    for offset, line in enumerate(body):
        if line.startswith("$ "):
            steps.append(Step(line[2:], [], lineno + offset))
        elif steps:
            steps[-1].expected.append(line)
        elif line.strip():
            raise DocError(f"{path}:{lineno}: output before the first '$ ' command")
    if not steps:
        raise DocError(f"{path}:{lineno}: a doctest block without a '$ ' command")
    return steps


def _line_pattern(expected, numbers):
    """A regex for one shown line: spaces collapsed, ... as any text, numbers as any number when asked."""
    parts = []
    for piece in re.split(r"(\.\.\.)", " ".join(expected.split())):
        if piece == ELLIPSIS:
            parts.append(".*?")
            continue
        position = 0
        for found in NUMBER.finditer(piece) if numbers else ():
            parts.append(re.escape(piece[position : found.start()]))
            parts.append(r"\d+(?:\.\d+)?")
            position = found.end()
        parts.append(re.escape(piece[position:]))
    return re.compile("".join(parts) + r"\Z")


def lines_match(expected, actual, numbers=False):
    """True when the ACTUAL lines are what the EXPECTED lines show (see the module rules)."""
    patterns = [None if line.strip() == ELLIPSIS else _line_pattern(line, numbers) for line in expected]
    actual = [" ".join(line.split()) for line in actual]

    def match(i, j):  # patterns[i:] against actual[j:]; few ... lines, so plain recursion
        if i == len(patterns):
            return j == len(actual)
        if patterns[i] is None:
            return any(match(i + 1, k) for k in range(j, len(actual) + 1))
        return j < len(actual) and patterns[i].match(actual[j]) is not None and match(i + 1, j + 1)

    return match(0, 0)


def run_block(block, env, cwd, wrap=(), timeout=60):
    """Run BLOCK's commands in one sh -> [(Step, output lines)]. WRAP: a command line to run sh under."""
    with tempfile.TemporaryDirectory(prefix="docrunner-") as scratch:
        script = ["set +e"]
        for number, step in enumerate(block.steps):
            out, err = f"{scratch}/{number}.out", f"{scratch}/{number}.err"
            # (exit $s) first: the command sees the status of the one before as $?.
            script.append(f"(exit ${{s:-0}}); {{ {step.command}\n}} >{out} 2>{err}; s=$?")
        script_path = Path(scratch) / "block.sh"
        script_path.write_text("\n".join(script) + "\n", encoding="utf-8")
        os.chmod(scratch, 0o755)
        os.chmod(script_path, 0o644)
        done = subprocess.run(
            [*wrap, "sh", str(script_path)],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0 and done.stderr:
            raise DocError(f"{block.path}:{block.lineno}: the block's shell failed: {done.stderr.strip()}")
        results = []
        for number, step in enumerate(block.steps):
            output = Path(f"{scratch}/{number}.out").read_text(encoding="utf-8", errors="replace").splitlines()
            if "stdout" not in block.flags:
                output += Path(f"{scratch}/{number}.err").read_text(encoding="utf-8", errors="replace").splitlines()
            results.append((step, output))
        return results


def mismatches(block, results):
    """One description per command whose output is not what BLOCK shows (empty: the docs are true)."""
    found = []
    for step, output in results:
        if not lines_match(step.expected, output, "numbers" in block.flags):
            shown = "\n".join("    " + line for line in step.expected)
            got = "\n".join("    " + line for line in output)
            found.append(
                f"{block.path}:{step.lineno}: $ {step.command}\n  the docs show:\n{shown}\n  it printed:\n{got}"
            )
    return found
