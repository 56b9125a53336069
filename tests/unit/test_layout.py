"""The test tree keeps to its harness: one launcher of processes (devtools/launcher.py) and
one polling loop (devtools/polling.py).

- No file in tests/ or bench/ starts a process with `subprocess.Popen` or asyncio's
  `create_subprocess_*`: a service goes through `devtools.launcher`, a command that runs to its
  end through `subprocess.run`.
- No loop in tests/ sleeps between tries: a wait for a condition is
  `devtools.polling.eventually`. A loop that makes load or lets time pass on purpose says so
  with `# not polling: <why>` on its first line.
- No sleep in tests/ stands in for a wait: one that lets time pass on purpose (a TTL, a
  pause, a task parked until it is cancelled) says so with `# not a wait: <why>` on its line
  or the line above.

`sleep(0)`, one turn of the event loop, is not a wait.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Final

ROOT = Path(__file__).resolve().parents[2]
SPAWNERS: Final = frozenset({"Popen", "create_subprocess_exec", "create_subprocess_shell"})
EXEMPT: Final = "# not polling:"
DELIBERATE: Final = "# not a wait:"


@functools.cache
def _parsed(source: str) -> ast.Module:
    return ast.parse(source)  # once per file for all the checks


def _called(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else None


def spawns(source: str) -> list[int]:
    """Lines that start a process other than through `subprocess.run`."""
    return [
        node.lineno
        for node in ast.walk(_parsed(source))
        if isinstance(node, ast.Call) and _called(node) in SPAWNERS
    ]


def _outside_functions(nodes: list[ast.stmt]) -> Iterator[ast.AST]:
    # A function defined in a loop's body does not sleep in that loop.
    pending: list[ast.AST] = list(nodes)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        yield node
        pending.extend(ast.iter_child_nodes(node))


def _waits(call: ast.Call) -> bool:
    if _called(call) != "sleep":
        return False
    zero = call.args and isinstance(call.args[0], ast.Constant) and call.args[0].value == 0
    return not zero


def polling_loops(source: str) -> list[int]:
    """First lines of the loops that sleep between iterations, unless marked as not polling."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(_parsed(source)):
        if not isinstance(node, ast.While | ast.For | ast.AsyncFor):
            continue
        if EXEMPT in lines[node.lineno - 1]:
            continue
        body = _outside_functions([*node.body, *node.orelse])
        if any(isinstance(inner, ast.Call) and _waits(inner) for inner in body):
            found.append(node.lineno)
    return found


def bare_sleeps(source: str) -> list[int]:
    """Lines of the sleeps outside any loop that do not say why they are not a wait."""
    lines = source.splitlines()
    tree = _parsed(source)
    loops = [
        (node.lineno, node.end_lineno or node.lineno)
        for node in ast.walk(tree)
        if isinstance(node, ast.While | ast.For | ast.AsyncFor)
    ]
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and _waits(node)):
            continue
        if any(first <= node.lineno <= last for first, last in loops):
            continue  # a loop's sleeps are `polling_loops`' to judge
        said = lines[node.lineno - 1] + (lines[node.lineno - 2] if node.lineno > 1 else "")
        if DELIBERATE not in said:
            found.append(node.lineno)
    return found


def _sources(*folders: str, mentioning: tuple[str, ...]) -> Iterator[tuple[Path, str]]:
    """The Python files under `folders` whose text mentions one of the words: only those are
    parsed, which keeps this test in milliseconds."""
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text()
            if any(word in text for word in mentioning):
                yield path, text


def test_no_process_is_started_outside_devtools() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path, text in _sources("tests", "bench", mentioning=tuple(SPAWNERS))
        for line in spawns(text)
    ]
    assert not found, "start services with devtools.launcher:\n" + "\n".join(found)


def test_no_test_polls_by_hand() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path, text in _sources("tests", mentioning=("sleep(",))
        for line in polling_loops(text)
    ]
    assert not found, (
        f"wait with devtools.polling.eventually (or mark the loop {EXEMPT!r} <why>):\n"
        + "\n".join(found)
    )


def test_no_test_sleeps_instead_of_waiting() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path, text in _sources("tests", mentioning=("sleep(",))
        for line in bare_sleeps(text)
    ]
    assert not found, (
        f"wait for the event with devtools.polling.eventually (or say {DELIBERATE!r} <why>):\n"
        + "\n".join(found)
    )


def test_the_checks_catch_what_they_should() -> None:
    assert spawns("import subprocess\nsubprocess.Popen(['x'])\n") == [2]
    assert spawns("from subprocess import Popen\nPopen(['x'])\n") == [2]
    assert spawns("async def f():\n    await asyncio.create_subprocess_exec('x')\n") == [2]
    assert spawns("subprocess.run(['x'], check=True)\nx = subprocess.Popen\n") == []
    deadline_loop = (
        "async def f():\n"
        "    while time.monotonic() < deadline:\n"
        "        if await check():\n"
        "            return\n"
        "        await asyncio.sleep(0.05)\n"
    )
    assert polling_loops(deadline_loop) == [2]
    assert polling_loops("for _ in range(9):\n    if ok():\n        break\n    time.sleep(1)\n")
    assert not polling_loops("while x:\n    await asyncio.sleep(0)\n")
    assert not polling_loops(deadline_loop.replace("deadline:", f"deadline:  {EXEMPT} load"))
    assert not polling_loops("for x in y:\n    async def f():\n        await asyncio.sleep(1)\n")
    assert bare_sleeps("async def f():\n    go()\n    await asyncio.sleep(0.05)\n") == [3]
    assert bare_sleeps(f"time.sleep(1)  {DELIBERATE} a pause\n") == []
    assert bare_sleeps(f"{DELIBERATE} the TTL runs out\ntime.sleep(1)\n") == []
    assert bare_sleeps("await asyncio.sleep(0)\nwhile x:\n    time.sleep(1)\n") == []
