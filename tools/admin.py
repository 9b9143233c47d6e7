"""Make USERNAME an administrator: create it (asking for a password) or promote it.

Works against whatever AWS the environment points at:
- locally: ``make admin USERNAME=alice`` (the table of the running ``make dev``);
- deployed: ``TABLE_NAME=<table> .venv/bin/python -m tools.admin alice`` with the usual AWS
  credentials and region in the environment.
Without a terminal, the password is read from standard input.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence

import boto3
from pydantic import ValidationError

from chalicelib.clock import iso, utc_now
from chalicelib.identity import new_user_id
from chalicelib.passwords import ScryptHasher
from chalicelib.payloads import UserCreate
from chalicelib.policy import WeakPassword, check_new_password
from chalicelib.users import DynamoDBUserRepository, User
from tools.localaws import Resources


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("username")
    args = parser.parse_args(argv)
    table_name = os.environ.get("TABLE_NAME") or Resources.for_stage("dev").table_name
    table = boto3.resource("dynamodb").Table(table_name)
    users = DynamoDBUserRepository(table)
    if users.get(args.username) is not None:
        users.set_access(args.username, role="admin", disabled=None, updated_at=_now())
        print(f"{args.username} is now an administrator (table {table_name})")
        return 0
    password = _read_password()
    try:
        UserCreate(username=args.username, password=password, role="admin")
        check_new_password(args.username, password)
    except (ValidationError, WeakPassword) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    users.add(
        User(
            username=args.username,
            user_id=new_user_id(),
            password_hash=ScryptHasher().hash(password),
            created_at=_now(),
            updated_at=_now(),
            role="admin",
        )
    )
    print(f"created administrator {args.username} (table {table_name})")
    return 0


def _read_password() -> str:
    if sys.stdin.isatty():
        password = getpass.getpass("Password for the new administrator: ")
        if getpass.getpass("Again: ") != password:
            raise SystemExit("the passwords differ")
        return password
    return sys.stdin.readline().rstrip("\n")


def _now() -> str:
    return iso(utc_now())


if __name__ == "__main__":
    sys.exit(main())
