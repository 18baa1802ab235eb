"""Sits between ExaBGP and the speaker's bridge and garbles every ``announce`` command after the first (a bad
prefix ahead of the real ones), so ExaBGP answers ``error`` to it: a way to make a real ExaBGP reject a command the
speaker sends.

Usage (as ExaBGP's API process): python bgp_reject_filter.py BRIDGE_ARGV...
"""

import subprocess
import sys
import threading


def main() -> None:
    bridge = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert bridge.stdin is not None and bridge.stdout is not None
    bridge_in = bridge.stdin

    def down() -> None:  # ExaBGP -> bridge, unchanged
        for line in sys.stdin.buffer:
            bridge_in.write(line)
            bridge_in.flush()
        bridge_in.close()

    threading.Thread(target=down, daemon=True).start()
    announces = 0
    for line in bridge.stdout:  # bridge -> ExaBGP, announcements garbled after the first
        if b" announce attributes " in line:
            announces += 1
            if announces > 1:
                line = line.replace(b" nlri ", b" nlri not-a-prefix ", 1)
        sys.stdout.buffer.write(line)
        sys.stdout.buffer.flush()
    bridge.wait()


if __name__ == "__main__":
    main()
