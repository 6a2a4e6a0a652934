"""A TCP proxy between the device and the broker that breaks the network on command.

It runs its own asyncio loop in its own thread; the test thread switches faults at run time and
each switch has taken effect when the call returns:

- ``passthrough()``: bytes flow (after ``delay(seconds)`` of added latency, if set);
- ``cut()``: reset both sides of every open connection now (SO_LINGER 0, then abort: an RST);
- ``refuse()``: the broker is away: every new connection is reset as soon as it is accepted;
- ``blackhole()``: sockets stay open and bytes vanish both ways. A blackholed connection stays
  dead even after ``passthrough()`` (its byte stream has a gap, as a flow through a rebooted NAT
  does). A connection opened during the blackhole is held: what the device sent waits, as in
  TCP's retransmission queue, and reaches the broker when the link comes back;
- ``withhold_connack(n)``: the next ``n`` connections that reach the broker get a CONNACK that
  never comes back: every byte from the broker on them is dropped, so the device waits (the AWS
  IoT Device Advisor reconnect-backoff test).

``attempts`` records each connection: when it was accepted and when it ended, so tests can
compute the reconnect delays a device chose.
"""

from __future__ import annotations

import asyncio
import enum
import socket
import struct
import threading
import time
from dataclasses import dataclass

HOST = "127.0.0.1"


class Mode(enum.Enum):
    PASS = "pass"
    BLACKHOLE = "blackhole"
    REFUSE = "refuse"


@dataclass
class Attempt:
    """One connection from the device, with ``time.monotonic()`` stamps."""

    accepted: float
    closed: float | None = None
    withheld: bool = False


class _Link:
    """One device connection and, once made, its connection to the broker."""

    def __init__(self, attempt: Attempt, device: asyncio.StreamWriter) -> None:
        self.attempt = attempt
        self.writers = [device]
        self.dead = False

    def abort(self) -> None:
        for writer in self.writers:
            sock = writer.get_extra_info("socket")
            if sock is not None and sock.fileno() >= 0:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

    def close(self) -> None:
        for writer in self.writers:
            writer.close()


class FaultProxy:
    """Listens on ``port`` (loopback) and forwards to ``upstream_port``; ``close()`` when done."""

    def __init__(self, upstream_port: int, *, host: str = HOST) -> None:
        self.upstream = (host, upstream_port)
        self.attempts: list[Attempt] = []
        self._mode = Mode.PASS
        self._delay = 0.0
        self._withhold = 0
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._thread.start()
        try:
            self._flowing: asyncio.Event = self._call(asyncio.Event)
            self._flowing.set()
            self._server = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._serve, host, 0), self._loop).result(5)
        except BaseException:
            self._stop_loop()
            raise
        self.port: int = self._server.sockets[0].getsockname()[1]

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def url(self) -> str:
        return f"mqtt://{HOST}:{self.port}"

    @property
    def connections(self) -> int:
        return len(self.attempts)

    # -- faults, called from the test thread; each returns once it is in effect ---------------

    def passthrough(self) -> float:
        """Let bytes flow again (no added delay); returns the monotonic time it took effect."""
        return self._call(self._switch, Mode.PASS, 0.0)

    def blackhole(self) -> float:
        return self._call(self._switch, Mode.BLACKHOLE, self._delay)

    def refuse(self) -> float:
        """Reset every open and every new connection: the broker is away."""
        return self._call(self._switch, Mode.REFUSE, self._delay)

    def cut(self) -> float:
        """Reset every open connection now; new ones are served as the mode says."""
        return self._call(self._abort_all)

    def delay(self, seconds: float) -> float:
        """Hold each chunk ``seconds`` before forwarding it (both ways); a busy stream sees up to twice that."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        return self._call(self._switch, Mode.PASS, float(seconds))

    def withhold_connack(self, n: int) -> None:
        """Drop everything the broker sends on the next ``n`` connections (its CONNACK first)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self._call(setattr, self, "_withhold", n)

    def close(self) -> None:
        """Reset every connection, stop listening, stop the loop and join its thread."""
        if self._loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # -- the loop's side ---------------------------------------------------------------------

    def _call(self, fn, *args):
        async def run():
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(5)

    def _switch(self, mode: Mode, delay: float) -> float:
        self._mode, self._delay = mode, delay
        if mode is Mode.BLACKHOLE:
            self._flowing.clear()
            for link in self._links:
                link.dead = True
        else:
            self._flowing.set()
        if mode is Mode.REFUSE:
            self._abort_all()
        return time.monotonic()

    def _abort_all(self) -> float:
        for link in list(self._links):
            link.abort()
        return time.monotonic()

    async def _shutdown(self) -> None:
        self._server.close()
        self._abort_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, device_in: asyncio.StreamReader, device_out: asyncio.StreamWriter) -> None:
        attempt = Attempt(time.monotonic())
        self.attempts.append(attempt)
        link = _Link(attempt, device_out)
        self._links.add(link)
        self._tasks.add(asyncio.current_task())
        try:
            await self._flowing.wait()  # held while blackholed
            if self._mode is Mode.REFUSE:
                link.abort()
                return
            attempt.withheld = self._withhold > 0
            self._withhold -= attempt.withheld
            first = await device_in.read(65536)
            if device_in.at_eof():
                return  # the device gave up while held: its packets never reach the broker
            broker_in, broker_out = await asyncio.open_connection(*self.upstream)
            link.writers.append(broker_out)
            if self._delay:
                await asyncio.sleep(self._delay)
            if not link.dead:
                broker_out.write(first)
            pumps = [
                asyncio.ensure_future(self._pump(link, device_in, broker_out, to_device=False)),
                asyncio.ensure_future(self._pump(link, broker_in, device_out, to_device=True)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except OSError:
            link.abort()  # the broker is not there: the device sees a reset
        finally:
            link.close()
            attempt.closed = time.monotonic()
            self._links.discard(link)
            self._tasks.discard(asyncio.current_task())

    async def _pump(self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, to_device: bool) -> None:
        while data := await reader.read(65536):
            if self._delay:
                await asyncio.sleep(self._delay)
            if link.dead or (to_device and link.attempt.withheld):
                continue
            writer.write(data)
            await writer.drain()
