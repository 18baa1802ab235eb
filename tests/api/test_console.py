"""The console page: served at ``/``, loading only its own assets, with a policy that forbids anything else."""

import re
from html.parser import HTMLParser

import aiohttp
import yarl

from balancer import api


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.links += [value for name, value in attrs if name in ("src", "href") and value is not None]


async def test_console_page_and_its_assets_are_served_from_here(base_url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{base_url}/") as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        csp = response.headers["Content-Security-Policy"]
        html = await response.text()
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    parser = _Links()
    parser.feed(html)
    assets = [link for link in parser.links if link.startswith("/static/")]
    assert sorted(assets) == ["/static/console.css", "/static/console.js"]
    # "data:," is the empty icon, so that the browser asks for no /favicon.ico
    assert all(link == "data:," or link.startswith("/") and not link.startswith("//") for link in parser.links), (
        parser.links
    )
    for asset in assets:
        async with http.get(f"{base_url}{asset}") as response:
            assert response.status == 200, asset
            body = await response.text()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", body), f"{asset} refers to another host"
        assert "@import" not in body


def test_console_script_inserts_data_as_text_only() -> None:
    """What the script does is tested in a browser (``tests/console``); this is what it must never do: server data
    (names, reasons) parsed as markup."""
    script = (api.STATIC_DIR / "console.js").read_text()
    assert not re.search(r"\.(innerHTML|outerHTML)\b|insertAdjacentHTML|document\.write|eval\(|new Function", script)


async def test_static_route_does_not_escape_its_directory(base_url: str, http: aiohttp.ClientSession) -> None:
    url = yarl.URL(f"{base_url}/static/..%2fapi.py", encoded=True)
    async with http.get(url) as response:
        assert response.status in (403, 404)
