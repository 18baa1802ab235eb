"""An abusive client, run as its own process: many connections that never finish a request.

``python -m tests.api.flood HOST PORT --connections N --sources K --reconnect S --hold S`` opens N connections,
from 127.0.0.2 and up (K addresses, in turn); a third of them trickle header lines and never end them, the rest send nothing.
For ``--reconnect`` seconds a connection the server closes is opened again (after a second); then for ``--hold``
seconds the open ones are only held. It prints one JSON line: ``{"opened", "closed_by_server", "still_open"}``.
"""

import argparse
import asyncio
import json
import resource


async def _one(index: int, args: argparse.Namespace, stats: dict[str, int], until: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            reader, writer = await asyncio.open_connection(
                args.host, args.port, local_addr=(f"127.0.0.{2 + index % args.sources}", 0)
            )
        except OSError as error:
            stats["connect_failed"] += 1
            key = f"error_{error.errno}"
            stats[key] = stats.get(key, 0) + 1
            await asyncio.sleep(1.0)
            if loop.time() >= until:
                return
            continue
        stats["opened"] += 1
        stats["still_open"] += 1
        try:
            if index % 3 == 0:
                writer.write(b"GET /api/v1/status HTTP/1.1\r\n")
                while not reader.at_eof():
                    writer.write(b"X-Slow: 1\r\n")
                    try:
                        await asyncio.wait_for(reader.read(1), timeout=0.5)
                    except TimeoutError:
                        continue
                    break
            else:
                await reader.read(1)
        except OSError:
            pass
        stats["still_open"] -= 1
        stats["closed_by_server"] += 1
        writer.close()
        if loop.time() >= until:
            await asyncio.Event().wait()  # hold nothing more; wait to be cancelled
        await asyncio.sleep(1.0)


async def _main(args: argparse.Namespace) -> None:
    stats = {"opened": 0, "closed_by_server": 0, "still_open": 0, "connect_failed": 0}
    loop = asyncio.get_running_loop()
    until = loop.time() + args.reconnect
    tasks = [asyncio.create_task(_one(i, args, stats, until)) for i in range(args.connections)]
    await asyncio.sleep(args.reconnect + args.hold)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(stats), flush=True)


def main() -> None:
    """Parse the arguments and flood."""
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--sources", type=int, default=1)
    parser.add_argument("--reconnect", type=float, default=5.0)
    parser.add_argument("--hold", type=float, default=5.0)
    args = parser.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
