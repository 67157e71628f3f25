"""Moving `champion`, what every server follows, by a person: promote a version, roll back, read the history.

    python -m ops.promote VERSION [--name digits] --why TEXT     # a person's promotion (no table)
    python -m ops.promote --rollback [--name digits] --why TEXT  # back to the champion before this one
    python -m ops.promote --history [--name digits]              # every move of champion, oldest first

The register stages move only `candidate`; `champion` moves here and in the promotion gate (ops/gate.py,
the `promote` stage), and every move goes through `move`: the version is first checked as a server checks it
(its model.onnx downloaded, its sha256 against the model_sha256 tag, the self-test on known digits or
numbers: serve/model.py), a version that fails is refused, even by hand. A move is recorded twice: on the
version (tags champion_by, champion_at, champion_why: who, when in UTC, why: "gate: ...", "manual: ...",
"rollback: ...") and on the registered model, where the tag champion_history holds every move as JSON
({"to", "from", "by", "at", "why"}), appended to, never rewritten, so that a rollback knows where to go.
Who: DIGITS_USER, else `git config user.email`, else user@host. For `digits`, the INT8 copy follows:
digits-int8@champion moves to the checked copy of the promoted version (pipeline/quantise.py), or is removed
when it has none, so a server never serves the copy of another version.
"""
import argparse
import getpass
import json
import os
import socket
import subprocess
import sys
from datetime import datetime, timezone

from digits.contract import ALIAS, INT8_SUFFIX, MODEL_NAME, READER_NAME
from serve.model import ModelError, Registry

HISTORY = "champion_history"  # on the registered model: JSON list of every move, oldest first
HISTORY_LIMIT = 5000  # characters: MLflow's SQL stores keep a registered model's tag value in VARCHAR(5000)
WHY_IN_HISTORY = 200  # characters of a reason kept in the history (the version's champion_why keeps it whole)
KINDS = {MODEL_NAME: "digits", READER_NAME: "reader"}


class PromoteError(RuntimeError):
    """A move refused: the message says why; champion stays where it was."""


def who() -> str:
    if os.environ.get("DIGITS_USER"):
        return os.environ["DIGITS_USER"]
    try:
        email = subprocess.run(["git", "config", "user.email"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        email = ""
    return email or f"{getpass.getuser()}@{socket.gethostname()}"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def registry_uri(uri=None) -> str:
    return Registry(tracking_uri=uri).uri  # MLFLOW_TRACKING_URI, else the project's SQLite store


def client_for(uri):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def at_alias(client, name, alias):
    """The version `alias` points to, or None when it points nowhere (or the model is not registered)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def checked(uri, name, version):
    """The version loaded exactly as a server loads it before serving: model.onnx fetched, its sha256 against the
    model_sha256 tag, the self-test (serve/model.py). -> serve.model.Champion; ModelError when it fails."""
    if version.status != "READY":
        raise ModelError(f"{name} version {version.version} is {version.status}, not READY")
    registry = Registry(name=name, alias=ALIAS, tracking_uri=uri, precision="float", kind=KINDS.get(name, "digits"))
    return registry._fetch(name, version, 1)  # the server's own download, verification and self-test


def history(client, name) -> list:
    tags = client.get_registered_model(name).tags
    try:
        return json.loads(tags.get(HISTORY, "[]"))
    except ValueError:  # edited by hand into something else: start again rather than lose the move
        return []


def appended(entries, entry) -> str:
    """The history with entry appended, as JSON under HISTORY_LIMIT: the oldest moves go first when it is full
    (each version keeps its own champion_* tags)."""
    entries = [*entries, entry]
    while len(entries) > 1 and len(json.dumps(entries)) > HISTORY_LIMIT:
        entries.pop(0)
    return json.dumps(entries)


def move(client, uri, name, version, why, previous=None) -> dict:
    """Move name@champion to `version` (a ModelVersion already checked), recording who, when and why. Tags
    first, then the alias, then the history: a move killed half-way leaves champion where it was, or moved but
    not in the history (a rollback then goes back to the history's last champion, which is right)."""
    from pipeline.register import retried

    entry = {"to": str(version.version), "from": previous and str(previous.version), "by": who(), "at": now(),
             "why": why[:WHY_IN_HISTORY]}
    for key, value in (("champion_by", entry["by"]), ("champion_at", entry["at"]), ("champion_why", why)):
        retried(client.set_model_version_tag, name, version.version, key, value)
    retried(client.set_registered_model_alias, name, ALIAS, version.version)
    retried(client.set_registered_model_tag, name, HISTORY, appended(history(client, name), entry))
    if name == MODEL_NAME:
        entry["int8"] = int8_follows(client, uri, name, version)
    return entry


def int8_follows(client, uri, name, version) -> str:
    """NAME-int8@champion onto the checked INT8 copy of this version (its source_version and source_sha256 tags,
    pipeline/quantise.py), itself checked as a server checks it; removed when there is none. -> what it did."""
    from mlflow.exceptions import MlflowException

    from pipeline.register import retried

    copy_name = name + INT8_SUFFIX
    try:
        copies = client.search_model_versions(f"name='{copy_name}'")
    except MlflowException:
        copies = []
    copies = sorted((c for c in copies if c.tags.get("source_version") == str(version.version)
                     and c.tags.get("source_sha256") == version.tags.get("model_sha256")
                     and c.tags.get("check") == "passed" and c.tags.get("model_sha256")),
                    key=lambda c: -int(c.version))
    for copy in copies:
        try:
            checked(uri, copy_name, copy)
        except ModelError as e:
            print(f"promote: {copy_name} version {copy.version} refused: {e}", file=sys.stderr)
            continue
        retried(client.set_registered_model_alias, copy_name, ALIAS, copy.version)  # as the float alias
        return f"{copy_name}@{ALIAS} -> version {copy.version}"
    if at_alias(client, copy_name, ALIAS) is not None:
        client.delete_registered_model_alias(copy_name, ALIAS)
        return f"{copy_name}@{ALIAS} removed: no checked INT8 copy of version {version.version} (the float one serves)"
    return f"no {copy_name}@{ALIAS}: the float version serves"


def champions(entries, current=None) -> list:
    """The champions still to roll back to, oldest first, as the history says: each promotion stacks its
    version, a rollback unstacks down to where it went. The version champion points to now, on top, is left off."""
    stack = []
    for entry in entries:
        if not stack and entry.get("from"):
            stack.append(entry["from"])  # the champion before the first recorded move
        if entry["why"].startswith("rollback:") and entry["to"] in stack:
            while stack[-1] != entry["to"]:
                stack.pop()
        elif not stack or stack[-1] != entry["to"]:
            stack.append(entry["to"])
    while stack and current is not None and stack[-1] == str(current):
        stack.pop()
    return stack


def promote(name, version_number, why, uri=None) -> dict:
    """A person's promotion: no table, but the server's checks; PromoteError when it fails them."""
    from mlflow.exceptions import MlflowException

    uri = registry_uri(uri)
    client = client_for(uri)
    try:
        version = client.get_model_version(name, str(version_number))
    except MlflowException as e:
        raise PromoteError(f"no {name} version {version_number} in {uri}") from e
    current = at_alias(client, name, ALIAS)
    if current is not None and str(current.version) == str(version.version):
        raise PromoteError(f"{name} version {version.version} is {name}@{ALIAS} already")
    try:
        checked(uri, name, version)
    except ModelError as e:
        raise PromoteError(f"refusing {name} version {version.version}: {e}") from e
    return move(client, uri, name, version, f"manual: {why}", current)


def rollback(name, why, uri=None) -> dict:
    """champion back to the one before it (the history's), checked as a server checks it first."""
    uri = registry_uri(uri)
    client = client_for(uri)
    current = at_alias(client, name, ALIAS)
    stack = champions(history(client, name), current.version if current else None)
    if not stack:
        raise PromoteError(f"no earlier {name}@{ALIAS} in its history to roll back to "
                           f"(`python -m ops.promote --history --name {name}`)")
    from mlflow.exceptions import MlflowException

    try:
        target = client.get_model_version(name, stack[-1])
    except MlflowException as e:  # deleted since: say so, as for a version that fails the checks
        raise PromoteError(f"cannot roll back to {name} version {stack[-1]}: it is no longer in {uri}; "
                           "promote another by hand") from e
    try:
        checked(uri, name, target)
    except ModelError as e:
        raise PromoteError(f"cannot roll back to {name} version {target.version}: {e}; promote another by hand") from e
    return move(client, uri, name, target, f"rollback: {why}", current)


def show(name, uri=None) -> str:
    uri = registry_uri(uri)
    client = client_for(uri)
    entries, current = history(client, name), at_alias(client, name, ALIAS)
    lines = [f"{name}@{ALIAS} is version {current.version if current else 'none'} ({uri})"]
    lines += [f"{e['at']}  {e.get('from') or '-':>4} -> {e['to']:<4} {e['by']}: {e['why']}" for e in entries]
    return "\n".join(lines if entries else lines + ["no recorded moves"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version", nargs="?", help="the version to make champion")
    parser.add_argument("--name", default=MODEL_NAME, choices=sorted(KINDS), help="the registered model")
    parser.add_argument("--why", help="the reason, recorded with the move (required to move)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--rollback", action="store_true", help="back to the champion before this one")
    which.add_argument("--history", action="store_true", help="print every recorded move")
    args = parser.parse_args(argv)
    if args.history:
        print(show(args.name))
        return 0
    if bool(args.version) == args.rollback:
        parser.error("give a VERSION or --rollback (or --history)")
    if not args.why:
        parser.error("--why TEXT is required: it is recorded with the move")
    try:
        entry = rollback(args.name, args.why) if args.rollback else promote(args.name, args.version, args.why)
    except PromoteError as e:
        print(f"promote: {e}", file=sys.stderr)
        return 1
    print(f"promote: {args.name}@{ALIAS} is version {entry['to']} (was {entry['from'] or 'none'}), "
          f"by {entry['by']} at {entry['at']}: {entry['why']}" + (f"; {entry['int8']}" if entry.get("int8") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
