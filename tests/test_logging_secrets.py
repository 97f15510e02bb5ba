"""The daemon's logs never carry a webhook URL's secrets: httpx logs every request's full URL at INFO
(`HTTP Request: POST http://user:pass@host/services/T0/B0/SECRET "HTTP/1.1 200 OK"`), and the daemon
logs at INFO, so an action using httpx would write its credentials and secret path to the log."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import http.server, threading, trio
    from postee.cli import configure_logging
    from postee.actions.httpclient import open_http_client, send_request

    class Ok(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
            self.wfile.write(b"ok")
        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    configure_logging({})

    async def main():
        url = f"http://user:PASSWORD-SECRET@127.0.0.1:{server.server_port}/services/T0/B0/PATH-SECRET"
        async with await open_http_client(timeout=5.0) as client:  # httpx, as jira, splunk... use
            print((await send_request(client, "POST", url, content=b"{}")).status)

    trio.run(main)
''')


def test_an_http_request_does_not_log_its_url():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "200"  # the request was made
    assert "SECRET" not in done.stderr, done.stderr
