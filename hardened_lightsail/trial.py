"""`scripts/fw trial`: a disposable copy of a stack (same config, own name) is stood up, verified,
printed and destroyed, whatever happens on the way; `--keep` leaves it up until `--reap` finds it
expired (`--reap --now`, or `--reap NAME`, destroys kept trials before their expiry).

Exit codes: 0 verified; 1 the trial failed or its verification did (after the cleanup); 2 bad
input, nothing created; 130 interrupted by Ctrl-C (after the cleanup; 143 for SIGTERM)."""
from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, MutableMapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any, TextIO

from pulumi.automation import CommandError, CommandResult, LocalWorkspace, PulumiCommand, Stack
from pulumi.automation._cmd import OnOutput
from pulumi.automation.errors import create_command_error

from . import engine_env
from .analysis import analyse, errors
from .config import NAMESPACE, ConfigError, load_stack_file, load_yaml, settings_from_values
from .effective_settings import effective_settings
from .exposure import exposure_table, format_table
from .policy import StackSettings
from .release import render_release

if TYPE_CHECKING:
    from lab.identity import LabIdentity  # the lab loads only when a lab trial runs

PROJECT_DIR = Path(__file__).resolve().parent.parent
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
TRIAL_TAG, EXPIRES_TAG = f"{NAMESPACE}:trial", f"{NAMESPACE}:expires"
BASE_TAG, TARGET_TAG = f"{NAMESPACE}:trialBase", f"{NAMESPACE}:trialTarget"
PREFIX = "trial-"
NAME_LENGTH = 16  # short enough to read in `stack ls`, in lab names and their namespaces
FAIL_VERIFY_HOOK = "HL_TRIAL_FAIL_VERIFY"  # tests only: verification fails after a real `up`


class TrialInputError(Exception):
    """Something the user must fix before a trial can start; nothing has been created."""


# --- input ---------------------------------------------------------------------------------------

def parse_ttl(text: str) -> timedelta:
    """'2h', '90m', '1d12h', '30s' -> timedelta (how long a kept trial may live)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+)([smhd])", text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise TrialInputError(f"--ttl {text!r} is not a duration: use a number with s, m, h or d (2h, 90m, 1d)")
    seconds = sum(int(number) * units[unit] for number, unit in parts)
    if seconds == 0:
        raise TrialInputError(f"--ttl {text!r} is zero: a trial needs some time to live")
    return timedelta(seconds=seconds)


def trial_name(base: str, token: str | None = None) -> str:
    """`trial-<base>-<6 hex>`, the base shortened so the whole stays a valid lab name."""
    token = token or secrets.token_hex(3)
    room = NAME_LENGTH - len(PREFIX) - len(token) - 1
    short = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")[:room].strip("-")
    return f"{PREFIX}{short}-{token}" if short else f"{PREFIX}{token}"


def read_base(base: str) -> tuple[dict[str, Any], StackSettings]:
    """(the `config:` mapping of Pulumi.<base>.yaml, its validated settings); bad input raises."""
    path = PROJECT_DIR / f"Pulumi.{base}.yaml"
    if "/" in base or not path.is_file():
        known = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in PROJECT_DIR.glob("Pulumi.*.yaml"))
        raise TrialInputError(f"unknown base stack {base!r}: no {path.name} in {PROJECT_DIR} "
                              f"(stacks: {', '.join(known) or 'none'})")
    settings = load_stack_file(path)  # the same checks and messages as `fw check` (ConfigError)
    return load_yaml(path.read_text())["config"], settings


def lab_twin(config: dict[str, Any]) -> dict[str, Any]:
    """A stack's config turned into its lab twin: the same firewall policy against the lab, so a
    Lightsail policy can be tried for free. The lab's own admin CIDRs join the policy's (its
    deployer must keep SSH) and SSH stays on 22 (the lab's sshd); everything else is unchanged."""
    from lab import ADMIN_CIDRS
    firewall = dict(config.get(f"{NAMESPACE}:firewall") or {})
    admins = list(firewall.get("adminCidrs") or [])
    firewall["adminCidrs"] = admins + [cidr for cidr in ADMIN_CIDRS if cidr not in admins]
    firewall["sshPort"] = 22
    twin = {key: value for key, value in config.items()
            if key.startswith(f"{NAMESPACE}:") and key not in (f"{NAMESPACE}:server", f"{NAMESPACE}:lab")}
    return {**twin, f"{NAMESPACE}:target": "lab", f"{NAMESPACE}:firewall": firewall}


def _has_secret(value: Any) -> bool:
    if isinstance(value, dict):
        return set(value) == {"secure"} or any(_has_secret(v) for v in value.values())
    return isinstance(value, list) and any(_has_secret(v) for v in value)


def config_entries(config: dict[str, Any], decrypted: Callable[[str], str]) -> dict[str, Any]:
    """The base's config in `pulumi config set-all --json` form. Secret values are encrypted
    with the base stack's key, so those come decrypted from the base stack and stay secret."""
    entries = {}
    for key, value in config.items():
        if _has_secret(value):
            entries[key] = {"value": decrypted(key), "secret": True}
        elif isinstance(value, (dict, list)):
            entries[key] = {"value": json.dumps(value), "objectValue": value, "secret": False}
        else:
            entries[key] = {"value": value if isinstance(value, str) else json.dumps(value), "secret": False}
    return entries


def format_remaining(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    hours, minutes = divmod(seconds // 60, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


# --- the engine: our environment, one process group per CLI run, Ctrl-C passed on once ---------------

def engine_environment(lab: bool) -> dict[str, str]:
    """What scripts/pulumi sets up (hardened_lightsail/engine_env.py), for the Automation API's
    CLI runs; a lab trial is a new stack, so it gets the lab passphrase unless one is set."""
    env = engine_env.engine().env
    if lab:
        env["PULUMI_CONFIG_PASSPHRASE"] = os.environ.get("PULUMI_CONFIG_PASSPHRASE", engine_env.LAB_PASSPHRASE)
    return env


def pulumi_root() -> str | None:
    """The directory whose bin/pulumi scripts/pulumi would run."""
    try:
        return str(engine_env.find_cli(os.environ)[0].parent.parent)
    except engine_env.EngineError as error:
        raise TrialInputError(str(error)) from None


class TrialCommand(PulumiCommand):
    """The SDK's CLI runner (its `run`, rewritten: the SDK offers no hook for this), except that
    each run gets a process group of its own. A Ctrl-C at the terminal then reaches only us, and
    we pass exactly one SIGINT on to a running `pulumi up`: the engine's graceful cancel. (The
    terminal would also hit the plugins, and a second SIGINT makes the engine quit at once,
    leaving operations in flight unrecorded.)"""

    def __init__(self, root: str | None):
        super().__init__(root=root)
        self.running: subprocess.Popen[str] | None = None
        self.cancel_requested = False

    def cancel_up(self) -> None:
        self.cancel_requested = True
        process = self.running
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)

    def run(self, args: list[str], cwd: str, additional_env: Mapping[str, str], on_output: OnOutput | None = None,
            on_error: OnOutput | None = None) -> CommandResult:
        if "--non-interactive" not in args:
            args.insert(0, "--non-interactive")
        env = {**os.environ, **additional_env, "PULUMI_AUTOMATION_API": "true"}
        chunks: dict[str, list[str]] = {"stdout": [], "stderr": []}

        def consume(stream: IO[str], callback: OnOutput | None, lines: list[str]) -> None:
            for line in iter(stream.readline, ""):
                lines.append(line.rstrip())
                if callback:
                    callback(line.rstrip())
            stream.close()

        with subprocess.Popen([self.command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd,
                              env=env, encoding="utf-8", errors="replace", process_group=0) as process:
            readers = [threading.Thread(target=consume, args=(process.stdout, on_output, chunks["stdout"])),
                       threading.Thread(target=consume, args=(process.stderr, on_error, chunks["stderr"]))]
            for reader in readers:
                reader.start()
            if args[1:2] == ["up"]:
                self.running = process
                if self.cancel_requested:  # the signal came while the process was starting
                    self.cancel_up()
            try:
                for reader in readers:
                    reader.join()
                process.wait()
            finally:
                self.running = None
        result = CommandResult(stdout="\n".join(chunks["stdout"]), stderr="\n".join(chunks["stderr"]),
                               code=process.returncode)
        if result.code != 0:
            error = create_command_error(result)
            error.result = result  # type: ignore[attr-defined]  # engine_error reads it back; the SDK's error has no field for it
            raise error
        return result


class TrialWorkspace(LocalWorkspace):
    """Every operation names its stack (--stack), so the trial never changes which stack the
    developer has selected."""

    pulumi_command: TrialCommand  # open_workspace gives it one

    def create_stack(self, stack_name: str) -> None:
        self._run_pulumi_cmd_sync(["stack", "init", stack_name, "--no-select"])

    def select_stack(self, stack_name: str) -> None:
        pass


def open_workspace(lab: bool) -> TrialWorkspace:
    env = engine_environment(lab)
    return TrialWorkspace(work_dir=str(PROJECT_DIR), pulumi_home=env.get("PULUMI_HOME"), env_vars=env,
                          pulumi_command=TrialCommand(pulumi_root()))


def engine_error(error: Exception) -> str:
    """The engine's own error lines, not the whole transcript the SDK puts in str(error). A
    failed command's line ends in ':' and its first output line says why: keep that too."""
    result = getattr(error, "result", None)
    if result is None:
        return str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    # A step's progress lines ("[  1.2 s] apply: ...") come before its reason: skip them.
    lines = [line for line in f"{result.stderr}\n{result.stdout}".splitlines()
             if not re.match(r"\s*\[\s*\d+\.\d s\] ", line)]
    found = []
    for index, line in enumerate(lines):
        if re.match(r"\s*error:", line):
            reason = lines[index + 1].strip() if line.rstrip().endswith(":") and index + 1 < len(lines) else ""
            found.append(f"{line.strip()} {reason}".strip())
    # The engine's own summary lines say only that something failed: keep the specific ones.
    generic = ("error: update failed", "error: Resource monitor has terminated, shutting down")
    specific = [line for line in dict.fromkeys(found) if line not in generic]
    return "; ".join(specific or found) or f"pulumi exited with code {result.code}"


class Interrupts:
    """SIGINT/SIGTERM during a trial: remembered, passed on once to a running `up`, never allowed
    to cut the cleanup short (a half-destroyed trial is worse than a slow one)."""

    def __init__(self, command: TrialCommand):
        self.command, self.cleaning = command, False
        self.received: int | None = None  # the first signal's number

    def __enter__(self) -> Interrupts:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.received is None
        self.received = self.received or signum
        # os.write, not print: the main thread may be inside a print when the signal lands.
        if self.cleaning:
            os.write(2, b"fw trial: still cleaning up; the trial stack is destroyed before we exit\n")
        elif first:
            os.write(2, b"fw trial: interrupted: cancelling the update (the engine winds down what is in flight), "
                        b"then destroying\n")
            self.command.cancel_up()

    @property
    def exit_code(self) -> int:
        return 128 + (self.received or 0)


# --- the lab's share: a free slot, and nothing of the lab left behind ------------------------------

def trial_lab(name: str) -> LabIdentity:
    """The lab a trial stack stands up (components/lab_server.py names it the same way)."""
    from lab.identity import stack_lab
    return stack_lab(PROJECT_DIR, name)


def check_lab_slot_free(name: str) -> None:
    """Refuse before anything is made when `up` could not give the trial's lab a slot."""
    problem = trial_lab(name).slot_problem()
    if problem is not None:
        raise TrialInputError(f"no lab slot for the trial: {problem}")


def sweep_lab(name: str) -> str | None:
    """Take down whatever is left of trial `name`'s lab (normally the destroy did): None, or the problem."""
    from lab.errors import LabError
    from lab.lifecycle import lab_down
    identity = trial_lab(name)
    try:
        lab_down(identity.name, identity.state_dir)
    except (LabError, OSError) as error:
        return f"lab {identity.name} could not be taken down: {error}"
    return None


# --- one trial --------------------------------------------------------------------------------------

def verification_problems(outputs: dict[str, Any]) -> list[str]:
    """Every server's verifiedExposure must carry its `verified:` line and no MISMATCH."""
    servers = outputs.get("servers") or [{"name": "server", "verifiedExposure": outputs.get("verifiedExposure")}]
    problems = []
    for server in servers:
        text = server.get("verifiedExposure") or ""
        if "MISMATCH" in text:
            problems.append(f"{server['name']}: the measured exposure differs from the policy (MISMATCH above)")
        elif not any(line.startswith("verified:") for line in text.splitlines()):
            problems.append(f"{server['name']}: verifiedExposure has no `verified:` line")
    if os.environ.get(FAIL_VERIFY_HOOK) == "1":
        problems.append(f"verification forced to fail by {FAIL_VERIFY_HOOK}=1 (a test hook)")
    return problems


def print_result(name: str, outputs: dict[str, Any], asked_for: str) -> None:
    print(f"\n== trial {name}: the exposure the policy asks for ==\n{asked_for}")
    for server in outputs.get("servers") or []:
        print(f"\n== {server['name']} ({server.get('publicIp')}): measured from outside ==\n"
              f"{server.get('verifiedExposure') or '(nothing measured)'}")
    print(flush=True)


# The lab's `up` command prints its generated SSH key, and the engine streams command output:
# keep keys out of terminals and CI logs even when they are throwaway lab keys.
PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----(\\n)?")


def _echo(stream: TextIO) -> OnOutput:
    return lambda line: print(PRIVATE_KEY.sub("[private key not shown]", line), file=stream, flush=True)


def destroy_trial(workspace: TrialWorkspace, name: str, lab: bool) -> list[str]:
    """Destroy and remove trial `name` (and, for the lab, sweep its namespaces): the problems left."""
    problems = []
    stack = Stack.select(name, workspace)
    try:
        stack.destroy(on_output=_echo(sys.stdout), on_error=_echo(sys.stderr), color="never")
        workspace.remove_stack(name)
    except CommandError as error:
        problems.append(f"destroy failed: {engine_error(error)}")
    if lab:
        problem = sweep_lab(name)
        problems += [problem] if problem else []
    if not problems:
        (PROJECT_DIR / f"Pulumi.{name}.yaml").unlink(missing_ok=True)
    return problems


def _preflight(base: str, in_lab: bool = False) -> tuple[dict[str, Any], StackSettings, TrialWorkspace]:
    """Everything that can be refused before a trial stack exists: (config, settings, workspace)."""
    config, settings = read_base(base)
    if in_lab:
        config = lab_twin(config)
        settings = settings_from_values({key[len(NAMESPACE) + 1:]: value for key, value in config.items()})
    settings = effective_settings(settings)  # what the trial's `up` will check and render
    release = render_release(settings.firewall)
    findings = analyse(settings.firewall, release)  # `fw check`: a refused policy never goes up
    for finding in findings:
        print(finding, file=sys.stderr)
    if errors(findings):
        raise TrialInputError(f"stack {base}: the policy has {len(errors(findings))} error(s), listed above")
    lab = settings.target == "lab"
    if lab and os.geteuid() != 0:
        raise TrialInputError("a lab trial makes network namespaces: run it as root (sudo scripts/fw trial ...)")
    workspace = open_workspace(lab)
    passphrase = os.environ.get("PULUMI_CONFIG_PASSPHRASE") or os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE")
    if not lab and not passphrase and workspace.env_vars["PULUMI_BACKEND_URL"].startswith("file://"):
        raise TrialInputError("a Lightsail trial on a file backend needs PULUMI_CONFIG_PASSPHRASE(_FILE), "
                              "as `scripts/pulumi up` does")
    return config, settings, workspace


def _trial_config(base: str, config: dict[str, Any], workspace: TrialWorkspace) -> dict[str, Any]:
    """The base's config for `config set-all --json`; secrets are decrypted by the base stack."""
    decrypted = {}
    if any(_has_secret(value) for value in config.values()):
        try:
            decrypted = {key: item.value for key, item in workspace.get_all_config(base).items()}
        except CommandError as error:
            raise TrialInputError(f"stack {base} has secret config, which the trial can only copy from the "
                                  f"stack itself: {engine_error(error)}") from error
    return config_entries(config, lambda key: decrypted[key])


def _configure(stack: Stack, tags: dict[str, Any], entries: dict[str, Any]) -> None:
    # Tagged first: a trial that dies before its cleanup is still found by --reap.
    for key, value in tags.items():
        stack.set_tag(key, value)
    # The base's lab settings (its lab.slot) belong to the base's lab: the trial's gets a free slot at `up`.
    stack.set_all_config_json(json.dumps({key: value for key, value in entries.items() if key != f"{NAMESPACE}:lab"}))


def _up_and_verify(stack: Stack, name: str, settings: StackSettings) -> tuple[list[str], dict[str, Any]]:
    """(problems, outputs): no problems means verified."""
    result = stack.up(on_output=_echo(sys.stdout), on_error=_echo(sys.stderr), color="never")
    outputs = {key: item.value for key, item in result.outputs.items()}
    release = render_release(settings.firewall)  # what the trial's `up` shipped (its releaseHash)
    print_result(name, outputs, format_table(exposure_table(settings.firewall, release)))
    return verification_problems(outputs), outputs


def run_trial(base: str, ttl: timedelta, keep: bool, in_lab: bool = False) -> int:
    config, settings, workspace = _preflight(base, in_lab)
    lab = settings.target == "lab"
    entries = _trial_config(base, config, workspace)
    taken = {summary.name for summary in workspace.list_stacks()}
    name = next(n for n in iter(lambda: trial_name(base), None) if n not in taken)
    if lab:
        check_lab_slot_free(name)
    expires = f"{(datetime.now(UTC) + ttl):%Y-%m-%dT%H:%M:%SZ}"
    tags = {TRIAL_TAG: "true", EXPIRES_TAG: expires, BASE_TAG: base, TARGET_TAG: settings.target}
    print(f"trial {name}: a copy of stack {base} ({settings.target}), expires {expires}", flush=True)
    outputs: dict[str, Any] = {}
    problems, created, cleanup = ["not run"], False, []
    with Interrupts(workspace.pulumi_command) as interrupts:
        try:
            stack = Stack.create(name, workspace)
            created = True  # from here on the cleanup has work: the stack, its lab slot, its lab
            _configure(stack, tags, entries)
            if not interrupts.received:
                problems, outputs = _up_and_verify(stack, name, settings)
        except (CommandError, TrialInputError) as error:
            problems = [engine_error(error) if isinstance(error, CommandError) else str(error)]
        finally:
            interrupts.cleaning = True
            kept = keep and not interrupts.received
            if created and not kept:
                cleanup = destroy_trial(workspace, name, lab)
        if interrupts.received:
            print(f"trial {name}: interrupted; " + ("; ".join(cleanup) or "destroyed and removed"), file=sys.stderr)
            return interrupts.exit_code
    if kept:
        where = f"left up until {expires} (`scripts/fw trial --reap` then destroys it)"
    elif cleanup:
        where = "NOT cleaned up: " + "; ".join(cleanup) + " (`scripts/fw trial --reap` retries once it expires)"
    else:
        where = "destroyed and removed"
    verdict = "FAILED: " + "; ".join(problems) if problems else "verified" + _verified_lines(outputs)
    print(f"trial {name} of {base}: {verdict}; {where}", file=sys.stderr if problems else sys.stdout)
    return EXIT_FAILED if problems or cleanup else EXIT_OK


def _verified_lines(outputs: dict[str, Any]) -> str:
    servers = outputs.get("servers") or [{"verifiedExposure": outputs.get("verifiedExposure")}]
    lines = [line for s in servers for line in (s.get("verifiedExposure") or "").splitlines()
             if line.startswith("verified:")]
    return f" ({'; '.join(lines)})" if lines else ""


# --- reaping ------------------------------------------------------------------------------------------

def _trials(workspace: TrialWorkspace) -> dict[str, MutableMapping[str, str]]:
    """Every trial stack in the backend: {name: its tags}."""
    trials = {}
    for summary in workspace.list_stacks():
        if summary.name.startswith(PREFIX):
            tags = workspace.list_tags(summary.name)
            if tags.get(TRIAL_TAG) == "true":
                trials[summary.name] = tags
    return trials


def reap(now: datetime | None = None, name: str | None = None, everything: bool = False) -> int:
    """Destroy every trial stack whose expiry has passed (`everything`: every trial, expired or
    not; `name`: that trial only, whatever its expiry); list the live ones with their time left."""
    now = now or datetime.now(UTC)
    trials = _trials(open_workspace(lab=False))
    if name is not None:
        if name not in trials:
            raise TrialInputError(f"no trial {name!r} in this backend (trials: {', '.join(sorted(trials)) or 'none'})")
        trials = {name: trials[name]}
    failed, live = 0, 0
    for trial, tags in sorted(trials.items()):
        try:
            expires = datetime.strptime(tags.get(EXPIRES_TAG, ""), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        except ValueError:
            expires = None  # a trial that died between its creation and its tags: reap it
        early = expires is not None and expires > now
        if early and expires is not None and not (everything or name):
            live += 1
            print(f"{trial} (copy of {tags.get(BASE_TAG, '?')}, {tags.get(TARGET_TAG, '?')}): "
                  f"live, expires in {format_remaining(expires - now)}")
            continue
        lab = tags.get(TARGET_TAG) == "lab"
        why = f"destroying now, {format_remaining(expires - now)} before its expiry" if early and expires else "expired, destroying"
        print(f"{trial}: {why}", flush=True)
        problems = destroy_trial(open_workspace(lab), trial, lab)
        failed += bool(problems)
        print(f"{trial}: " + ("; ".join(problems) if problems else "reaped (destroyed and removed)"),
              file=sys.stderr if problems else sys.stdout)
    print(f"reap: {len(trials) - live - failed} reaped, {live} live, {failed} failed")
    return EXIT_FAILED if failed else EXIT_OK


def cmd_trial(args: argparse.Namespace) -> int:
    try:
        if args.now and args.reap is None:
            raise TrialInputError("--now goes with --reap: `fw trial --reap --now` destroys every kept trial")
        if args.reap is not None:
            if args.keep:
                raise TrialInputError("--reap and --keep don't go together: --reap only destroys trials")
            return reap(name=args.reap or None, everything=args.now)
        return run_trial(args.stack, parse_ttl(args.ttl), args.keep, getattr(args, "in_lab", False))
    except TrialInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # before a trial stack exists: nothing to clean up
        print("fw trial: interrupted before anything was created", file=sys.stderr)
        return 128 + signal.SIGINT
    except ConfigError as error:
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
