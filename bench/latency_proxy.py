"""A TCP proxy on 127.0.0.1 that delays every byte by a fixed one-way latency, in its own process.

Loopback has no round-trip time, so on it a parallel copy only shows what the CPU allows; a real
OBS endpoint is 5-50 ms away, and hiding that latency is what parallel transfers are for. The
kernel's netem qdisc would be the usual tool, but it is not available on these machines. Bytes
keep their order; bandwidth is not limited.
"""
import asyncio
import multiprocessing
import time


async def _pipe(reader, writer, delay):
    queue = asyncio.Queue()

    async def deliver():
        while True:
            due, data = await queue.get()
            if data is None:
                break
            pause = due - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.ensure_future(deliver())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((time.monotonic() + delay, data))
    except ConnectionError:
        pass
    queue.put_nowait((0, None))
    await sender


def _serve(listen_port, target_port, delay, ready):
    async def handle(client_reader, client_writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, up_writer, delay),
                             _pipe(up_reader, client_writer, delay), return_exceptions=True)

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", listen_port)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def start(listen_port, target_port, rtt_ms):
    """Start the proxy process (half the round-trip time each way); returns it for .terminate()."""
    ready = multiprocessing.Event()
    proc = multiprocessing.Process(target=_serve, daemon=True,
                                   args=(listen_port, target_port, rtt_ms / 2000.0, ready))
    proc.start()
    if not ready.wait(10):
        proc.terminate()
        raise RuntimeError("latency proxy did not start")
    return proc
