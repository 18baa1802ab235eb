"""``xdplb drain|disable|enable|reset`` and ``xdplb reload`` against the real API around a fake controller."""

import asyncio
from pathlib import Path

import pytest

import config
from balancer import cli, status
from tests.api import fake_controller, serving
from tests.api.fake_controller import FakeController


async def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = await asyncio.to_thread(cli.main, argv)  # urllib blocks: off the loop that serves the API
    out, err = capsys.readouterr()
    return code, out, err


async def test_each_verb_sets_the_backends_admin_state(
    controller: FakeController, base_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for verb, state in (("drain", config.AdminState.DRAINED), ("disable", config.AdminState.DISABLED),
                        ("enable", config.AdminState.ENABLED), ("reset", None)):  # fmt: skip
        code, out, err = await _run([verb, "web", "198.18.0.11", "--api", base_url], capsys)
        assert (code, err) == (0, ""), err
        assert controller.admin_calls[-1] == ("web/198.18.0.11", state)
        assert out.startswith("web 198.18.0.11: ")
    assert out == "web 198.18.0.11: enabled\n"  # reset: the file's state, no override


async def test_an_ipv6_backend_and_a_service_named_with_a_slash(
    base_url: str, capsys: pytest.CaptureFixture[str], controller: FakeController
) -> None:
    service = next(s for s in controller.running_config.services if s.name.startswith("["))
    address = service.backends[0].address_text
    code, _, err = await _run(["drain", service.name, address, "--api", base_url], capsys)
    assert (code, err) == (0, "")
    assert controller.admin_calls[-1] == (f"{service.name}/{address}", config.AdminState.DRAINED)


async def test_an_unknown_backend_or_api_is_a_clear_refusal(
    base_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, err = await _run(["drain", "web", "198.18.0.99", "--api", base_url], capsys)
    assert (code, out) == (1, "") and err == "xdplb drain: HTTP 404: no backend 'web/198.18.0.99'\n"
    code, out, err = await _run(["drain", "web", "198.18.0.11", "--api", "http://127.0.0.1:1"], capsys)
    assert (code, out) == (1, "") and err.startswith("xdplb drain: cannot reach the xdplb API at http://127.0.0.1:1")
    code, _, err = await _run(["drain", "web", "198.18.0.11", "--config", str(tmp_path / "none.yaml")], capsys)
    assert code == 1 and "cannot read the file" in err


async def test_reload_says_what_changed_or_why_it_was_refused(
    controller: FakeController, base_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await _run(["reload", "--api", base_url], capsys)
    assert (code, out, err) == (0, "applied: no changes\n", "")
    controller.next_reload = status.ReloadResult(False, "x", "lb.yaml: services[0].port: bad port")
    code, out, err = await _run(["reload", "--api", base_url], capsys)
    assert (code, out, err) == (1, "", "lb.yaml: services[0].port: bad port\n")


async def test_the_token_comes_from_the_option_or_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    controller = FakeController(fake_controller.load(token_file=str(token)))
    async with serving.serve(controller) as (base_url, _):
        code, _, err = await _run(["drain", "web", "198.18.0.11", "--api", base_url], capsys)
        assert code == 1 and "HTTP 401" in err and not controller.admin_calls
        code, _, err = await _run(
            ["drain", "web", "198.18.0.11", "--api", base_url, "--token-file", str(token)], capsys
        )
        assert (code, err) == (0, "") and len(controller.admin_calls) == 1
        path = tmp_path / "lb.yaml"
        port = base_url.rsplit(":", 1)[1]
        path.write_text(f'interfaces: [eth0]\napi: {{listen: "127.0.0.1:{port}", token_file: "{token}"}}\n')
        code, out, err = await _run(["reload", "--config", str(path)], capsys)
        assert (code, err) == (0, "") and out.startswith("applied")
        token.write_text("")
        code, _, err = await _run(["reload", "--config", str(path)], capsys)
        assert code == 1 and err == f"xdplb reload: the token file {token} is empty\n"
