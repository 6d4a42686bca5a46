"""A real SMTP server on loopback for the email-alert tests (aiosmtpd).

Usage: smtp_sink.py OUT.jsonl [USER PASSWORD [starttls|tls CERT.pem KEY.pem]]

Listens on 127.0.0.1 on a free port and prints `READY <port>`. Each message received
is appended to OUT.jsonl as one JSON line: {"from", "to", "data", "authenticated",
"login", "tls"}. With USER and PASSWORD, AUTH PLAIN/LOGIN is required (and allowed
without TLS: loopback only). With `starttls` the server requires STARTTLS before
anything else; with `tls` it speaks TLS from the first byte (SMTPS); either with the
certificate and key given. Exits when stdin closes.
"""

import json
import logging
import socket
import ssl
import sys
import threading
import warnings

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def main():
    out_path = sys.argv[1]
    credentials = (sys.argv[2], sys.argv[3]) if len(sys.argv) >= 4 else None
    mode = sys.argv[4] if len(sys.argv) >= 7 else None
    context = None
    if mode:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(sys.argv[5], sys.argv[6])
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
                    "tls": session.ssl is not None
                    or server.transport.get_extra_info("ssl_object") is not None,
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
    tls = {}
    if mode == "starttls":
        tls = {"tls_context": context, "require_starttls": True}
    elif mode == "tls":
        tls = {"ssl_context": context}
    controller = Controller(
        Handler(), hostname="127.0.0.1", port=port,
        authenticator=authenticator if credentials else None,
        auth_required=credentials is not None, auth_require_tls=False, **tls)
    controller.start()
    print(f"READY {port}", flush=True)
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
