"""A real SMTP server on loopback for the email-alert tests (aiosmtpd).

Usage: smtp_sink.py OUT.jsonl [USER PASSWORD]

Listens on 127.0.0.1 on a free port and prints `READY <port>`. Each message received
is appended to OUT.jsonl as one JSON line: {"from", "to", "data", "authenticated",
"login"}. With USER and PASSWORD, AUTH PLAIN/LOGIN is required (and allowed without
TLS: loopback only). Exits when stdin closes.
"""

import json
import logging
import socket
import sys
import threading
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def main():
    out_path = sys.argv[1]
    credentials = (sys.argv[2], sys.argv[3]) if len(sys.argv) >= 4 else None
    # aiosmtpd warns about its own use of a deprecated attribute on every AUTH, and
    # about AUTH without TLS, which is the point here (loopback only).
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
    lock = threading.Lock()

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            login = getattr(session.auth_data, "login", None)
            with lock, open(out_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({
                    "from": envelope.mail_from,
                    "to": envelope.rcpt_tos,
                    "data": envelope.content.decode("utf-8", "replace"),
                    "authenticated": bool(session.authenticated),
                    "login": login.decode() if login else None,
                }) + "\n")
            return "250 OK"

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = credentials is not None and isinstance(auth_data, LoginPassword) \
            and (auth_data.login.decode(), auth_data.password.decode()) == credentials
        if ok:
            return AuthResult(success=True, auth_data=auth_data)
        # handled=False: aiosmtpd then answers 535 itself (else the client waits).
        return AuthResult(success=False, handled=False)

    # Controller needs a concrete port: borrow a free one from the kernel.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    controller = Controller(
        Handler(), hostname="127.0.0.1", port=port,
        authenticator=authenticator if credentials else None,
        auth_required=credentials is not None, auth_require_tls=False)
    controller.start()
    print(f"READY {port}", flush=True)
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
