"""How this project runs the Pulumi CLI (scripts/pulumi, `fw trial`): which CLI, which plugins,
and the lab passphrase, in one place. Run as `python -m hardened_lightsail.engine_env ARGS...`
(that is scripts/pulumi) it prints what it decided on stderr and execs the CLI with ARGS.

- Your own `pulumi` (installed the usual way) is used as it is: PULUMI_HOME, plugin downloads and
  update checks stay yours. Only the state backend has a project default, and that lives in
  Pulumi.yaml (`backend.url: file://.pulumi-state`), so a plain `pulumi` in this directory sees
  the same stacks; PULUMI_BACKEND_URL overrides it for both.
- Without one, the CLI scripts/install-pulumi built (.tools/bin) runs with PULUMI_HOME in
  .pulumi-state/home, no plugin downloads, and our command provider put into that plugin cache.
- HL_COMMAND_PROVIDER=/path/to/pulumi-resource-command puts that binary into the plugin cache
  instead (e.g. upstream's build, to run the suite against it); its PULUMI_HOME defaults to
  .pulumi-state/home for your CLI too, so your own plugin cache is never overwritten.
- The lab passphrase is used only for a stack named on the command line (`-s/--stack NAME`,
  `stack init|select NAME`) whose Pulumi.NAME.yaml says `target: lab` and whose secrets were made
  with it (or that has none yet); never when PULUMI_CONFIG_PASSPHRASE(_FILE) is set; always said.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import mmap
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
STATE_DIR = PROJECT_DIR / ".pulumi-state"
BUILT_BIN = PROJECT_DIR / ".tools" / "bin"
VENV_BIN = PROJECT_DIR / ".venv" / "bin"
LAB_PASSPHRASE = "hardened-lightsail-lab"  # protects only throwaway lab keys on this machine
COMMAND_PROVIDER_VERSION = "1.2.1"  # the pulumi-command pip package in requirements.txt
OUR_BUILD_MARKER = b"hardened-lightsail"  # a string our plugin builds contain and upstream's don't
PROVIDER_OVERRIDE = "HL_COMMAND_PROVIDER"


class EngineError(Exception):
    """The engine can't be run as asked (no CLI, a bad HL_COMMAND_PROVIDER); exit code 2."""


@dataclass
class Engine:
    cli: Path
    built: bool  # the CLI scripts/install-pulumi built, not the user's own
    env: dict[str, str]  # the complete environment for the CLI
    notes: list[str] = field(default_factory=list)  # what the user is told on stderr


def find_cli(environ: Mapping[str, str]) -> tuple[Path, bool]:
    """The user's own `pulumi` when installed, else ours (HL_USE_BUILT_PULUMI=1 prefers ours)."""
    built = BUILT_BIN / "pulumi"
    own = shutil.which("pulumi", path=environ.get("PATH"))
    if own and not environ.get("HL_USE_BUILT_PULUMI") and Path(own).resolve() != built.resolve():
        return Path(own), False
    if built.exists():
        return built, True
    raise EngineError("no Pulumi CLI found: install it the usual way (https://www.pulumi.com/docs/install/) "
                      "or build one here with scripts/install-pulumi (README, 'The engine')")


def engine(environ: Mapping[str, str] = os.environ) -> Engine:
    """The CLI and environment for a run, plugins installed where the CLI will look for them."""
    cli, built = find_cli(environ)
    env = dict(environ)
    notes: list[str] = []
    # The program's deployer-side tools run with the project's Python. .tools/bin is deliberately
    # not on PATH: the engine would take plugins from there and warn about each one.
    env["PATH"] = os.pathsep.join([str(VENV_BIN), environ.get("PATH", os.defpath)])
    STATE_DIR.mkdir(exist_ok=True)  # the default backend's directory must exist (Pulumi.yaml)
    provider = environ.get(PROVIDER_OVERRIDE)
    if built or provider:
        env.setdefault("PULUMI_HOME", str(STATE_DIR / "home"))
    if built:
        env["PULUMI_SKIP_UPDATE_CHECK"] = "true"  # no network to check with
        env["PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"] = "true"  # ours are installed below
    if provider:
        source = Path(provider)
        if not (source.is_file() and os.access(source, os.X_OK)):
            raise EngineError(f"{PROVIDER_OVERRIDE}={provider} is not an executable file")
        install_command_provider(cli, source.resolve(), Path(env["PULUMI_HOME"]), env)
    elif built and (BUILT_BIN / "pulumi-resource-command").exists():
        install_command_provider(cli, BUILT_BIN / "pulumi-resource-command", Path(env["PULUMI_HOME"]), env)
    agent = env.get("SSH_AUTH_SOCK")
    if agent and not _is_socket(agent):
        # pulumi-command dials SSH_AUTH_SOCK before every remote step and fails them all when the
        # socket is gone (an SSH session that set it has ended); the program never needs an agent.
        del env["SSH_AUTH_SOCK"]
        notes.append(f"SSH_AUTH_SOCK={agent} is not a live agent socket: left out of this run "
                     "(pulumi-command would fail every remote step on it)")
    return Engine(cli=cli, built=built, env=env, notes=notes)


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def plugin_dir(pulumi_home: Path) -> Path:
    return pulumi_home / "plugins" / f"resource-command-v{COMMAND_PROVIDER_VERSION}"


def install_command_provider(cli: Path, binary: Path, pulumi_home: Path, env: Mapping[str, str]) -> None:
    """Puts binary into the plugin cache slot of command 1.2.1 (what the engine loads for the
    pulumi-command SDK), unless that very build is there already."""
    info = binary.stat()
    stamp_text = f"{binary} {info.st_size} {int(info.st_mtime)}\n"
    slot = plugin_dir(pulumi_home)
    stamp = slot.parent / f"{slot.name}.hl-source"
    if stamp.exists() and stamp.read_text() == stamp_text and (slot / "pulumi-resource-command").exists():
        return
    slot.parent.mkdir(parents=True, exist_ok=True)
    with open(slot.parent / ".hl-install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once install once, never half
        if stamp.exists() and stamp.read_text() == stamp_text and (slot / "pulumi-resource-command").exists():
            return
        quiet: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE, "text": True, "env": dict(env)}
        subprocess.run([str(cli), "plugin", "rm", "resource", "command", COMMAND_PROVIDER_VERSION, "--yes"],
                       check=False, **quiet)
        done = subprocess.run([str(cli), "plugin", "install", "resource", "command",
                               f"v{COMMAND_PROVIDER_VERSION}", "--file", str(binary)], check=False, **quiet)
        if done.returncode != 0:
            raise EngineError(f"installing {binary} as the command provider failed: {done.stderr.strip()}")
        stamp.write_text(stamp_text)


# --- which binaries run (scripts/pulumi about, and a line at up/preview/refresh/destroy) --------

def is_our_build(binary: Path) -> bool:
    try:
        with open(binary, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return data.find(OUR_BUILD_MARKER) >= 0
    except (OSError, ValueError):
        return False


def _kind(binary: Path) -> str:
    return "hardened-lightsail build" if is_our_build(binary) else "not ours: upstream or another build"


def command_provider_in_use(eng: Engine) -> str:
    """Where the engine will load pulumi-resource-command from, in its own order: $PATH, then the
    plugin cache of PULUMI_HOME, else a download."""
    ambient = shutil.which("pulumi-resource-command", path=eng.env.get("PATH"))
    if ambient and not eng.env.get("PULUMI_IGNORE_AMBIENT_PLUGINS"):
        return f"{ambient} (from $PATH; {_kind(Path(ambient))})"
    home = Path(eng.env.get("PULUMI_HOME") or Path.home() / ".pulumi")
    cached = plugin_dir(home) / "pulumi-resource-command"
    if cached.exists():
        source = cached.parent.parent / f"{cached.parent.name}.hl-source"
        origin = f", put there from {source.read_text().split()[0]}" if source.exists() else ""
        return f"{cached} ({_kind(cached)}{origin})"
    if eng.env.get("PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION"):
        return f"none in {home / 'plugins'} and downloads are off: run scripts/install-pulumi"
    return f"not in {home / 'plugins'} yet: your CLI downloads upstream's v{COMMAND_PROVIDER_VERSION}"


def language_host_in_use(eng: Engine) -> str:
    bundled = eng.cli.resolve().parent / "pulumi-language-python"
    if bundled.exists():
        return f"{bundled} ({'hardened-lightsail build' if eng.built else 'bundled with your CLI'})"
    found = shutil.which("pulumi-language-python", path=eng.env.get("PATH"))
    return f"{found} (from $PATH)" if found else "not found next to the CLI or on $PATH"


def describe(eng: Engine) -> list[str]:
    cli = f"{eng.cli} ({'built by scripts/install-pulumi' if eng.built else 'your own'})"
    return [f"CLI {cli}", f"language host {language_host_in_use(eng)}",
            f"command provider {command_provider_in_use(eng)}"]


# --- the lab passphrase -------------------------------------------------------------------------

# Flags of the commands below that take a value: their value is never a stack name.
VALUE_FLAGS = {"-s", "--stack", "-C", "--cwd", "--copy-config-from", "--secrets-provider", "--teams",
               "--color", "--tracing", "--profiling", "--memprofilerate", "-v", "--verbose", "--config-file"}


def _positional(args: list[str]) -> tuple[list[str], str | None]:
    """The bare words of a command line (flag values skipped) and the `-s/--stack` value."""
    positional: list[str] = []
    stack = None
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in ("-s", "--stack") and index + 1 < len(args):
            stack = args[index + 1]
            index += 2
            continue
        if arg.startswith("--stack="):
            stack = arg.split("=", 1)[1]
        elif arg in VALUE_FLAGS:
            index += 1  # skip its value
        elif not arg.startswith("-"):
            positional.append(arg)
        index += 1
    return positional, stack


def named_stack(args: list[str]) -> str | None:
    """The stack a command names: `-s/--stack NAME` anywhere, or the NAME of `stack init|select
    NAME`. Nothing else (not `--copy-config-from lab`, not the currently selected stack)."""
    positional, stack = _positional(args)
    if stack:
        return stack
    if positional[:2] in (["stack", "init"], ["stack", "select"]) and len(positional) > 2:
        return positional[2]
    return None


def stack_file(stack: str) -> Path:
    return PROJECT_DIR / f"Pulumi.{stack}.yaml"


def stack_targets_lab(stack: str) -> bool:
    path = stack_file(stack)
    if "/" in stack or not path.is_file():
        return False
    text = path.read_text()
    try:
        import yaml
        config = (yaml.safe_load(text) or {}).get("config") or {}
        return config.get("hardened-lightsail:target") == "lab"
    except ImportError:  # before setup made .venv: the plain line
        return re.search(r'^\s*hardened-lightsail:target:\s*"?lab"?\s*$', text, re.MULTILINE) is not None
    except Exception:  # a broken stack file: the program will say what is wrong with it
        return False


def encryption_salt(stack: str) -> str | None:
    match = re.search(r"^encryptionsalt:\s*(\S+)\s*$", stack_file(stack).read_text(), re.MULTILINE)
    return match.group(1) if match else None


def made_with_passphrase(salt: str, passphrase: str) -> bool:
    """Whether the stack's secrets were made with passphrase. Pulumi's encryptionsalt is
    `v1:<salt>:v1:<nonce>:<AES-256-GCM of "pulumi">` with a PBKDF2-SHA256 key (1,000,000 rounds);
    GCM's ciphertext is CTR mode from counter 2, so openssl decrypts the 6 bytes without a library."""
    try:
        _, salt_b64, _, nonce_b64, sealed_b64 = salt.split(":")
        key = hashlib.pbkdf2_hmac("sha256", passphrase.encode(), base64.b64decode(salt_b64), 1_000_000, 32)
        nonce, sealed = base64.b64decode(nonce_b64), base64.b64decode(sealed_b64)
        if len(nonce) != 12:
            return False
        plain = subprocess.run(["openssl", "enc", "-d", "-aes-256-ctr", "-K", key.hex(),
                                "-iv", (nonce + b"\x00\x00\x00\x02").hex()],
                               input=sealed[:6], capture_output=True, check=True).stdout
        return plain == b"pulumi"
    except (ValueError, OSError, subprocess.CalledProcessError):
        return False


LAB_SALTS = STATE_DIR / "lab-passphrase-salts"  # salts known to be the lab passphrase's (0.5 s each)


def made_with_lab_passphrase(salt: str) -> bool:
    known = LAB_SALTS.read_text().split() if LAB_SALTS.exists() else []
    if salt in known:
        return True
    if not made_with_passphrase(salt, LAB_PASSPHRASE):
        return False
    with open(LAB_SALTS, "a") as cache:
        cache.write(salt + "\n")
    return True


def lab_passphrase(args: list[str], environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """(passphrase to set or None, the line that tells the user what was decided or None)."""
    if environ.get("PULUMI_CONFIG_PASSPHRASE") is not None or environ.get("PULUMI_CONFIG_PASSPHRASE_FILE"):
        return None, None
    stack = named_stack(args)
    if not stack or not stack_targets_lab(stack):
        return None, None
    salt = encryption_salt(stack)
    if salt is None or made_with_lab_passphrase(salt):
        return LAB_PASSPHRASE, (f"stack {stack} has target: lab, so its secrets use the lab passphrase "
                                f"'{LAB_PASSPHRASE}' (throwaway lab keys; set PULUMI_CONFIG_PASSPHRASE to "
                                "use your own)")
    return None, (f"stack {stack} has target: lab but its secrets were made with a passphrase of your own: "
                  "give it as usual (PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE)")


# --- scripts/pulumi ------------------------------------------------------------------------------

ANNOUNCED = {"up", "update", "preview", "refresh", "destroy", "about"}


def main(args: list[str]) -> int:
    try:
        eng = engine()
    except EngineError as error:
        print(f"scripts/pulumi: {error}", file=sys.stderr)
        return 2
    passphrase, said = lab_passphrase(args, eng.env)
    if passphrase:
        eng.env["PULUMI_CONFIG_PASSPHRASE"] = passphrase
    for note in eng.notes + ([said] if said else []):
        print(f"scripts/pulumi: {note}", file=sys.stderr)
    positional, _ = _positional(args)
    if positional[:1] and positional[0] in ANNOUNCED:
        print("scripts/pulumi: " + "; ".join(describe(eng)), file=sys.stderr)
    sys.stderr.flush()
    os.chdir(PROJECT_DIR)  # the project's Pulumi.yaml, and its relative backend directory
    os.execve(str(eng.cli), [str(eng.cli), *args], eng.env)  # never returns


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
