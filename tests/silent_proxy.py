"""A TCP proxy whose open connections can be made to go silent, as when a host or a NAT between two
processes vanishes: bytes are swallowed both ways and nothing is closed. Connections made later flow."""

import asyncio
import contextlib


class SilentProxy:
    """Forwards ``127.0.0.1:port`` to ``target_port``; :meth:`silence` mutes every connection open now."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.connections: list[dict] = []
        """Every connection made, its two pumping tasks and whether it is silent."""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> "SilentProxy":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for connection in self.connections:
            for task in connection["tasks"]:
                task.cancel()

    def silence(self) -> None:
        for connection in self.connections:
            connection["silent"] = True

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        target_reader, target_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        connection: dict = {"silent": False}
        connection["tasks"] = [
            asyncio.create_task(self._pump(client_reader, target_writer, connection)),
            asyncio.create_task(self._pump(target_reader, client_writer, connection)),
        ]
        self.connections.append(connection)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, connection: dict) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if not connection["silent"]:
                    writer.write(data)
                    await writer.drain()
