"""`scripts/fw trial`: a disposable copy of a lab stack goes up, is verified and is destroyed for
real (the Pulumi engine, a private file backend), also when verification fails or Ctrl-C comes;
`--keep` leaves it up until `--reap` finds it expired; bad input is one line and exit 2."""
import json
import os
import re
import signal
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from hardened_lightsail import trial
from lab.slots import registered_labs
from lab.topology import NAME_PATTERN

from engine import PROJECT_DIR, engine_missing_reason, pulumi

FW = str(PROJECT_DIR / "scripts" / "fw")
real_trial = [pytest.mark.engine, pytest.mark.netfilter,
              pytest.mark.skipif(engine_missing_reason() is not None, reason=engine_missing_reason() or ""),
              pytest.mark.skipif(os.geteuid() != 0, reason="a lab trial makes network namespaces: needs root")]
BASE_FIREWALL = {"adminCidrs": ["192.0.2.0/24", "2001:db8:a::/48"], "confirmTimeoutSeconds": 10,
                 "services": [{"name": "http", "protocol": "tcp", "ports": "80"},
                              {"name": "https", "protocol": "tcp", "ports": "443"}]}


def _write_base(name: str, firewall: dict) -> str:
    (PROJECT_DIR / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(
        {"config": {"hardened-lightsail:target": "lab", "hardened-lightsail:firewall": firewall}}))
    return name


@pytest.fixture
def base_stack():
    """A lab base stack of the project (Pulumi.<name>.yaml), removed afterwards."""
    name = _write_base(f"tbase{os.getpid()}", BASE_FIREWALL)
    yield name
    (PROJECT_DIR / f"Pulumi.{name}.yaml").unlink(missing_ok=True)


@pytest.fixture
def locked_out_base():
    """A lab base whose policy cuts the deployer off, forced through: its `up` really fails."""
    name = _write_base(f"tlock{os.getpid()}", dict(BASE_FIREWALL, adminCidrs=["198.51.100.0/24"], allowLockout=True))
    yield name
    (PROJECT_DIR / f"Pulumi.{name}.yaml").unlink(missing_ok=True)


@pytest.fixture
def backend(tmp_path):
    """A private backend and PULUMI_HOME: nothing touches the developer's .pulumi-state."""
    directory = tmp_path / "backend"
    directory.mkdir()
    env = {**os.environ, "PULUMI_BACKEND_URL": f"file://{directory}", "PULUMI_HOME": str(directory / "home"),
           "HL_USE_BUILT_PULUMI": "1"}
    env.pop(trial.FAIL_VERIFY_HOOK, None)
    return directory, env


def fw_trial(env, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([FW, "trial", *args], capture_output=True, text=True, env=env, timeout=timeout)


def trial_names(text: str) -> set[str]:
    return set(re.findall(r"\btrial (trial-[a-z0-9-]+)", text))


def assert_nothing_left(directory, names: set[str]) -> None:
    """No trial stack in the backend, no namespace, slot, lab dir or stack file of these trials."""
    stacks = json.loads(pulumi(["stack", "ls", "--json"], directory).stdout)
    assert [s["name"] for s in stacks if s["name"].startswith("trial-")] == []
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for name in names:
        assert f"hl-{name}-" not in namespaces
        assert name not in {entry["name"] for entry in registered_labs().values()}
        assert not (PROJECT_DIR / ".lab" / name).exists()
    assert [p.name for p in PROJECT_DIR.glob("Pulumi.trial-*.yaml") if p.name[7:-5] in names] == []


# --- unit: names, durations, config -----------------------------------------------------------

class FakeTrials:
    """The backend's trial stacks for reap(), without the engine: destroy only records the name."""

    def __init__(self, monkeypatch, expiries: dict[str, str]):
        self.destroyed: list[str] = []
        trials = {name: {trial.TRIAL_TAG: "true", trial.EXPIRES_TAG: expires, trial.BASE_TAG: "lab",
                         trial.TARGET_TAG: "lab"} for name, expires in expiries.items()}
        monkeypatch.setattr(trial, "open_workspace", lambda lab: None)
        monkeypatch.setattr(trial, "_trials", lambda workspace: dict(trials))
        monkeypatch.setattr(trial, "destroy_trial", lambda workspace, name, lab: self.destroyed.append(name) or [])


NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
EXPIRIES = {"trial-lab-aaaaaa": "2026-01-01T11:00:00Z", "trial-lab-bbbbbb": "2026-01-01T14:00:00Z",
            "trial-dev-cccccc": "2026-01-01T13:00:00Z"}


def test_reap_destroys_expired_trials_and_lists_the_live_ones(monkeypatch, capsys):
    fake = FakeTrials(monkeypatch, EXPIRIES)
    assert trial.reap(now=NOW) == 0
    assert fake.destroyed == ["trial-lab-aaaaaa"]
    assert "reap: 1 reaped, 2 live, 0 failed" in capsys.readouterr().out


def test_reap_now_destroys_every_trial_and_says_how_early(monkeypatch, capsys):
    fake = FakeTrials(monkeypatch, EXPIRIES)
    assert trial.reap(now=NOW, everything=True) == 0
    assert fake.destroyed == sorted(EXPIRIES)
    output = capsys.readouterr().out
    assert "trial-lab-bbbbbb: destroying now, 2h00m before its expiry" in output
    assert "trial-lab-aaaaaa: expired, destroying" in output and "reap: 3 reaped, 0 live, 0 failed" in output


def test_reap_by_name_destroys_only_that_trial_and_refuses_an_unknown_one(monkeypatch, capsys):
    fake = FakeTrials(monkeypatch, EXPIRIES)
    assert trial.reap(now=NOW, name="trial-dev-cccccc") == 0
    assert fake.destroyed == ["trial-dev-cccccc"]
    with pytest.raises(trial.TrialInputError, match="no trial 'trial-x' in this backend \\(trials: trial-dev-cccccc, "
                                                   "trial-lab-aaaaaa, trial-lab-bbbbbb\\)"):
        trial.reap(now=NOW, name="trial-x")


def test_trial_names_are_valid_lab_names_and_keep_a_readable_base():
    assert trial.trial_name("lab", "a1b2c3") == "trial-lab-a1b2c3"
    assert trial.trial_name("Staging_EU", "a1b2c3") == "trial-sta-a1b2c3"
    assert trial.trial_name("--", "a1b2c3") == "trial-a1b2c3"
    for base in ("lab", "dev", "a", "x-y", "production", "Some.Stack"):
        name = trial.trial_name(base)
        assert len(name) <= 16 and NAME_PATTERN.fullmatch(name), name


@pytest.mark.parametrize("text, seconds", [("2h", 7200), ("90m", 5400), ("1d12h", 129600), ("1s", 1)])
def test_ttl_accepts_numbers_with_units(text, seconds):
    assert trial.parse_ttl(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["2x", "2", "h", "-1h", "1h 2m", "0s"])
def test_ttl_refuses_anything_else(text):
    with pytest.raises(trial.TrialInputError, match="--ttl"):
        trial.parse_ttl(text)


def test_base_config_is_copied_as_json_values_with_structure_kept():
    config = {"aws:region": "ap-northeast-1", "hardened-lightsail:server": {"count": 2},
              "hardened-lightsail:firewall": {"ping": True, "adminCidrs": ["192.0.2.0/24"]},
              "hardened-lightsail:token": {"secure": "v1:abc"}}
    entries = trial.config_entries(config, decrypted=lambda key: f"plain text of {key}")
    assert entries["aws:region"] == {"value": "ap-northeast-1", "secret": False}
    assert entries["hardened-lightsail:server"] == {"value": '{"count": 2}', "objectValue": {"count": 2},
                                                    "secret": False}
    assert entries["hardened-lightsail:token"] == {"value": "plain text of hardened-lightsail:token", "secret": True}


def test_remaining_time_reads_like_a_duration():
    assert [trial.format_remaining(timedelta(seconds=s)) for s in (5, 600, 7199, 86400)] == \
        ["5s", "10m", "1h59m", "24h00m"]


@pytest.mark.parametrize("args, message", [
    (["--stack", "no-such-stack"], "error: unknown base stack 'no-such-stack': no Pulumi.no-such-stack.yaml in"),
    (["--ttl", "2x"], "error: --ttl '2x' is not a duration: use a number with s, m, h or d (2h, 90m, 1d)"),
    (["--reap", "--keep"], "error: --reap and --keep don't go together"),
    (["--now"], "error: --now goes with --reap: `fw trial --reap --now` destroys every kept trial"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    env = {**os.environ, "PULUMI_BACKEND_URL": f"file://{tmp_path}", "PULUMI_HOME": str(tmp_path / "home")}
    result = fw_trial(env, *args, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(message) and len(result.stderr.splitlines()) == 1, result.stderr
    assert not list(tmp_path.glob(".pulumi/stacks/*/*.json"))  # nothing was created


# --- the real thing ---------------------------------------------------------------------------------

class TestRealTrial:
    pytestmark = real_trial

    def test_trial_of_a_lab_stack_is_verified_then_destroyed_and_removed(self, base_stack, backend):
        directory, env = backend
        result = fw_trial(env, "--stack", base_stack)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        names = trial_names(result.stdout)
        assert len(names) == 1
        name = names.pop()
        assert re.search(rf"^trial {name} of {base_stack}: verified \(verified: \d+ probes on 2 address\(es\) "
                         r"match the policy\); destroyed and removed$", result.stdout, re.M), result.stdout[-2000:]
        assert re.search(r"^tcp/80 +IPv4 +anyone else +open +open +YES$", result.stdout, re.M)  # the policy's table
        assert re.search(r"^203\.0\.113\.\d+ +tcp/22 +yes +allowed +open +ok$", result.stdout, re.M)  # measured
        assert "PRIVATE KEY-----" not in result.stdout + result.stderr
        assert "from $PATH" not in result.stdout + result.stderr  # the provider comes from the plugin cache
        assert_nothing_left(directory, {name})

    def test_failed_verification_still_destroys_the_trial_and_exits_1(self, base_stack, backend):
        directory, env = backend
        result = fw_trial({**env, trial.FAIL_VERIFY_HOOK: "1"}, "--stack", base_stack)
        assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
        name = trial_names(result.stdout).pop()
        assert (f"trial {name} of {base_stack}: FAILED: verification forced to fail by "
                f"{trial.FAIL_VERIFY_HOOK}=1 (a test hook); destroyed and removed") in result.stderr
        assert_nothing_left(directory, {name})

    def test_failed_up_is_destroyed_and_exits_1_with_the_reason(self, locked_out_base, backend):
        directory, env = backend
        result = fw_trial(env, "--stack", locked_out_base)
        assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
        name = trial_names(result.stdout).pop()
        assert (f"trial {name} of {locked_out_base}: FAILED: error: exit status 1: running "
                "\"scripts/hl-step deploy\": rules were rolled back: new SSH connections failed within 10 s; "
                "destroyed and removed") in result.stderr
        assert_nothing_left(directory, {name})

    # In flight when Ctrl-C comes: the lab's own `up` (the command provider kills it, so the
    # trial's sweep must remove the half-built lab), or the host firewall's apply (the lab is in
    # the state by then, and the destroy takes it down).
    @pytest.mark.parametrize("in_flight", ["command:local:Command lab-lab creating",
                                           "command:local:Command lab-firewall-deploy creating"])
    def test_ctrl_c_during_up_cancels_then_destroys_and_exits_130(self, base_stack, backend, in_flight):
        directory, env = backend
        process = subprocess.Popen([FW, "trial", "--stack", base_stack], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, env=env)
        seen = []
        for line in process.stdout:
            seen.append(line)
            if in_flight in line:
                process.send_signal(signal.SIGINT)  # scripts/fw execs python: this is the trial itself
                break
        seen += process.stdout.readlines()
        output = "".join(seen)
        assert process.wait(timeout=300) == 130, output[-4000:]
        name = trial_names(output).pop()
        assert "interrupted: cancelling the update (the engine winds down what is in flight), then destroying" in output
        assert f"trial {name}: interrupted; destroyed and removed" in output
        assert "^C received; cancelling" in output  # the engine got exactly one interrupt: a graceful cancel
        assert_nothing_left(directory, {name})

    def test_kept_trial_stays_tagged_and_live_until_reaped_by_name_before_its_expiry(self, base_stack, backend,
                                                                                        monkeypatch, capsys):
        directory, env = backend
        started = datetime.now(UTC)
        kept = fw_trial(env, "--stack", base_stack, "--keep", "--ttl", "2h")
        finished = datetime.now(UTC)
        assert kept.returncode == 0, kept.stdout[-3000:] + kept.stderr[-3000:]
        name = trial_names(kept.stdout).pop()
        try:
            assert f"trial {name} of {base_stack}: verified" in kept.stdout and "left up until" in kept.stdout
            tags = json.loads(pulumi(["stack", "tag", "ls", "--json", "-s", name], directory).stdout)
            assert tags["hardened-lightsail:trial"] == "true"
            expires = datetime.strptime(tags["hardened-lightsail:expires"], "%Y-%m-%dT%H:%M:%SZ")
            # Two hours from some moment of the trial (the tag is written to the second).
            assert started - timedelta(seconds=1) <= expires.replace(tzinfo=UTC) - timedelta(hours=2) <= finished
            assert f"hl-{trial.trial_lab(name).name}-srv" in subprocess.run(
                ["ip", "netns", "list"], capture_output=True, text=True).stdout

            # Before its expiry a reap only reports it, with the time it has left.
            for key in ("PULUMI_BACKEND_URL", "PULUMI_HOME", "HL_USE_BUILT_PULUMI"):
                monkeypatch.setenv(key, env[key])
            assert trial.reap(now=started) == 0
            report = capsys.readouterr().out
            assert re.search(rf"^{name} \(copy of {base_stack}, lab\): live, expires in 2h00m$", report, re.M), report
            assert "reap: 0 reaped, 1 live, 0 failed" in report

            # By name it goes now, whatever its expiry.
            reaped = fw_trial(env, "--reap", name)
            assert reaped.returncode == 0, reaped.stdout[-3000:] + reaped.stderr[-3000:]
            assert re.search(rf"^{name}: destroying now, 1h5\dm before its expiry$", reaped.stdout, re.M), reaped.stdout
            assert f"{name}: reaped (destroyed and removed)" in reaped.stdout
            assert "reap: 1 reaped, 0 live, 0 failed" in reaped.stdout
        finally:
            fw_trial(env, "--reap", "--now")  # a failed assertion above must not leave the lab up
        assert_nothing_left(directory, {name})


def test_the_lab_twin_keeps_the_policy_and_adds_the_lab_admins():
    from hardened_lightsail.trial import lab_twin
    config = yaml.safe_load((PROJECT_DIR / "Pulumi.dev.yaml").read_text())["config"]
    twin = lab_twin(config)
    assert twin["hardened-lightsail:target"] == "lab"
    assert "aws:region" not in twin and "hardened-lightsail:server" not in twin
    firewall = twin["hardened-lightsail:firewall"]
    assert firewall["adminCidrs"] == ["203.0.113.7/32", "2001:db8:7::/64", "192.0.2.0/24", "2001:db8:a::/48"]
    assert firewall["services"] == config["hardened-lightsail:firewall"]["services"]
    assert firewall["sshPort"] == 22


@pytest.mark.engine
@pytest.mark.netfilter
@pytest.mark.skipif(engine_missing_reason() is not None, reason=engine_missing_reason() or "")
@pytest.mark.skipif(os.geteuid() != 0, reason="a lab trial makes network namespaces: needs root")
def test_a_lightsail_stacks_policy_is_tried_in_its_lab_twin(backend):
    """The PR workflow's lab job: Pulumi.dev.yaml's policy, verified in the lab, cleaned up."""
    directory, env = backend
    result = fw_trial(env, "--stack", "dev", "--in-lab")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "of dev: verified (verified: " in result.stdout
    assert_nothing_left(directory, trial_names(result.stdout + result.stderr))
