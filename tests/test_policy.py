from __future__ import annotations

import pytest

from chalicelib.policy import WeakPassword, check_new_password
from tools.common_passwords import TARGET, entries


def test_the_shipped_list_is_zxcvbns_and_long_enough() -> None:
    shipped = [line for line in TARGET.read_text().splitlines() if not line.startswith("#")]
    assert shipped == entries()
    assert len(shipped) >= 10_000
    assert all(len(password) >= 8 for password in shipped)


@pytest.mark.parametrize(
    ("username", "password"),
    [("bob", "password"), ("bob", "PASSWORD1"), ("bob", "qwertyuiop"), ("marianne9", "Marianne9")],
)
def test_common_passwords_and_the_username_are_refused(username: str, password: str) -> None:
    with pytest.raises(WeakPassword):
        check_new_password(username, password)


@pytest.mark.parametrize("password", ["correct horse battery", "x7!Kq2#mZ9", "bob-but-longer"])
def test_uncommon_passwords_pass(password: str) -> None:
    check_new_password("bob", password)
