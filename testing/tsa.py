"""A time-stamping authority on loopback for the tests: `openssl ts -reply` behind a
small HTTP handler.

`LocalTsa(folder)` makes a CA and a TSA certificate (extendedKeyUsage timeStamping,
critical) with the `openssl` CLI in `folder`, writes the `openssl ts` config, and serves
POSTed TimeStampReqs at `url` until `stop()`. `ca_pem` is the CA certificate to trust;
`mode` changes the replies: "ok", "garbage" (bytes that are no reply), "http500".
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TS_CONFIG = """\
[ tsa ]
default_tsa = tsa_config1

[ tsa_config1 ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
certs = $dir/tsa.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
other_policies = 1.2.3.4.5
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""

TSA_EXT = """\
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = critical, timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


class LocalTsa:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        f = self.folder
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-subj", "/CN=wanwitness test CA", "-days", "30", "-keyout", "ca.key", "-out", "ca.pem",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=f)
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-subj", "/CN=wanwitness test TSA", "-keyout", "tsa.key", "-out", "tsa.csr", cwd=f)
        (f / "tsa.ext").write_text(TSA_EXT)
        _openssl("x509", "-req", "-in", "tsa.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "30", "-extfile", "tsa.ext", "-out", "tsa.pem", cwd=f)
        (f / "serial").write_text("01\n")
        (f / "ts.cnf").write_text(TS_CONFIG.format(dir=f))
        self.ca_pem = f / "ca.pem"
        self.mode = "ok"
        self.requests = 0
        self.lock = threading.Lock()
        tsa = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                query = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with tsa.lock:
                    tsa.requests += 1
                    body, status = tsa.reply(query)
                self.send_response(status)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/tsr"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reply(self, query: bytes) -> tuple[bytes, int]:
        if self.mode == "http500":
            return b"down for maintenance", 500
        if self.mode == "garbage":
            return b"\x30\x03\x02\x01\x00", 200
        with tempfile.TemporaryDirectory(dir=self.folder) as tmp:
            q, r = Path(tmp) / "q.tsq", Path(tmp) / "r.tsr"
            q.write_bytes(query)
            _openssl("ts", "-reply", "-config", str(self.folder / "ts.cnf"), "-queryfile", str(q),
                     "-out", str(r), cwd=self.folder)
            return r.read_bytes(), 200

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
