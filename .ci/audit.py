"""`make audit`: pip-audit over the installed environment (.venv: every pin of requirements.txt, which
includes requirements-serve.txt, the container's), with the policy CI needs (docs/security.md):

  a known vulnerability not listed in .ci/audit-ignore.txt   -> exit 1, each one printed (CI fails)
  the vulnerability service cannot answer (down, unreachable,
  or it knows none of the installed versions)               -> a loud warning, exit 0 (CI is not flaky)
  otherwise                                                  -> the counts, exit 0

.ci/audit-ignore.txt: one vulnerability id per line, then `#` and why it does not apply or cannot be
fixed yet; each becomes pip-audit's --ignore-vuln.
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

IGNORE_FILE = Path(__file__).with_name("audit-ignore.txt")


def ignored() -> list[str]:
    if not IGNORE_FILE.exists():
        return []
    ids = []
    for line in IGNORE_FILE.read_text().splitlines():
        vuln_id, _, why = line.partition("#")
        if vuln_id.strip():
            if not why.strip():
                sys.exit(f"audit: {IGNORE_FILE.name}: {vuln_id.strip()} is ignored without a reason after `#`")
            ids.append(vuln_id.strip())
    return ids


def main() -> int:
    skip = ignored()
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "audit.json"
        run = subprocess.run([sys.executable, "-m", "pip_audit", "--progress-spinner", "off", "--format", "json",
                              "--output", str(report), *[a for i in skip for a in ("--ignore-vuln", i)]],
                             capture_output=True, text=True, timeout=600)
        if not report.exists() or not report.read_text().strip():
            print(f"audit: WARNING: pip-audit could not ask the vulnerability service (exit {run.returncode}); "
                  "NOT AUDITED:\n" + (run.stderr or run.stdout).strip()[-2000:])
            return 0
        dependencies = json.loads(report.read_text())["dependencies"]
    vulnerable = [(d["name"], d["version"], v) for d in dependencies for v in d.get("vulns", [])]
    skipped = [d for d in dependencies if "skip_reason" in d]
    audited = len(dependencies) - len(skipped)
    print(f"audit: {len(dependencies)} installed distributions, {audited} audited, {len(skipped)} not known to the "
          f"service, {len(vulnerable)} known vulnerabilities ({len(skip)} ignored by .ci/audit-ignore.txt)")
    for name, version, vuln in vulnerable:
        fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed release"
        print(f"audit: VULNERABLE {name} {version}: {vuln['id']} ({', '.join(vuln.get('aliases') or [])}) "
              f"fixed in {fixed}")
    if vulnerable:
        print("audit: upgrade the pin in requirements*.txt, or list the id in .ci/audit-ignore.txt with the reason")
        return 1
    if audited == 0:
        print("audit: WARNING: the vulnerability service knows none of the installed versions: NOT AUDITED "
              f"(e.g. {skipped[0]['skip_reason']})" if skipped else "audit: WARNING: nothing to audit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
