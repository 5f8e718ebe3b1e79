"""First end-to-end check: SDK -> broker -> server -> worker and back."""

import zexec


def test_add(shared_stack):
    client = zexec.Client(shared_stack.frontend, shared_stack.tokens["alice"])
    try:
        assert client.call(lambda a, b=1: a + b, 5, b=2) == 7
    finally:
        client.close()
