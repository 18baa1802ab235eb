"""A stand-in for the xdplb daemon in the SIGKILL test: runs a Speaker, announces, reports, and waits to be killed.

Usage: python bgp_controller.py RUNTIME_DIR CONFIG_JSON PREFIX... ; prints ``exabgp=PID`` then ``ready`` once announced.
"""

import asyncio
import ipaddress
import sys
from pathlib import Path

import bgp
import config


async def main(runtime_dir: str, config_json: str, prefixes: list[str]) -> None:
    bgp_config = config.BgpConfig.model_validate_json(config_json)
    async with bgp.Speaker(bgp_config, runtime_dir=Path(runtime_dir)) as speaker:
        for prefix in prefixes:
            await speaker.announce(ipaddress.ip_network(prefix), config.RouteAttributes(med=42))
        print(f"exabgp={speaker.exabgp_pid}", flush=True)
        print("ready", flush=True)
        await asyncio.sleep(3600)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
