# The agent's TLS settings under MicroPython: broker.ca is checked and turned into DER
# once, mbedTLS accepts it, and TLS without a usable CA never opens a connection.
import asyncio
import json

import config
import mqtt
from mpyunit import eq, main, raises

# The public half of a CA made by `wanwitness broker tls init` (ECDSA P-256).
CA = """-----BEGIN CERTIFICATE-----
MIIBjTCCATOgAwIBAgIUAl8ZEUq3/UBWaJDDgww4bi3zqAYwCgYIKoZIzj0EAwIw
IzEhMB8GA1UEAwwYd2Fud2l0bmVzcyBsb2NhbCBDQSAodm0pMB4XDTI2MTIwMTEx
MzUwNVoXDTQ2MTEyNjExMzUwNVowIzEhMB8GA1UEAwwYd2Fud2l0bmVzcyBsb2Nh
bCBDQSAodm0pMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEo26F1HLICHhRB4KK
3ZIzU0el7Iq17q1XQde+13AgvKQX2DbVoODqaPqDRCKs7S7HvS/BA+jYKiAy+d0R
6+Pb8qNFMEMwEgYDVR0TAQH/BAgwBgEB/wIBADAOBgNVHQ8BAf8EBAMCAQYwHQYD
VR0OBBYEFNQ0vSJ3ebrvKvZmVuCBUo3/fqvpMAoGCCqGSM49BAMCA0gAMEUCIH7o
RKoEZ6jt6DUFnGTyPG+ntdQexAu5jjAJzRzMqTMNAiEAn+TA5ArOxYfCT22t0r8H
Fw7r6I0s9dZyQE/j9zandvA=
-----END CERTIFICATE-----
"""
BASE = {"id": "kitchen", "broker": {"host": "192.0.2.5", "port": 8883, "user": "kitchen",
                                    "password": "x", "tls": True, "ca": CA}}


def board(**broker):
    raw = json.loads(json.dumps(BASE))
    raw["broker"].update(broker)
    for k in [k for k, v in broker.items() if v is Ellipsis]:
        del raw["broker"][k]
    return config.parse(raw)


def test_a_pem_ca_becomes_der_that_mbedtls_loads():
    c = board()
    eq(c.problems, [])
    der = c.get("broker.ca")
    eq(der[0], 0x30)  # one DER SEQUENCE, its length covering the rest exactly
    eq(len(der), 4 + (der[2] << 8 | der[3]))
    mqtt.tls_context(der)  # raises if mbedTLS refuses the certificate


def test_windows_line_ends_and_surrounding_text_are_accepted():
    c = board(ca="issued by wanwitness\r\n" + CA.replace("\n", "\r\n"))
    eq(c.problems, [])
    eq(c.get("broker.ca"), board().get("broker.ca"))


def test_tls_without_a_ca_is_named_and_fails_closed():
    for c in (board(ca=...), board(ca=""), board(ca=None)):
        eq([k for k, _ in c.problems], ["broker.ca"])
        eq(c.get("broker.tls"), True)
        eq(c.get("broker.ca"), None)
    eq(board(ca=...).problems[0][1][:8], "missing:")


def test_a_broken_ca_is_named():
    typo = CA.replace("MIIB", "MI*B", 1)
    cut = CA[:200] + CA[-27:]
    for bad in ("hello", typo, cut, CA + CA, 42, ["x"], CA.replace("BEGIN CERT", "BEGIN KEY")):
        c = board(ca=bad)
        eq([k for k, _ in c.problems], ["broker.ca"], repr(bad)[:40])
        eq(c.get("broker.ca"), None)


def test_plain_mqtt_needs_no_ca_and_keeps_one_given():
    eq(board(tls=False, ca=...).problems, [])
    eq(board(tls=False).problems, [])


def test_a_client_that_may_not_use_tls_never_opens_a_socket():
    c = mqtt.Client("127.0.0.1", 9, "probe", tls="TLS is on but broker.ca is missing")
    e = raises(OSError, asyncio.run, c.connect())
    eq(str(e), "TLS is on but broker.ca is missing")
    eq(c._addr, None)  # not even the name was resolved
    eq(c._sock, None)


main(globals())
