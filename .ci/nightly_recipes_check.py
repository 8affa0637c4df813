"""Checks the nightly recipes' YAML (docs/nightly/kubernetes/*.yaml, docs/nightly/github/*.yml):
each parses, and holds what docs/nightly/README.md says it does. The Slurm recipe runs for real in
.ci/slurm_test.sh; Kubernetes and GitHub Actions cannot run here, so this is their check.
Usage: python .ci/nightly_recipes_check.py (needs PyYAML)."""

import pathlib
import sys

import yaml

root = pathlib.Path(__file__).resolve().parent.parent / "docs" / "nightly"
failures = []


def expect(cond, what):
    if not cond:
        failures.append(what)


def load(path):
    # The placeholders nightly.sh fills in, filled as it does.
    text = path.read_text().replace("@NIGHT@", "2026-01-01").replace("@SEED@", "20454")
    return yaml.safe_load(text)


hunt = load(root / "kubernetes" / "hunt-job.yaml")
spec = hunt["spec"]
expect(hunt["kind"] == "Job" and spec["completionMode"] == "Indexed", "hunt-job: an Indexed Job")
expect(spec["completions"] == 4 and isinstance(spec["backoffLimitPerIndex"], int), "hunt-job: 4 completions, backoffLimitPerIndex")
rules = spec["podFailurePolicy"]["rules"]
exit1 = [r for r in rules if 1 in r.get("onExitCodes", {}).get("values", []) and r["onExitCodes"]["operator"] == "In"]
expect(len(exit1) == 1 and exit1[0]["action"] == "FailIndex", "hunt-job: exit 1 is a result (FailIndex), not retried")
expect(any(r["action"] == "Ignore" and r.get("onPodConditions") for r in rules), "hunt-job: disruptions are ignored")
pod = spec["template"]["spec"]
expect(pod["restartPolicy"] == "Never", "hunt-job: podFailurePolicy needs restartPolicy Never")
container = pod["containers"][0]
expect("$JOB_COMPLETION_INDEX" in " ".join(container["command"]), "hunt-job: the shard is $JOB_COMPLETION_INDEX")
env = {e["name"]: e["value"] for e in container["env"]}
expect(env["SHARDS"] == str(spec["completions"]), "hunt-job: SHARDS equals completions")
expect(env["NIGHT_DIR"] == "/data/nights/2026-01-01" and env["KNOWN"] == "/data/known", "hunt-job: the night's folder and the known root causes")
merge = load(root / "kubernetes" / "merge-job.yaml")
menv = {e["name"]: e["value"] for e in merge["spec"]["template"]["spec"]["containers"][0]["env"]}
expect(menv["NIGHT_DIR"] == env["NIGHT_DIR"] and menv["KNOWN_OUT"] == env["KNOWN"] and menv["SHARDS"] == env["SHARDS"], "merge-job: the hunt's folders and shards")
expect(merge["spec"]["backoffLimit"] == 0, "merge-job: never retried")

for path in sorted((root / "github").glob("*.yml")):
    wf = yaml.safe_load(path.read_text())
    jobs = wf["jobs"]
    strategy = jobs["hunt"]["strategy"]
    expect(strategy["fail-fast"] is False, f"{path.name}: fail-fast false")
    expect(len(strategy["matrix"]["shard"]) == int(wf["env"]["SHARDS"]), f"{path.name}: a matrix entry per shard")
    expect(jobs["merge"]["needs"] == "hunt" and jobs["merge"]["if"] == "always()", f"{path.name}: the merge runs after every shard, however it ended")
    uses = [s.get("uses", "") for s in jobs["hunt"]["steps"]]
    expect(any(u.startswith("actions/upload-artifact") for u in uses), f"{path.name}: each shard uploads its output")
    expect(any(u.startswith("actions/cache/restore") for u in uses), f"{path.name}: the known root causes are restored")
    runs = " ".join(s.get("run", "") for s in jobs["hunt"]["steps"] + jobs["merge"]["steps"])
    expect("docs/nightly/shard.sh" in runs and "docs/nightly/merge.sh" in runs, f"{path.name}: runs the shared shard and merge scripts")

if failures:
    print("nightly recipes: FAIL:\n  " + "\n  ".join(failures))
    sys.exit(1)
print("nightly recipes: the Kubernetes and GitHub Actions YAML parse and hold their recipe")
