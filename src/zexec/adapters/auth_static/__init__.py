"""Tokens from a local file: one-machine setups, the development IdP and tests."""

from zexec.adapters.auth_static.authenticator import StaticAuthenticator, load_token_file

__all__ = ["StaticAuthenticator", "load_token_file"]
