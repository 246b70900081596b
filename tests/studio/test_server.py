"""The real server process: a URL with a token on 127.0.0.1, edits that survive `kill -9`, and
Ctrl-C stopping it with exit 130."""

from __future__ import annotations

import signal

import numpy as np

from .server_process import start_studio


def test_the_server_keeps_edits_through_kill_9_and_stops_on_ctrl_c(folder):
    import httpx

    process, url = start_studio(folder)
    try:
        assert url.startswith("http://127.0.0.1:") and "?token=" in url
        base, token = url.split("/?")[0], url.split("token=")[1]
        assert httpx.get(f"{base}/api/cases").status_code == 403
        assert httpx.get(url).status_code == 200
        labels = np.zeros((32, 32), dtype=np.uint8)
        labels[4:9, 4:9] = 1
        saved = httpx.put(f"{base}/api/cases/phantom/edits", params={"index": 2, "version": 0, "token": token},
                          content=labels.tobytes())
        assert saved.json() == {"version": 1}
    finally:
        process.kill()  # SIGKILL: no chance to clean up
        process.wait(timeout=20)

    process, url = start_studio(folder)
    try:
        base, token = url.split("/?")[0], url.split("token=")[1]
        back = httpx.get(f"{base}/api/cases/phantom/labels/edits", params={"index": 2, "token": token})
        assert back.headers["X-Version"] == "1"
        assert np.array_equal(np.frombuffer(back.content, np.uint8).reshape(32, 32), labels)
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=20)
    err = process.stderr_log.read_text()
    assert code == 130, err
    assert "Traceback" not in err and "stopped; the edits are saved" in err, err[-600:]
