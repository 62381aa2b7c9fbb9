"""TURN credentials the gateway mints from a shared secret, against a real coturn server."""

import asyncio
import time
from collections.abc import Iterator

import pytest
from aioice.stun import TransactionFailed
from aioice.turn import create_turn_endpoint
from processes import coturn

from emostream.config import Settings, turn_credentials

SECRET = "turn-shared-secret"


@pytest.fixture
def turn_port(tmp_path) -> Iterator[int]:
    with coturn(tmp_path, SECRET) as port:
        yield port


async def allocate(port: int, server: dict[str, str]) -> tuple[str, int]:
    """A relayed address allocated on the TURN server with ``server``'s credentials."""
    transport, _ = await asyncio.wait_for(
        create_turn_endpoint(asyncio.DatagramProtocol, ("127.0.0.1", port), server["username"], server["credential"]),
        5,
    )
    try:
        return transport.get_extra_info("sockname")
    finally:
        transport.close()


def test_minted_turn_credentials_allocate_a_relay_until_they_expire(turn_port):
    settings = Settings(ice_servers=f"stun:127.0.0.1:{turn_port},turn:127.0.0.1:{turn_port}", ice_secret=SECRET)
    stun, turn = settings.ice_server_list()
    assert stun == {"urls": f"stun:127.0.0.1:{turn_port}"}, "STUN needs no credentials"

    relayed = asyncio.run(allocate(turn_port, turn))
    assert relayed[0] == "127.0.0.1", "coturn relays for the credentials the gateway hands out"
    expired = settings.ice_server_list(now=time.time() - settings.ice_ttl - 60)[1]
    with pytest.raises(TransactionFailed, match="401"):
        asyncio.run(allocate(turn_port, expired))
    forged = {**turn, "credential": turn_credentials("a guess", settings.ice_ttl)["credential"]}
    with pytest.raises(TransactionFailed, match="401"):
        asyncio.run(allocate(turn_port, forged))


def test_turn_credentials_are_of_one_kind():
    with pytest.raises(ValueError, match="not both"):
        Settings(ice_servers="turn:turn.example.org", ice_secret="s", ice_username="u", ice_credential="c").validate()
