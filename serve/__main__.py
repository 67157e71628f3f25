"""python -m serve [--host H] [--port P]   Flask's own server (development); `make serve` runs gunicorn."""
import argparse
import sys

from serve.config import ConfigError
from serve.model import ModelError


def main():
    parser = argparse.ArgumentParser(prog="python -m serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--dev", action="store_true", help="Flask's development server (the default here)")
    args = parser.parse_args()
    try:
        from serve import create_app

        app = create_app()
    except (ModelError, ConfigError) as e:
        sys.exit(f"serve: {e}")
    print(f"serving {app.champion.label} on http://{args.host}:{args.port}")
    app.run(host=args.host, port=args.port)


if __name__ == "__main__":
    main()
