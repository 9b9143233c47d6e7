"""Regenerates chalicelib/data/common-passwords.txt from zxcvbn's password frequency list.

zxcvbn (https://github.com/dwolfhub/zxcvbn-python, MIT License) ranks 30,000 common passwords,
most frequent first. Passwords shorter than the policy's 8 characters are already refused by
length, so only the longer ones are kept. Run: ``.venv/bin/python -m tools.common_passwords``.
"""

from __future__ import annotations

from pathlib import Path

from zxcvbn.frequency_lists import FREQUENCY_LISTS

TARGET = Path(__file__).resolve().parent.parent / "chalicelib" / "data" / "common-passwords.txt"
HEADER = (
    "# Common passwords of 8 or more characters, most frequent first: zxcvbn 4.5.0's\n"
    "# 'passwords' frequency list (MIT License, https://github.com/dwolfhub/zxcvbn-python).\n"
    "# Regenerate with: .venv/bin/python -m tools.common_passwords\n"
)


def entries() -> list[str]:
    return [password for password in FREQUENCY_LISTS["passwords"] if len(password) >= 8]


def main() -> None:
    TARGET.write_text(HEADER + "\n".join(entries()) + "\n")
    print(f"wrote {len(entries())} passwords to {TARGET}")


if __name__ == "__main__":
    main()
