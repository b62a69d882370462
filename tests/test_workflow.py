"""The pull-request workflow (.github/workflows/firewall-pr.yml): it parses, has the jobs,
trigger and permissions the README promises, runs only scripts that exist, pins every action,
skips the real preview without secrets, and updates one comment found by its marker."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROJECT_DIR = Path(__file__).resolve().parent.parent
WORKFLOW = PROJECT_DIR / ".github" / "workflows" / "firewall-pr.yml"
MARKER = "<!-- hardened-lightsail-firewall -->"
SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "PULUMI_ACCESS_TOKEN", "PULUMI_BACKEND_URL",
           "PULUMI_CONFIG_PASSPHRASE")
# owner/repo[/path]@vX.Y.Z or @<40-hex commit>: a moving tag like @v4 could change under us.
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@(v\d+\.\d+\.\d+|[0-9a-f]{40})$")


@pytest.fixture(scope="module")
def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def steps(workflow: dict, job: str) -> list[dict]:
    return workflow["jobs"][job]["steps"]


def all_steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def step_named(workflow: dict, job: str, name: str) -> dict:
    return next(step for step in steps(workflow, job) if step.get("name") == name)


def test_runs_on_pull_requests_with_read_only_contents(workflow: dict):
    # PyYAML reads the bare key `on` as the boolean True (YAML 1.1).
    assert workflow.get("on", workflow.get(True)) == {"pull_request": None}
    assert workflow["permissions"] == {"contents": "read"}


def test_has_the_four_jobs_and_only_the_comment_job_may_write(workflow: dict):
    jobs = workflow["jobs"]
    assert list(jobs) == ["test", "lab", "preview", "comment"]
    assert jobs["comment"]["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert [name for name, job in jobs.items() if "permissions" in job] == ["comment"]
    assert jobs["comment"]["needs"] == ["test", "lab", "preview"]
    assert jobs["comment"]["if"] == "${{ !cancelled() }}"  # also after a failed test or lab
    assert all(job["runs-on"] == "ubuntu-latest" for job in jobs.values())


def test_every_action_is_pinned_to_a_version_or_commit(workflow: dict):
    uses = [step["uses"] for step in all_steps(workflow) if "uses" in step]
    assert {use.split("@")[0] for use in uses} == {
        "actions/checkout", "actions/setup-go", "actions/setup-python", "actions/cache", "actions/upload-artifact",
        "pulumi/actions", "actions/github-script"}
    assert [use for use in uses if not PINNED.match(use)] == []


def test_every_script_it_runs_exists_and_is_executable(workflow: dict):
    text = "\n".join(step.get("run", "") for step in all_steps(workflow))
    scripts = set(re.findall(r"\bscripts/[\w.-]+", text))
    assert scripts == {"scripts/test", "scripts/setup", "scripts/fw"}
    for script in scripts:
        path = PROJECT_DIR / script
        assert path.is_file() and os.access(path, os.X_OK), f"{script} is missing or not executable"


def test_tests_and_lab_run_as_root_with_go_and_python_set_up(workflow: dict):
    for job in ("test", "lab"):
        uses = [step.get("uses", "").split("@")[0] for step in steps(workflow, job)]
        assert {"actions/setup-go", "actions/setup-python"} <= set(uses)
    assert step_named(workflow, "test", "sudo scripts/test")["run"] == 'sudo env "PATH=$PATH" scripts/test'
    trial = next(step for step in steps(workflow, "lab") if step.get("id") == "trial")
    assert 'sudo env "PATH=$PATH" scripts/fw trial --stack dev --in-lab' in trial["run"]


def test_lab_tries_the_proposed_policy_and_keeps_the_measured_exposure(workflow: dict):
    lab = workflow["jobs"]["lab"]
    trial = next(step for step in lab["steps"] if step.get("id") == "trial")
    # The trial destroys its own stack, also on failure, so no separate destroy step is needed;
    # pipefail keeps a failed trial failing the job through `tee`.
    assert "set -o pipefail" in trial["run"] and "tee lab-trial.log" in trial["run"]
    measured = next(step for step in lab["steps"] if step.get("id") == "exposure")
    assert "lab-trial.log > lab-exposure.txt" in measured["run"] and '>> "$GITHUB_OUTPUT"' in measured["run"]
    assert lab["outputs"]["exposure"] == "${{ steps.exposure.outputs.exposure }}"
    upload = next(step for step in lab["steps"] if step.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()" and "lab-exposure.txt" in upload["with"]["path"]


def test_preview_runs_only_with_credentials_and_says_so_when_skipped(workflow: dict):
    preview = workflow["jobs"]["preview"]
    flag = preview["env"]["HAVE_CREDENTIALS"]
    assert all(f"secrets.{name} != ''" in flag for name in SECRETS)
    skipped, *others = preview["steps"]
    assert skipped["if"] == "env.HAVE_CREDENTIALS != 'true'" and "Skipped:" in skipped["run"]
    assert all("env.HAVE_CREDENTIALS == 'true'" in step["if"] for step in others)
    action = next(step for step in others if step.get("uses", "").startswith("pulumi/actions@"))
    assert {key: action["with"][key] for key in ("command", "stack-name", "diff")} == {
        "command": "preview", "stack-name": "dev", "diff": True}
    assert set(action["env"]) | {"PULUMI_BACKEND_URL"} == set(SECRETS)
    assert action["with"]["cloud-url"] == "${{ secrets.PULUMI_BACKEND_URL }}"


def test_comment_job_posts_fw_diff_lab_and_preview_in_one_comment_found_by_its_marker(workflow: dict):
    diff = step_named(workflow, "comment", "scripts/fw diff")
    assert 'scripts/fw diff --base "origin/$BASE_REF" --stack dev' in diff["run"]
    assert diff["env"] == {"BASE_REF": "${{ github.base_ref }}"}  # never pasted into the shell text
    post = step_named(workflow, "comment", "Post or update the PR comment")
    assert post["uses"].startswith("actions/github-script@")
    script = post["with"]["script"]
    assert MARKER in script
    assert "updateComment" in script and "createComment" in script
    assert {"LAB_EXPOSURE", "PREVIEW_SUMMARY", "DIFF_STATUS"} <= set(post["env"])
    assert "${{" not in script  # values come in through env, so a PR can't inject script


def test_readme_documents_every_secret_the_workflow_reads():
    readme = (PROJECT_DIR / "README.md").read_text()
    assert "## PR previews" in readme
    used = set(re.findall(r"secrets\.(\w+)", WORKFLOW.read_text()))
    assert used == set(SECRETS)
    assert [name for name in used if f"`{name}`" not in readme] == []


def actionlint() -> str | None:
    built = PROJECT_DIR / ".tools" / "bin" / "actionlint"
    return str(built) if built.exists() else shutil.which("actionlint")


@pytest.mark.skipif(actionlint() is None, reason="actionlint is not installed (scripts/setup builds it into "
                                                 ".tools/bin when Go is available)")
def test_actionlint_finds_nothing():
    # actionlint also runs shellcheck on every `run:` block when shellcheck is installed.
    result = subprocess.run([actionlint(), "-color=false", str(WORKFLOW)], capture_output=True, text=True,
                            cwd=PROJECT_DIR, timeout=120)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


# The comment script, run under node with a stand-in for the GitHub API (skipped without node).
HARNESS = r"""
const fs = require('fs');
const AsyncFunction = Object.getPrototypeOf(async function () {}).constructor;
const calls = [];
const github = {
  paginate: async () => JSON.parse(process.env.EXISTING_COMMENTS),
  rest: {issues: {
    listComments: () => {},
    updateComment: async (args) => calls.push({update: args.comment_id, body: args.body}),
    createComment: async (args) => calls.push({create: args.issue_number, body: args.body}),
  }},
};
const core = {summary: {addRaw() { return this; }, async write() {}}, warning: (message) => calls.push({warning: message})};
const context = {repo: {owner: 'owner', repo: 'repo'}, payload: {pull_request: {number: 7}}};
new AsyncFunction('require', 'github', 'core', 'context', fs.readFileSync(process.argv[2], 'utf8'))(
  require, github, core, context).then(() => console.log(JSON.stringify(calls)));
"""


def run_comment_script(workflow: dict, tmp_path: Path, existing: list, **env: str) -> list:
    script = step_named(workflow, "comment", "Post or update the PR comment")["with"]["script"]
    (tmp_path / "script.js").write_text(script)
    (tmp_path / "harness.js").write_text(HARNESS)
    (tmp_path / "fw-diff.md").write_text("### Firewall diff: stack `dev`\n\n**No firewall change**: ...\n")
    (tmp_path / "fw-diff.err").write_text('error: head Pulumi.dev.yaml: firewall.sshPort: 0 is out of range (1-65535)\n')
    variables = {"DIFF_STATUS": "0", "TEST_RESULT": "success", "LAB_RESULT": "success", "PREVIEW_RESULT": "success",
                 "LAB_EXPOSURE": "verified: 34 probes match the policy", "PREVIEW_SUMMARY": "Skipped: no secrets",
                 "RUN_URL": "https://github.invalid/run/1", **env}
    result = subprocess.run(["node", "harness.js", "script.js"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60, env={"PATH": os.environ["PATH"], "EXISTING_COMMENTS": json.dumps(existing),
                                             **variables})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


needs_node = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


@needs_node
def test_comment_script_creates_the_comment_with_diff_lab_and_preview(workflow: dict, tmp_path: Path):
    [call] = run_comment_script(workflow, tmp_path, existing=[{"id": 1, "user": {"type": "User"}, "body": "LGTM"}])
    assert call["create"] == 7
    assert call["body"].startswith(f"{MARKER}\n\n### Firewall diff: stack `dev`\n\n**No firewall change**: ...\n\n---")
    assert "#### Lab: ✅ success" in call["body"] and "```text\nverified: 34 probes match the policy\n```" in call["body"]
    assert "#### `pulumi preview --diff` (stack `dev`): ✅ success\n\n```text\nSkipped: no secrets\n```" in call["body"]


@needs_node
def test_comment_script_updates_its_own_comment_and_shows_a_refused_policy(workflow: dict, tmp_path: Path):
    existing = [{"id": 3, "user": {"type": "User"}, "body": f"quoting {MARKER}"},
                {"id": 4, "user": {"type": "Bot"}, "body": f"{MARKER}\nold"}]
    [call] = run_comment_script(workflow, tmp_path, existing, DIFF_STATUS="2", LAB_RESULT="failure", LAB_EXPOSURE="")
    assert call["update"] == 4  # the bot's comment, not the human who quoted the marker
    assert ("`scripts/fw diff` refused the policy (exit 2); nothing below was rendered from it:\n\n```text\n"
            "error: head Pulumi.dev.yaml: firewall.sshPort: 0 is out of range (1-65535)\n```") in call["body"]
    assert "#### Lab: ❌ failure" in call["body"]
