"""The real server process: a URL with a token on 127.0.0.1, and Ctrl-C stops it with exit 130."""

from __future__ import annotations

import signal

from server_process import start_studio


def test_the_server_prints_a_tokened_url_and_stops_on_ctrl_c(folder):
    import httpx

    process, url = start_studio(folder)
    try:
        assert url.startswith("http://127.0.0.1:") and "?token=" in url
        base = url.split("/?")[0]
        assert httpx.get(f"{base}/api/cases").status_code == 403
        assert httpx.get(url).status_code == 200
        assert httpx.get(f"{base}/api/cases", params={"token": url.split("token=")[1]}).status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=20)
    err = process.stderr.read()
    assert code == 130, err
    assert "Traceback" not in err and "stopped; the edits are saved" in err, err[-600:]
