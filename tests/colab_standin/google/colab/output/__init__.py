"""``google.colab.output``: the widget manager switch, ``eval_js`` and the kernel-port proxy.

``serve_kernel_port_as_window(port, path, anchor_text)`` shows a link that opens the kernel's port through Colab's
proxy in a new tab; ``serve_kernel_port_as_iframe(port, path, height)`` shows it inside the output. Both are
recorded in :data:`exposed`. The stand-in proxy forwards ``http://127.0.0.1:<proxy>/port/<N>/<path>`` to
``http://127.0.0.1:<N>/<path>`` (method, headers and body), so the page is only usable if its links are relative.
"""

import http.client
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ._widgets import disable_custom_widget_manager, enable_custom_widget_manager  # noqa: F401

#: every port the notebook asked to expose: {"kind": "window"|"iframe", "port", "path", "url", ...}
exposed: list[dict] = []
_browser_answers: list = []
_proxy: ThreadingHTTPServer | None = None
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet, as a notebook output would be
        pass

    def _forward(self):
        m = re.match(r"^/port/(\d+)(/.*)?$", self.path)
        if not m:
            self.send_error(404, "not a proxied port")
            return
        port, rest = int(m.group(1)), m.group(2) or "/"
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP | {"host"}}
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.request(self.command, rest, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError as exc:
            self.send_error(502, f"kernel port {port} unreachable: {exc}")
            return
        finally:
            conn.close()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in _HOP | {"content-length"}:
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_HEAD = do_OPTIONS = do_PUT = do_DELETE = _forward


def proxy_url(port: int, path: str = "/") -> str:
    """What ``google.colab.kernel.proxyPort(port)`` gives the page's JavaScript: the port's URL through the proxy."""
    global _proxy
    if _proxy is None:
        _proxy = ThreadingHTTPServer(("127.0.0.1", 0), _ProxyHandler)
        _proxy.daemon_threads = True
        threading.Thread(target=_proxy.serve_forever, name="colab-standin-proxy", daemon=True).start()
    return f"http://127.0.0.1:{_proxy.server_port}/port/{int(port)}{path if path.startswith('/') else '/' + path}"


def eval_js(script, ignore_result=False, timeout_sec=None):
    """Runs JavaScript in the (imaginary) browser: ``google.colab.kernel.proxyPort(N)`` and the file picker."""
    m = re.search(r"google\.colab\.kernel\.proxyPort\((\d+)", script)
    if m:
        return proxy_url(int(m.group(1)))
    if "google.colab._files._uploadFiles" in script:
        return _browser_answers.pop(0)
    raise NotImplementedError(f"the stand-in browser cannot run: {script[:80]}")


def _show(html):
    from IPython.display import HTML, display

    display(HTML(html))


def serve_kernel_port_as_window(port, path="/", anchor_text=None):
    url = proxy_url(port, path)
    exposed.append({"kind": "window", "port": int(port), "path": path, "anchor_text": anchor_text, "url": url})
    _show(f'<a href="{url}" target="_blank">{anchor_text or url}</a>')


def serve_kernel_port_as_iframe(port, path="/", height="500", cache_in_notebook=False):
    url = proxy_url(port, path)
    exposed.append({"kind": "iframe", "port": int(port), "path": path, "height": str(height), "url": url})
    _show(f'<div><iframe src="{url}" width="100%" height="{height}" frameborder="0"></iframe></div>')
