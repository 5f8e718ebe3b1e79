"""``python -m zexec.apps.devidp --tokens-file F [--generate alice,bob] [--port N]``."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None, prog: str = "python -m zexec.apps.devidp") -> None:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Development identity provider: answers POST /auth {\"token\"} and "
        "GET /auth (Bearer) from a token file, like a site's AUTH_API_URL.",
    )
    p.add_argument("--tokens-file", required=True, help="JSON token file (token -> claims)")
    p.add_argument(
        "--generate", metavar="USERS", help="comma-separated users: write new tokens first"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=8090, help="port (default %(default)s)")
    args = p.parse_args(argv)
    from zexec.apps.devidp import create_app, generate_tokens
    from zexec.apps.runtime import serve

    if args.generate:
        users = [u.strip() for u in args.generate.split(",") if u.strip()]
        generate_tokens(args.tokens_file, users)
        # Tokens are in the 0600 file; printing them would put them in shell history/logs.
        print(f"wrote tokens for {', '.join(users)} to {args.tokens_file}")
    from zexec.settings import HttpSettings

    serve(create_app(args.tokens_file, HttpSettings().max_body_bytes), args.host, args.port)


if __name__ == "__main__":
    from zexec.apps.guard import guard

    raise SystemExit(guard("devidp", main))
