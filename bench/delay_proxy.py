"""A TCP proxy that holds every chunk for a while each way: a database some way off.

    python bench/delay_proxy.py --listen 5433 --target 5432 --delay 0.0005 &
    DUST_PERF_PROFILE_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5433/dust_perf_profile \\
        .venv/bin/python bench/profile_event.py --batch 50 --event mix -n 1000

What a round trip costs through it is what to quote, not ``--delay``: the event loop's
timers are coarse (on the 2-core benchmark machine, ``--delay 0`` gave 0.34 ms a round
trip and ``--delay 0.0005`` 2.7–3.5 ms; ``profile_event.py`` prints its "bare round trip").
Each direction's chunks keep their order. For measuring only: it adds a process on the
machine it measures.
"""

from __future__ import annotations

import argparse
import asyncio


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    try:
        while data := await reader.read(1 << 16):
            await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def serve(listen: int, target: int, delay: float) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(pump(client_r, server_w, delay), pump(server_r, client_w, delay))

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=int, default=5433)
    parser.add_argument("--target", type=int, default=5432)
    parser.add_argument("--delay", type=float, default=0.0005, help="seconds, each way")
    args = parser.parse_args()
    asyncio.run(serve(args.listen, args.target, args.delay))


if __name__ == "__main__":
    main()
