"""`python -m serve feedback ...`: the operator's side of users' corrections (serve/feedback.py, serve/store.py).

    list [--state pending|accepted|rejected] [--json]   one line per correction, oldest first
    review ID accept|reject                             only accepted corrections are for training
    export DIR [--state accepted|pending|rejected|all]  DIR/<id>.png (the 28x28 the model saw) + labels.jsonl
    delete ID                                           gone from the store (a user's request to forget it)
    stats                                               counts by label, model version and state, as JSON

Against FEEDBACK_DB_URL, or the default SQLite file (FEEDBACK_DIR/feedback.db): the store the server writes.
"""
import json
import sys

from serve.config import ConfigError, Settings

VERDICTS = {"accept": "accepted", "reject": "rejected"}


def add_commands(commands):
    feedback = commands.add_parser("feedback", help="list, review, export or delete users' corrections")
    actions = feedback.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="the corrections, oldest first")
    listing.add_argument("--state", choices=("pending", "accepted", "rejected"))
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    review = actions.add_parser("review", help="accept or reject a correction")
    review.add_argument("id", type=int)
    review.add_argument("verdict", choices=tuple(VERDICTS))
    export = actions.add_parser("export", help="PNG files and labels.jsonl, in id order")
    export.add_argument("folder")
    export.add_argument("--state", choices=("accepted", "pending", "rejected", "all"), default="accepted")
    delete = actions.add_parser("delete", help="remove a correction")
    delete.add_argument("id", type=int)
    actions.add_parser("stats", help="counts by label, model version and state")


def run(args) -> int:
    from serve.store import Store

    try:
        store = Store.open(Settings().feedback_url())
    except ConfigError as e:
        sys.exit(f"serve: {e}")
    if args.action == "list":
        for row in store.rows(args.state):
            row["created"] = row["created"].isoformat()
            row["reviewed"] = row["reviewed"] and row["reviewed"].isoformat()
            if args.json:
                print(json.dumps(row))
            else:
                print(f"{row['id']:>8}  {row['state']:<8}  label {row['label']:<11}  answered "
                      f"{row['answer'] or '?':<11}  {row['model'] or '?':<16}  {row['created'][:19]}  {row['sha256'][:12]}")
        return 0
    if args.action == "stats":
        print(json.dumps(store.stats(), indent=1))
        return 0
    if args.action == "export":
        count = store.export(args.folder, None if args.state == "all" else args.state)
        print(f"serve: {count} corrections ({args.state}) written to {args.folder}/")
        return 0
    done = store.review(args.id, VERDICTS[args.verdict]) if args.action == "review" else store.delete(args.id)
    if not done:
        print(f"serve: no correction {args.id}", file=sys.stderr)
        return 1
    print(f"serve: correction {args.id} " + (VERDICTS[args.verdict] if args.action == "review" else "deleted"))
    return 0
