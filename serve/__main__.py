"""python -m serve [--host H] [--port P]     the API under gunicorn (what `make serve` runs)
python -m serve --dev                       the API under Flask's development server (reloads on edits)
python -m serve predict FILE|DIR... [--json]  read images through exactly the API's code path
python -m serve read FILE... [--json]       read written numbers (POST /read), same path
python -m serve bundle DIR                  write the verified champion to DIR (model.onnx + model.json), and
                                            the number reader to DIR/reader, for MODEL_DIR=DIR (a container image)
python -m serve feedback list [--state S] [--json] | review ID accept|reject | export DIR [--state S] |
                         delete ID | stats      users' corrections (POST /feedback), in FEEDBACK_DB_URL or
                                            the default SQLite (serve/feedback_cli.py)
"""
import argparse
import json
import os
import sys
from pathlib import Path

from serve.config import ConfigError
from serve.model import ModelError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--dev", action="store_true", help="Flask's development server instead of gunicorn")
    commands = parser.add_subparsers(dest="command")
    for name, route in (("predict", "/predict"), ("read", "/read")):
        command = commands.add_parser(name, help=f"answer like POST {route} for each file (folders: their images)")
        command.add_argument("paths", nargs="+", type=Path)
        command.add_argument("--json", action="store_true", help="one JSON object per line, the API's answer")
        command.set_defaults(route=route)
    bundle = commands.add_parser("bundle", help="write the verified champion to a folder for MODEL_DIR")
    bundle.add_argument("folder", type=Path)
    from serve.feedback_cli import add_commands

    add_commands(commands)
    args = parser.parse_args(argv)

    if args.command is None and not args.dev:  # production: gunicorn, configured in serve/gunicorn.conf.py
        os.environ.update(HOST=args.host, PORT=str(args.port))
        config = str(Path(__file__).with_name("gunicorn.conf.py"))
        os.execvp(sys.executable, [sys.executable, "-m", "gunicorn", "-c", config, "serve.gunicorn_app:app"])
    if args.command == "feedback":
        from serve.feedback_cli import run

        return run(args)
    try:
        if args.command == "bundle":
            from serve.model import export_bundle, load_champion, load_reader

            champion = load_champion()
            export_bundle(champion, args.folder)
            print(f"serve: {champion.label} (sha256 {champion.sha256[:12]}…, verified) written to {args.folder}/")
            reader, why, _ = load_reader()
            if reader is not None:  # the number reader beside it, for /read
                export_bundle(reader, args.folder / "reader")
                print(f"serve: {reader.label} (sha256 {reader.sha256[:12]}…, verified) written to {args.folder}/reader/")
            else:
                print(f"serve: no number reader in the bundle ({why}): /read will cut numbers into digits")
            return 0
        from serve import create_app
        from serve.config import Settings

        os.environ.setdefault("MODEL_POLL_SECONDS", "0")  # a one-off command never waits for an alias move
        app = create_app(settings=Settings())
    except (ModelError, ConfigError) as e:
        sys.exit(f"serve: {e}")
    if args.command is None:
        print(f"serving {app.serving.champion.label} on http://{args.host}:{args.port} (Flask development server)")
        app.run(host=args.host, port=args.port, debug=False)
        return 0
    return answer_files(app, args.route, images_in(args.paths), args.json)


def images_in(paths):
    """Files as given; folders contribute their image files (recursively, sorted)."""
    files = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(path)
    return files


def answer_files(app, route, files, as_json) -> int:
    """Post each file to the app in-process: the same parsing, limits, decoding and model as HTTP clients get."""
    client, failures = app.test_client(), 0
    show_progress = sys.stderr.isatty() and len(files) > 1
    for done, path in enumerate(files, 1):
        try:
            data = path.read_bytes()
        except OSError as e:
            body, status = {"error": {"code": "unreadable_file", "message": str(e)}}, 0
        else:
            response = client.post(route, data=data, content_type="application/octet-stream")
            body, status = response.get_json(), response.status_code
        failures += status != 200
        if as_json:
            print(json.dumps({"file": str(path), "status": status, **body}), flush=True)
        else:
            print(f"{path}: {summary(body)}", flush=True)
        if show_progress:
            filled = 30 * done // len(files)
            print(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{len(files)}", end="", file=sys.stderr)
    if show_progress:
        print(file=sys.stderr)
    return 1 if failures else 0


def summary(body) -> str:
    if "error" in body:
        return f"error {body['error']['code']}: {body['error']['message']}"
    if "number" in body:
        confidences = ", ".join(f"{d['confidence']:.1%}" for d in body["digits"])
        return f"{body['number'] or '(no digits found)'}  [{confidences}]"
    return f"{body['prediction']}  ({body['confidence']:.1%}, {body['model']})"


if __name__ == "__main__":
    sys.exit(main())
