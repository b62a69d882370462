"""A fresh machine has only what scripts/setup installs: every executable the tests, the lab, the
benchmarks, the scripts and the payload call must be installed here and come from a Debian package
that is part of every Debian system (Essential or Priority: required) or that scripts/setup
installs. So a package installed by hand on a developer's machine fails here, not on a user's.

The calls are found in the code itself: argv lists given to subprocess and the project's runner
helpers (the command after `ip netns exec NS`, too), shell text run with `sh -c` or as a
pulumi-command `create`/`update`/`delete`, and the command positions of the shell scripts."""
from __future__ import annotations

import ast
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import tree_sitter_bash
from tree_sitter import Language, Parser

PROJECT_DIR = Path(__file__).resolve().parent.parent
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PYTHON_SOURCES = ("tests", "lab", "bench", "hardened_lightsail", "components")
SHELL_SOURCES = ("scripts", "payload", ".ci")

# Functions that run an argv list (subprocess's, and the project's own wrappers around it).
RUNNERS = {"run", "Popen", "check_output", "check_call", "call", "run_command", "exec_argv", "_listing",
           "popen", "spawn", "run_in_namespace"}
PROGRAM_LOOKUPS = {"which", "_program"}  # find a program by name before running it
SHELL_KEYWORDS = {"create", "update", "delete", "command"}  # pulumi-command's shell text
SHELL_BUILTINS = set(["!", "[", "[[", ":", ".", "alias", "bg", "break", "case", "cd", "command", "continue", "do", "done", "echo", "elif", "else", "esac", "eval", "exec", "exit", "export", "false", "fc", "fg", "fi", "for", "getopts", "hash", "if", "in", "jobs", "kill", "local", "printf", "pwd", "read", "readonly", "return", "set", "shift", "test", "then", "times", "trap", "true", "type", "ulimit", "umask", "unalias", "unset", "until", "wait", "while"])

# Called, but not from a Debian package, with the reason.
NOT_FROM_DEBIAN = {
    "python": "the project's .venv/bin/python (scripts/setup makes it)",
    "python3": "Python 3.11+ is a prerequisite, like Go (README, 'Dependencies and why')",
    "go": "the Go toolchain is a prerequisite of scripts/install-pulumi (README)",
    "pulumi": "built by scripts/install-pulumi into .tools/bin, or the user's own",
    "pulumi-language-python": "built by scripts/build-language-host",
    "pulumi-resource-command": "built by scripts/build-command-provider",
    "actionlint": "built by scripts/setup into .tools/bin",
}
# Used by payload/hlfw on a real server when present, never needed on this machine: the lab's
# server has no systemd, dnf or yum, and its packages are already installed (README, "The lab").
# Words an argv scan takes for a command where a helper takes other arguments, per file.
NOT_COMMANDS = {
    "bench/lab_bench.py": {"up", "destroy", "stack", "preview"},  # LabStack.run(args) runs scripts/pulumi ARGS
    "bench/scale_bench.py": {"up", "stack"},  # FleetStack (a LabStack) too
    # run(made, backends, checkout, args) runs scripts/pulumi ARGS in a checkout
    "tests/test_engine_lab_stacks.py": {"up", "destroy", "stack", "preview", "config"},
}
SERVER_SIDE_ONLY = {"systemd-run", "systemctl", "dnf", "yum", "rpm", "netfilter-persistent",
                    "service", "cloud-init", "needrestart"}


def _text(node: ast.AST) -> str | None:
    """A string constant, or an f-string with its holes as a word that names nothing."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "HOLE" for part in node.values)
    return None


def _argv_commands(elements: list[ast.AST]) -> list[str]:
    words = [_text(element) for element in elements]
    found = [words[0]] if words and words[0] else []
    for index, word in enumerate(words):
        if word == "exec" and index + 2 < len(words) and words[index - 1] == "netns" and words[index + 2]:
            found.append(words[index + 2])  # ip netns exec NAME COMMAND
        if word == "-c" and index + 1 < len(words) and words[index + 1] and words[0] in ("sh", "bash"):
            found.extend(shell_commands(words[index + 1]))
    return found


def python_commands(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
        if name in RUNNERS:
            argv = next((arg for arg in [*node.args, *(k.value for k in node.keywords if k.arg in ("args", "argv"))]
                         if isinstance(arg, (ast.List, ast.Tuple))), None)
            if argv is not None:
                found.update(_argv_commands(argv.elts))
        if name in PROGRAM_LOOKUPS and node.args and _text(node.args[0]):
            found.add(_text(node.args[0]))
        for keyword in node.keywords:
            if keyword.arg in SHELL_KEYWORDS and _text(keyword.value):
                found.update(shell_commands(_text(keyword.value)))
    # A name with a hole in it (f"{tool}-restore") is made at run time: its parts are found elsewhere.
    return {word for word in found if re.fullmatch(r"[A-Za-z][A-Za-z0-9._+-]*", word) and "HOLE" not in word}


_SHELL = Parser(Language(tree_sitter_bash.language()))
_LITERAL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9._+-]*")


# Commands that run the command in their arguments, and how many arguments come before it.
WRAPPERS = {"step": 1, "quietly": 0, "env": 0, "sudo": 0, "timeout": 1, "nice": 0, "setsid": 0, "nohup": 0}


def shell_parse(text: str) -> tuple[set[str], set[str]]:
    """(command names, functions defined) of shell text, parsed with tree-sitter-bash. A wrapper's
    command counts too (`step "what" go build` calls go); names made of variables don't."""
    source = text.encode()
    names: set[str] = set()
    functions: set[str] = set()

    def word(node) -> str:
        return source[node.start_byte:node.end_byte].decode().strip("'\"")

    def walk(node) -> None:
        if node.type == "command":
            name = node.child_by_field_name("name")
            if name is not None:
                names.add(word(name))
                arguments = [word(child) for child in node.children_by_field_name("argument")]
                command = word(name)
                while command in WRAPPERS:
                    arguments = arguments[WRAPPERS[command]:]
                    arguments = [a for a in arguments if not a.startswith("-") and "=" not in a]
                    if not arguments:
                        break
                    command, arguments = arguments[0], arguments[1:]
                    names.add(command)
        elif node.type == "function_definition":
            name = node.child_by_field_name("name")
            if name is not None:
                functions.add(word(name))
        for child in node.children:
            walk(child)
    walk(_SHELL.parse(source).root_node)
    return {name for name in names - SHELL_BUILTINS if _LITERAL_NAME.fullmatch(name)}, functions


def shell_commands(text: str) -> set[str]:
    names, functions = shell_parse(text)
    return names - functions


def is_shell_script(path: Path) -> bool:
    first = path.read_text(errors="replace").split("\n", 1)[0]
    return (first.startswith("#!") and re.search(r"\b(sh|bash|dash)\b", first) is not None) or \
        first.startswith("# shellcheck shell=")  # a file the scripts source


def calls_in_the_code() -> dict[str, set[str]]:
    """command -> the files that call it."""
    calls: dict[str, set[str]] = {}
    for top in PYTHON_SOURCES:
        for path in sorted((PROJECT_DIR / top).rglob("*.py")):
            where = str(path.relative_to(PROJECT_DIR))
            for command in python_commands(path.read_text()) - NOT_COMMANDS.get(where, set()):
                calls.setdefault(command, set()).add(where)
    scripts = [path for top in SHELL_SOURCES for path in sorted((PROJECT_DIR / top).rglob("*"))
               if path.is_file() and is_shell_script(path)]
    parsed = {path: shell_parse(path.read_text()) for path in scripts}
    functions = set().union(*(defined for _, defined in parsed.values()))  # also those of sourced files
    for path, (names, _) in parsed.items():
        for command in names - functions:
            calls.setdefault(command, set()).add(str(path.relative_to(PROJECT_DIR)))
    return calls


def setup_packages() -> set[str]:
    text = (PROJECT_DIR / "scripts" / "setup").read_text()
    match = re.search(r"^APT_PACKAGES=\((.*?)^\)", text, re.MULTILINE | re.DOTALL)
    assert match, "scripts/setup has no APT_PACKAGES=(...) list"
    return set(shlex.split(match.group(1), comments=True))


def _spellings(executable: str) -> list[str]:
    """The paths dpkg may know an executable by: its real path and, with merged /usr, both forms."""
    paths = []
    for path in (str(Path(executable).resolve()), executable):
        paths += [path, path[4:] if path.startswith("/usr/") else "/usr" + path]
    return list(dict.fromkeys(paths))


def owning_packages(executables: list[str]) -> dict[str, str]:
    """executable -> the Debian package that installed it (following symlinks and alternatives)."""
    spellings = {executable: _spellings(executable) for executable in executables}
    paths = sorted({path for paths in spellings.values() for path in paths})
    output = subprocess.run(["dpkg", "-S", *paths], capture_output=True, text=True).stdout if paths else ""
    owner = {}
    for line in output.splitlines():
        package, _, path = line.partition(": ")
        owner[path.strip()] = package.split(",")[0].split(":")[0].strip()
    return {executable: next((owner[p] for p in paths if p in owner), None) for executable, paths in spellings.items()}


def installed_packages() -> dict[str, tuple[bool, set[str]]]:
    """package -> (part of every Debian system: Essential or Priority required, what it depends on)."""
    output = subprocess.run(["dpkg-query", "-W", "-f",
                             "${db:Status-Abbrev}\t${Package}\t${Essential} ${Priority}\t${Depends}, ${Pre-Depends}\n"],
                            capture_output=True, text=True).stdout
    packages = {}
    for line in output.splitlines():
        status, name, flags, depends = (line.split("\t") + ["", "", ""])[:4]
        if not status.startswith("ii"):
            continue  # removed, or only its configuration left
        packages[name] = (flags.startswith("yes") or "required" in flags,
                          set(re.findall(r"(?:^|[,|]\s*)([a-z0-9][a-z0-9.+-]+)", depends)))
    return packages


def installed_with(packages: set[str], installed: dict[str, tuple[bool, set[str]]]) -> set[str]:
    """packages and everything they depend on, as installed here."""
    seen: set[str] = set()
    todo = list(packages)
    while todo:
        package = todo.pop()
        if package not in seen:
            seen.add(package)
            todo.extend(installed.get(package, (False, set()))[1])
    return seen


pytestmark = pytest.mark.skipif(shutil.which("dpkg") is None, reason="not a Debian system: no dpkg to ask")


def test_the_scan_finds_what_the_code_calls():
    """The finder itself: argv lists, `ip netns exec NS CMD`, sh -c text, scripts' command positions."""
    python = '''
import subprocess
subprocess.run(["nft", "list", "ruleset"])
topology.run("server", ["ip", "netns", "exec", name, "sshd", "-D"])
run_command(["sh", "-c", "hping3 -S x | tee log && conntrack -L"])
command.local.Command("x", create=f"{STEP} confirm; curl -s http://x", delete="true")
shutil.which("nmap")
sorted(["not", "a", "command"])
'''
    assert python_commands(python) == {"nft", "ip", "sshd", "sh", "hping3", "tee", "conntrack", "curl", "nmap"}
    shell = '''#!/bin/sh
apply_rules() { iptables-restore < "$1" || echo "iptables failed: run ipset" >&2; }
x=$(ss -ltn | awk '{print $4}')
if ! flock -n 9; then exit 1; fi
cat <<EOF
heredoc words dnf yum
EOF
apply_rules
'''
    assert shell_commands(shell) == {"iptables-restore", "ss", "awk", "flock", "cat"}
    assert shell_commands('step "building" quietly env GOFLAGS=x go build; timeout 5 sudo -n nft list') == \
        {"step", "quietly", "env", "go", "timeout", "sudo", "nft"}


def test_every_executable_the_code_calls_comes_from_a_package_setup_installs():
    installed = installed_packages()
    listed = installed_with(setup_packages(), installed)  # nginx may come as nginx-core, through `nginx`
    calls = calls_in_the_code()
    assert {"nft", "ip", "iptables-restore", "sshd", "nmap"} <= set(calls), "the scan misses known calls"
    problems = []
    wanted = {command: shutil.which(command, path=SYSTEM_PATH) for command in calls
              if command not in NOT_FROM_DEBIAN and command not in SERVER_SIDE_ONLY}
    owners = owning_packages([executable for executable in wanted.values() if executable])
    for command, executable in sorted(wanted.items()):
        places = ", ".join(sorted(calls[command])[:3])
        if executable is None:
            problems.append(f"{command} (called in {places}) is not installed on this machine: "
                            "add the Debian package that provides it to APT_PACKAGES in scripts/setup")
            continue
        package = owners[executable]
        if package is None:
            problems.append(f"{command} ({executable}, called in {places}) comes from no Debian package: "
                            "install it from one, or list it in NOT_FROM_DEBIAN with the reason")
        elif package not in listed and not installed.get(package, (False,))[0]:
            problems.append(f"{command} (called in {places}) comes from Debian package {package}, which "
                            "scripts/setup does not install: add it to APT_PACKAGES")
    assert not problems, "\n".join(problems)


def test_setup_installs_only_packages_that_exist_and_are_installed_here():
    """A typo in the list would break setup on a fresh machine; here setup ran, so all are installed."""
    installed = installed_packages()
    missing = sorted(package for package in setup_packages() if package not in installed)
    assert not missing, f"scripts/setup lists packages that are not installed here: {missing} (run scripts/setup)"
