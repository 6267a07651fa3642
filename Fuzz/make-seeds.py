#!/usr/bin/env python3
"""Writes the fuzz harnesses' seed corpora (Fuzz/corpus/HARNESS/seed-*) and dictionaries
(Fuzz/dict/HARNESS.dict) from the tests' own cases and the manual pages' examples. Run it
after adding a case; the output is committed. scripts/fuzz adds what libFuzzer finds to a
scratch copy, never to these folders (new regression inputs go to Fuzz/regressions/ by hand,
with the fix).

  Fuzz/make-seeds.py
"""
import hashlib
import os
import struct
import subprocess

ROOT = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(ROOT)


def write(harness, data):
    d = os.path.join(ROOT, "corpus", harness)
    os.makedirs(d, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def dictionary(harness, words):
    with open(os.path.join(ROOT, "dict", harness + ".dict"), "w") as f:
        f.write(f"# {harness}: keywords and punctuation of the format (libFuzzer -dict)\n")
        for w in sorted(set(words)):
            escaped = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else f"\\x{ord(c):02x}" for c in w)
            f.write(f'"{escaped}"\n')


def argv(*args):
    return b"\0".join(a.encode() for a in args)


# --- tcprules (the manual's examples and the tests' forms) ------------------------------------
RULES = [
    "18.23.0.32:deny",
    "127.:allow,RELAYCLIENT=\"\"",
    "=.example.com:allow,RELAYCLIENT=\"\"",
    "=host.example.com:deny",
    "joe@18.23.0.32:allow",
    "18.23.0.32:allow,NAME=\"joe\"",
    "10.0.0.1-100:allow",
    "1.2.3-4.:deny",
    ":allow",
    ":deny",
    "::1:allow",
    "2001:db8::/32:deny",
    "=:allow",
    "# a comment",
    "10.:allow,X=/a/,Y='b',Z=%c%",
    "1.2.3.4:allow,A=\"x\",B=\"y\",deny",
]
for line in RULES:
    write("tcprules-line", line.encode())
with open(os.path.join(REPO, "examples", "rules.txt"), "rb") as f:
    example = f.read()
write("tcprules-compile", example)
for chunk in (b"\x01", b"\x07", b"\x3c"):
    write("tcprules-compile", chunk + "\n".join(RULES).encode() + b"\n")
dictionary("tcprules-line", [":", "allow", "deny", "=", ",", "\"", "'", "-", ".", "@", "=.", "::", "/", "#", "\n"])
dictionary("tcprules-compile", [":", "allow", "deny", "=", ",", "\"", "-", ".", "@", "=.", "::", "\n", "\r\n"])

# --- cdb: databases compiled by tcprules, with a key prefix --------------------------------------
TCPRULES = os.environ.get("TCPRULES", os.path.join(REPO, ".build", "release", "tcprules"))
if os.access(TCPRULES, os.X_OK):
    import tempfile
    with tempfile.TemporaryDirectory() as t:
        cdb, tmp = os.path.join(t, "r.cdb"), os.path.join(t, "r.tmp")
        # The lines that compile (the IPv6 and odd forms above are for the line parser).
        good = [r for r in RULES
                if subprocess.run([TCPRULES, cdb, tmp], input=r.encode() + b"\n", capture_output=True).returncode == 0]
        subprocess.run([TCPRULES, cdb, tmp], input="\n".join(good).encode() + b"\n", check=True)
        with open(cdb, "rb") as f:
            db = f.read()
    for key in (b"10.0.0.1", b"18.23.0.32", b"=host.example.com"):
        prefix = bytes([len(key) * 256 // (len(key) + len(db) + 1)])
        write("cdb-lookup", prefix + key + db)
dictionary("cdb-lookup", ["\x00\x00\x00\x00", "\xff\xff\xff\xff", "\x00\x08\x00\x00", "=", ".", "@"])

# --- command lines -----------------------------------------------------------------------------
for a in [
    argv("-v", "-x", "rules.cdb", "0", "110", "cat"),
    argv("-q", "-c", "40", "-HRl", "localhost", "127.0.0.1", "8000", "echo", "hi"),
    argv("-6", "-b", "50", "-t", "3", "-B", "banner", "::1", "0", "prog"),
    argv("-u", "65534", "-g", "65534", "-1", "-X", "-x", "x.cdb", "0", "smtp", "qmail-smtpd"),
    argv("-D", "-o", "-O", "-p", "-P", "-h", "-r", "-U", "-I", "lo", "::", "0", "sh"),
]:
    write("tcpserver-args", a)
dictionary("tcpserver-args", ["-" + c for c in "cxXBgubltqQvhHpPrRoOdD14I6U"] + ["\x00", "0", "::", "110"])

for a in [
    argv("-D", "-L", "stderr:5", "-l", "127.0.0.1", "-p", "8080", "-r", "127.0.0.1", "-o", "80"),
    argv("-f", "/etc/tcpproxy.conf", "-z"),
    argv("--bind", "127.0.0.1:8080", "/bin/cat", "-a", "/bin/acp", "-v", "TP_"),
    argv("-c", "/etc/tcpproxy.conf", "-u", "nobody", "-g", "nogroup", "-C", "/var/empty", "-P", "/run/p.pid"),
    argv("--proxy-protocol", "v2", "--timeout", "30", "--rules", "r.cdb", "--bind", "[::1]:8080", "server:80"),
    argv("-d", "-y", "-b", "65536", "-s", "127.0.0.2", "-t", "ipv6", "-R", "ipv4", "-zz"),
    argv("-l", "::", "-p", "443", "-r", "127.0.0.1", "-o", "80", "--tls-cert", "a.pem", "--tls-key", "a.key",
         "--tls-cert", "b.pem", "--tls-key", "b.key", "--tls-ocsp", "b.der", "--tls-client-ca", "ca.pem", "--tls-protocols", "TLSv1.3"),
    argv("--remote-tls", "--remote-tls-ca", "ca.pem", "--remote-tls-name", "www.example", "--tls-ciphers",
         "ECDHE-RSA-AES128-GCM-SHA256:TLS_AES_256_GCM_SHA384", "server:443"),
    argv("--remote-tls-insecure", "--tls-protocols", "TLSv1.1,TLSv1.3", "server:443"),
]:
    write("tcpproxy-args", a)
dictionary("tcpproxy-args", ["-" + c for c in "ugCPLltproRsbcfavwhDUdyz"] + [
    "--username", "--groupname", "--chroot", "--write-pid", "--log", "--local-addr", "--local-resolv",
    "--local-port", "--remote-addr", "--remote-resolv", "--remote-port", "--source-addr", "--buffer-size",
    "--config", "--acp", "--varprefix", "--writefile", "--help", "--nodaemonize", "--debug", "--debug-trace",
    "--clear-environment", "--list", "--bind", "--logname", "--timeout", "--rules", "--proxy-protocol",
    "--standalone", "--no-client-names", "\x00", "=", "stderr:5", "syslog:3", "ipv4", "ipv6", "v1", "v2",
    "--tls-cert", "--tls-key", "--tls-client-ca", "--remote-tls", "--remote-tls-insecure", "--remote-tls-ca",
    "--remote-tls-name", "--tls-ocsp", "--remote-tls-cert", "--remote-tls-key", "--tls-protocols", "--tls-ciphers", "TLSv1.2", "TLSv1.3", "TLSv1", "TLS_"])

# --- tcpproxy configurations: the examples, halves split by the first byte ---------------------
confs = []
for name in ("tcpproxy-zekoll.conf", "tcpproxy-spreadspace.conf"):
    with open(os.path.join(REPO, "examples", name), "rb") as f:
        confs.append(f.read())
confs += [
    b"port 25\nserver any-relay\ninterface 192.168.1.1\nserver inside-relay\nport 110\nexec /usr/local/sbin/pop3.proxy\n",
    b"acp /bin/acp default\nport 8080\nserver 127.0.0.1:80\nrotate 127.0.0.10-127.0.0.20\ndebug /tmp/trace\n"
    b"rules /etc/r.cdb\nproxy-protocol v1\nsetenv A=b\nuid 1\ngid 2\nuser nobody\ntimeout 30\nlogname x\n",
    b"listen * 8080 { remote: any 80; };\nlisten 127.0.0.1 8080 { remote: loopback 80; resolv: ipv4; };\n"
    b"listen ::1 8081 { remote: named 80; remote-resolv: ipv6; source: ::1; rules: r.cdb; proxy-protocol: v2; };\n",
    b"standalone no\nport http\nserver www.example:http-alt\n",
    b"port 443\nserver 127.0.0.1:80\ntls-cert a.pem\ntls-key a.key\ntls-ocsp a.der\ntls-cert b.pem\ntls-key b.key\n"
    b"tls-client-ca ca.pem\ninterface 127.0.0.2\nserver www:443\nremote-tls insecure\ntls-protocols TLSv1.3\n",
    b"listen * 443 { remote: any 80; tls-cert: a.pem; tls-key: a.key; tls-ciphers: HIGH:TLS_AES_128_GCM_SHA256; };\n"
    b"listen ::1 8443 { remote: www 443; remote-tls: yes; remote-tls-ca: ca.pem; remote-tls-name: www.test; };\n"
    b"listen * 8444 { remote: www 443; remote-tls-cert: c.pem; remote-tls-key: c.key; tls-cert: a.pem; tls-key: a.key;"
    b" tls-ocsp: a.der; };\n",
]
for c in confs:
    write("tcpproxy-config", bytes([128]) + c + c)
    write("tcpproxy-config", bytes([255]) + c)
dictionary("tcpproxy-config", [
    "port", "server", "interface", "exec", "acp", "setenv", "timeout", "uid", "gid", "user", "logname",
    "writefile", "debug", "rules", "proxy-protocol", "rotate", "standalone", "listen", "yes", "no", "target",
    "listen", "remote", "resolv", "remote-resolv", "source", "{", "}", ";", ":", "*", "::", "ipv4", "ipv6",
    "v1", "v2", "#", "\n", "\"", "[", "]", "-", "tls-cert", "tls-key", "tls-client-ca", "tls-protocols",
    "tls-ciphers", "remote-tls", "remote-tls-ca", "remote-tls-name", "remote-tls-cert", "remote-tls-key", "tls-ocsp", "insecure", "TLSv1.2", "TLSv1.3", "TLS_"])

# --- DNS: a PTR answer and an A answer, a truncated one, and a compression loop ---------------
def name(n):
    return b"".join(bytes([len(p)]) + p.encode() for p in n.split(".") if p) + b"\0"

def message(qname, qtype, answers, flags=0x8180):
    head = struct.pack(">HHHHHH", 0x1234, flags, 1, len(answers), 0, 0)
    q = name(qname) + struct.pack(">HH", qtype, 1)
    body = b""
    for rtype, rdata in answers:
        body += b"\xc0\x0c" + struct.pack(">HHIH", rtype, 1, 300, len(rdata)) + rdata
    return head + q + body

write("dns-message", message("1.0.0.127.in-addr.arpa", 12, [(12, name("localhost"))]))
write("dns-message", message("host.example", 1, [(1, bytes([127, 0, 0, 1])), (1, bytes([127, 0, 0, 2]))]))
write("dns-message", message("host.example", 28, [(28, bytes(15) + b"\x01")]))
write("dns-message", message("x.example", 1, [], flags=0x8383))
write("dns-message", struct.pack(">HHHHHH", 1, 0x8180, 1, 1, 0, 0) + b"\xc0\x0c" + b"\0\x0c\0\x01")
dictionary("dns-message", ["\xc0\x0c", "\x00\x0c\x00\x01", "\x00\x01\x00\x01", "\x00\x1c\x00\x01", "\x81\x80",
                           "\x07in-addr\x04arpa\x00", "\x03ip6\x04arpa\x00"])

# --- ident (RFC 1413's examples) ----------------------------------------------------------------
for r in [b"6193, 23 : USERID : UNIX : stjohns\r\n", b"6195, 23 : ERROR : NO-USER\r\n",
          b"6191, 23 : USERID : OTHER : \x00\xff weird\r\n", b"1,2:USERID:UNIX,US-ASCII:joe\n", b"x" * 300]:
    write("ident-reply", r)
dictionary("ident-reply", [":", ",", "USERID", "ERROR", "UNIX", "OTHER", "NO-USER", "\r\n", "US-ASCII"])

# --- system files ---------------------------------------------------------------------------------
for t in [
    b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n# comment\n10.0.0.1 host.example host\n",
    b"pop3\t\t110/tcp\t\tpop-3\nsmtp 25/tcp mail\n",
    b"root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    b"root:x:0:\nnogroup:x:65534:\n",
    b"nameserver 127.0.0.53\nnameserver ::1\noptions edns0\nsearch example\n",
]:
    write("system-files", t)
dictionary("system-files", ["localhost", "nobody", "nogroup", "nameserver", ":", "/tcp", "#", "\n", "\t", "::1"])

# --- log targets ----------------------------------------------------------------------------------
for t in ["syslog:3,tcpproxy,daemon", "syslog:5", "file:4,/var/log/tcpproxy.log", "stdout:5", "stderr:2",
          "syslog:3,,local7", "file:0,x"]:
    write("log-target", t.encode())
dictionary("log-target", ["syslog", "file", "stdout", "stderr", ":", ",", "daemon", "local0", "mail", "auth"])

# --- tcpproxy's session machine (SessionHarness: configuration, level, names, local, peer,
# id, then the answers; the rest of a short seed reads as zeros) -----------------------------
for config in range(8):
    for level in range(3):
        for answers in (b"", b"\x01\x01\x01\x02\x02\x02", b"\x02\x00\x03\x00\x01\x00\x02\x00\x02",
                        b"\x00\x00\x00\x00\x00\x01\x00\x00"):
            write("tcpproxy-session", bytes([config, level, 1, config % 5, config % 3, 0, 0, 0, 7]) + answers)

# --- PROXY protocol headers (ProxyHeaderHarness: kind 0 IPv4, 1 IPv6, 2 IPv4-mapped; address
# bytes; port) ----------------------------------------------------------------------------------
V4 = bytes([0, 192, 0, 2, 1, 0x13, 0x88])
V6 = bytes([1]) + bytes.fromhex("20010db8000000000000000000000001") + bytes([0, 80])
MAPPED = bytes([2]) + bytes(12) + bytes([127, 0, 0, 1, 0x1f, 0x90])
for a in (V4, V6, MAPPED):
    for b in (V4, V6, MAPPED):
        write("proxy-header", a + b)
# Binary scripts: no keywords beyond what the harness reads; the mapped prefix's 0xffff.
dictionary("tcpproxy-session", [])
dictionary("proxy-header", ["\xff\xff", "\x00\x00\x00\x00"])

# --- ours against ucspi-tcp (DifferentialHarness: first byte cuts rules from the client, which
# is IP NUL HOST NUL INFO) --------------------------------------------------------------------
CLIENTS = [b"18.23.0.32", b"127.0.0.1\0localhost", b"10.0.0.7\0host.example.com\0joe", b"1.2.3.4\0\0",
           b"0.0.0.0"]
v4_rules = [r for r in RULES if r.count(":") <= 1]
for i, client in enumerate(CLIENTS):
    text = "\n".join(v4_rules[i:] + v4_rules[:i]).encode() + b"\n"
    cut = min(255, len(text) * 256 // (len(text) + len(client)))
    write("tcprules-differential", bytes([cut]) + text + client)
for r in v4_rules:
    write("tcprules-differential", bytes([200]) + r.encode() + b"\n" + b"18.23.0.32\0x.example.com\0joe")
dictionary("tcprules-differential", [":", "allow", "deny", "=", ",", "\"", "-", ".", "@", "=.", "\n", "\0"])

# --- the relay engine (RelayHarness: upload and download sizes, buffers, transfer, buffer size,
# transports, then the peers' moves; a spent input lets both finish) -------------------------
for sides in range(4):
    for transfer in range(3):
        for size in (0, 3):
            write("relay", bytes([size, 7, size, 3, 1, 0, transfer, 1, sides, 1, 1]) + bytes(size) * 2
                  + bytes([1, 0, 2, 1, 130, 0, 1, 1]))
    write("relay", bytes([20]) + bytes(20) + bytes([30]) + bytes(30) + bytes([0, 1, 0, 0, sides, 1, 1])
          + bytes([1, 200, 0, 255, 1, 254]))
dictionary("relay", [])

# --- pop3.proxy (RFC 1939's examples and the manual's forms) ---------------------------------
POP3_COMMANDS = ["USER mrose", "PASS secret", "STAT", "LIST", "LIST 2", "RETR 1", "DELE 1", "TOP 1 10",
                 "UIDL", "UIDL 2", "LAST", "NOOP", "RSET", "QUIT", "CAPA", "APOP mrose c4c9334bac560ecc979e58001b3e22fb",
                 "USER proxyjoe:joe@pop.example.org", "PASS proxypass:serverpass", "AUTH PLAIN", "STLS"]
write("pop3-command", "\r\n".join(POP3_COMMANDS).encode() + b"\r\n")
for c in POP3_COMMANDS:
    write("pop3-command", c.encode() + b"\r\n")
dictionary("pop3-command", [c.split()[0] for c in POP3_COMMANDS] + ["\r\n", " ", "0", "1", ":", "@"])
ANSWERS = [b"+OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n", b"-ERR no such message\r\n",
           b"+OK\r\nSubject: x\r\n\r\n..stuffed\r\nbare\n.\r\n.\r\n", b"* OK IMAP4 ready\r\n",
           b"+OK 120 octets\r\n" + b"x" * 300 + b"\r\n.\r\n"]
for a in ANSWERS:
    write("pop3-answer", bytes([16, 1, 7, 64, 3]) + a)
dictionary("pop3-answer", ["+OK", "-ERR", "\r\n.\r\n", "\r\n", ".."])
for user, lst in [(b"joe@pop.example.org", b"@  *.example.org,pop?.example.net"),
                  (b"proxy:joe@192.0.2.1:110", b"@% 192.0.2.1:*"),
                  (b"joe%pop", b"%  pop,*")]:
    cut = (len(lst) + 1) * 256 // (len(lst) + len(user) + 20 + 1)
    write("pop3-login", bytes([cut]) + lst + user + b"\0" * (40 - len(user)) + b"proxypass:serverpass")
dictionary("pop3-login", ["@", ":", ",", "*", "?", "%"])
for a in [argv("pop.example.org"), argv("-e"), argv("-a", "/bin/acp", "-c", "@%", "-e", "-s", "*.example.org", "-"),
          argv("-DD", "[::1]:1110", "-z", "--clamd", "/run/clamav/clamd.ctl", "pop:110"),
          argv("-d", "-D", "-t", "60", "-u", "mail", "-v", "POP_", "-q", "192.0.2.1", "pop"),
          argv("--scan-limit", "1048576", "--scan-limit-pass", "--log", "stderr:5", "pop"),
          argv("--tls-cert", "a.pem", "--tls-key", "a.key", "--tls-ocsp", "a.der", "--tls-cert", "b.pem", "--tls-key",
               "b.key", "--require-tls", "--tls-protocols", "TLSv1.3", "pop"),
          argv("--pop3s", "--tls-cert", "a.pem", "--tls-key", "a.key", "--server-tls", "stls", "--server-tls-ca",
               "ca.pem", "--tls-ciphers", "ECDHE-RSA-AES128-GCM-SHA256:TLS_AES_256_GCM_SHA384", "-D", "pop"),
          argv("--server-tls", "pop3s", "-e", "-")]:
    write("pop3proxy-args", a)
dictionary("pop3proxy-args", ["-a", "-c", "-e", "-l", "-m", "-q", "-s", "-t", "-u", "-v", "-z", "-D", "-DD", "-d",
                              "--clamd", "--rules", "--pid-file", "--log", "--help", "--no-scan-header",
                              "--scan-limit", "--scan-limit-pass", "\0", "[::1]:", "-", "--tls-cert", "--tls-key",
                              "--tls-ocsp", "--require-tls", "--pop3s", "--server-tls", "--server-tls-ca",
                              "--tls-protocols", "--tls-ciphers", "none", "stls", "pop3s", "TLSv1.2", "TLSv1.3",
                              "TLS_"])
for a in [argv(), argv("-ver"), argv("-I"), argv("-i", "--ident-timeout", "5"),
          argv("--config", "/etc/sockd.conf", "--route", "/etc/sockd.route", "--listen", "[::1]:1080",
               "--listen", "127.0.0.1:1081", "--listen", "1082"),
          argv("--foreground", "--pid-file", "/run/s.pid", "--log", "stderr:5", "--user", "nobody",
               "--passwd", "/etc/sockd.passwd"), argv("--help")]:
    write("sockd-args", a)
# bastion-args: the whole argv, argv[0] first (the name the executable was started as).
for a in [["bastion"], ["bastion", "--list"], ["/usr/bin/bastion", "sockd", "-ver"], ["/usr/sbin/tcpproxy", "-D"],
          ["tcprulescheck", "rules.cdb"], ["bastion", "nc"], ["pop3.proxy"], ["./dump_sockdfr", "-z"]]:
    write("bastion-args", "\0".join(a).encode())
dictionary("bastion-args", ["bastion", "/", "--list", "--help", "--version", "-h", "tcprules", "tcprulescheck",
                            "tcpserver", "tcpproxy", "pop3.proxy", "sockd", "make_sockdfc", "dump_sockdfc",
                            "make_sockdfr", "dump_sockdfr", "\0"])
dictionary("sockd-args", ["-ver", "-I", "-i", "--config", "--route", "--listen", "--foreground", "--pid-file",
                          "--log", "--user", "--passwd", "--ident-timeout", "--help", "\0", "[::1]:", ":", "="])
PASSWD_HASHES = ["$y$j9T$F5Jx5fExrKuPp53xLKQ..1$8c0O2L8gFA3jUVvwMFdXpZKM78kTwpdGJswaLb6IRr/",
                 "$6$saltsalt$As4wrv0kZlfch1du9WeH7qhskyLriQWySXrZzynnvi46nFnNxjdpl6ksRegrrKexvhIa/Iny8S8uF3fVWTMuC1",
                 "$5$saltsalt$i1q2ZQzc.tl/BQ6CHiENAcVDvEY6nJ1OWlWXKh94b1.",
                 "$2b$05$abcdefghijklmnopqrstuuLK7U1u6pVRmL7L1BBM2aS35PSZnDXlK",
                 "$1$saltsalt$RwMqRjSWhXMKbW72DwzGd1", "abhWCwoTZY2c6"]
write("sockd-passwd", "".join(f"user{i}:{h}\n" for i, h in enumerate(PASSWD_HASHES)).encode())
write("sockd-passwd", b"# users\n\nalice:" + PASSWD_HASHES[1].encode() + b":19000:0:99999:7:::\r\nnohash\n:x\n")
dictionary("sockd-passwd", [":", "\n", "#", "$y$j9T$", "$6$", "$5$", "$2b$05$", "$1$", "rounds=", "$"])
def sockd_step(selector, payload=b""):
    """One step of the sockd-session harness: a clock byte, the selector, then its bytes."""
    if selector < 4:
        return bytes([1, selector, len(payload)]) + payload
    return bytes([1, selector]) + payload
S4_YLEE = bytes([4, 1, 0, 23, 137, 12, 4, 15]) + b"ylee\0"
S4_CLYDE = bytes([4, 1, 0, 21, 112, 3, 24, 1]) + b"clyde\0"
S5_NAME = b"\x05\x01\x00\x05\x01\x00\x03\x0bwww.example\x04\x00"
S5_LOGIN = b"\x05\x01\x02\x01\x03bob\x06secret\x05\x01\x00\x01\x0a\x00\x00\x01\x00\x50"
for head, stream, answers in [(bytes([0, 0, 0]), S4_YLEE, [b"\x01", b"\x01"]),
                              (bytes([0, 1, 1]), S4_CLYDE, []),
                              (bytes([0, 2, 2]), S4_YLEE, []),
                              (bytes([1, 0, 0]), S5_NAME, [b"\x01\x01", b"\x01", b"\x01\x00\x01", b"\x01"]),
                              (bytes([2, 0, 3]), S5_LOGIN, [b"\x01", b"\x01\x01", b"\x01"]),
                              (bytes([0, 0, 0]), bytes([4, 2, 0, 20, 137, 12, 4, 15]) + b"ylee\0", [b"\x01", b"\x01"])]:
    steps = sockd_step(0, stream)
    for answer in answers:
        steps += sockd_step(4) + answer
    write("sockd-session", head + steps + sockd_step(9) + sockd_step(6))
    write("sockd-session", head + b"".join(sockd_step(0, stream[i:i + 1]) for i in range(len(stream))) + sockd_step(5, b"\x01"))
# UDP ASSOCIATE: granted, a datagram to 137.12.4.15:1, its answer, a stranger's, the end.
S5_UDP = b"\x05\x01\x00\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00"
PING = bytes([0, 0, 0, 1, 137, 12, 4, 15, 0, 1]) + b"ping"
write("sockd-session", bytes([0, 0, 0]) + sockd_step(0, S5_UDP) + b"\x01" + sockd_step(4)
      + bytes([1, 7, 1, 0, len(PING)]) + PING + b"\x01" + bytes([1, 8, 0, 0, 1, 4]) + b"pong"
      + bytes([1, 7, 0, 0, len(PING)]) + PING + sockd_step(5, b"\x01"))
dictionary("sockd-session", ["\x04\x01", "\x05\x01\x00", "\x05\x01\x02", "\x01\x03bob\x06secret", "ylee\0",
                             "clyde\0", "\x05\x01\x00\x03", "\x05\x01\x00\x01", "\x00\x17", "\x89\x0c",
                             "\x05\x03\x00\x01", "\x00\x00\x00\x01", "\x00\x00\x00\x03", "\x00\x00\x01"])
def session_step(kind, payload=b""):
    """One step of the pop3-session harness: a clock byte, the event's selector, its bytes."""
    if kind in (0, 4):
        return bytes([1, kind, len(payload)]) + payload
    return bytes([1, kind]) + payload


for variant in range(4):
    steps = [session_step(0, b"USER bob\r\nPASS secret\r\n")]
    if variant == 3:
        steps.insert(0, bytes([0]))  # the rules answer (no rule) before anything else
    if variant in (2, 3):
        steps += [session_step(8, bytes([1, 3])), session_step(8, bytes([1, 4, 0]))]  # acp ends, exits 0
    steps += [session_step(7, bytes([0])), session_step(4, b"+OK ready\r\n+OK\r\n+OK in\r\n"),
              session_step(0, b"STAT\r\nRETR 1\r\nXTND\r\nLIST\r\n"), session_step(4, b"+OK 1 9\r\n"),
              session_step(4, b"+OK\r\nSubject: x\r\n\r\n..dot\r\n.\r\n"),
              session_step(4, b"+OK\r\n1 9\r\n.\r\n"), session_step(0, b"QUIT\r\n"), session_step(4, b"+OK bye\r\n")]
    write("pop3-session", bytes([variant]) + b"".join(steps))
# The TLS variants (6: STLS and --require-tls with an acp; 7: --pop3s and STLS toward the
# server; 8: POP3S toward the server after --rules). A handshake's outcome is two bytes before
# the next step: 0 (tell it now), then 1 (established) or 0 (failed).
HANDSHAKE_OK = bytes([0, 1])
write("pop3-session", bytes([6]) + b"".join([
    session_step(0, b"CAPA\r\nSTLS\r\n"), HANDSHAKE_OK, session_step(0, b"USER bob\r\nPASS secret\r\n"),
    session_step(8, bytes([1, 3])), session_step(8, bytes([1, 4, 0])), session_step(7, bytes([0])),
    session_step(4, b"+OK ready\r\n+OK\r\n+OK in\r\n"), session_step(0, b"STAT\r\n"), session_step(4, b"+OK 1 9\r\n"),
    session_step(0, b"QUIT\r\n"), session_step(4, b"+OK bye\r\n")]))
write("pop3-session", bytes([7]) + HANDSHAKE_OK + b"".join([
    session_step(0, b"USER bob@pop.example\r\nPASS secret\r\n"), session_step(7, bytes([0])),
    session_step(4, b"+OK ready\r\n"), session_step(4, b"+OK begin\r\n"), HANDSHAKE_OK, session_step(4, b"+OK\r\n"),
    session_step(4, b"+OK in\r\n"), session_step(0, b"RETR 1\r\n"), session_step(4, b"+OK\r\nSubject: x\r\n\r\n.\r\n"),
    session_step(0, b"QUIT\r\n"), session_step(4, b"+OK bye\r\n")]))
write("pop3-session", bytes([8, 0]) + b"".join([
    session_step(0, b"USER bob\r\nPASS secret\r\n"), session_step(7, bytes([0])), HANDSHAKE_OK,
    session_step(4, b"+OK ready\r\n+OK\r\n+OK in\r\n"), session_step(0, b"QUIT\r\n"), session_step(4, b"+OK bye\r\n")]))
dictionary("pop3-session", ["+OK", "-ERR", "\r\n.\r\n", "\r\n", "USER ", "PASS ", "RETR 1", "TOP 1 0", "LIST",
                            "QUIT", "CAPA", "STLS\r\n", "@", ":"])
for r in [b"stream: OK\0", b"stream: Eicar-Test-Signature FOUND\0", b"INSTREAM size limit exceeded. ERROR\0",
          b"ClamAV 1.0.7/27500/Mon Dec  1 09:00:00 2026\0", b"UNKNOWN COMMAND\0"]:
    write("clamd-reply", r)
dictionary("clamd-reply", ["stream: ", "OK", " FOUND", " ERROR", "ClamAV ", "\0", ":"])
for m in [b"From: a@b\r\nTo: c@d\r\nSubject: s\r\n\tfolded\r\nDate: Tue, 1 Dec 2026 10:00:00 +0100\r\n"
          b"Message-ID: <1@b>\r\n\r\nbody\r\n", b"Subject: \xc3\xa9\x01\r\n\r\n", b"no header at all"]:
    write("scan-notice", bytes([20]) + b"Eicar-Test-Signature" + m)
dictionary("scan-notice", ["From:", "To:", "Subject:", "Date:", "Message-ID:", "\r\n", "\r\n\r\n", "\t", "."])

# --- sockd's SOCKS wire layer (SocksHarnesses: a setting byte, a piece seed, then the client's
# bytes; setting bit 0 --passwd, bit 1 username/password preferred, bit 2 end of file, bit 3
# even-length passwords pass), the streams of Tests/SocksTests ---------------------------------
def socks4(cd, port, ip, user=b"", host=None):
    out = bytes([4, cd]) + struct.pack(">H", port) + bytes(ip) + user + b"\0"
    return out + host + b"\0" if host is not None else out


def socks5_address(kind, value, port):
    if kind == 1 or kind == 4:
        return bytes([kind]) + bytes(value) + struct.pack(">H", port)
    return bytes([3, len(value)]) + value + struct.pack(">H", port)


def socks5(cmd, kind, value, port):
    return bytes([5, cmd, 0]) + socks5_address(kind, value, port)


def login(user, password):
    return bytes([1, len(user)]) + user + bytes([len(password)]) + password


V6_ADDRESS = bytes.fromhex("20010db8000000000000000000000001")
HTTP = b"GET / HTTP/1.0\r\n\r\n"
SOCKS_STREAMS = [
    socks4(1, 80, [192, 0, 2, 1], b"joe") + HTTP,
    socks4(2, 8080, [10, 0, 0, 7]),
    socks4(1, 443, [0, 0, 0, 1], b"ann", b"www.example.org"),
    socks4(1, 1, [0, 0, 0, 1], b"u" * 255, b"h" * 255),
    socks4(3, 80, [1, 2, 3, 4]),
    bytes([4, 1, 0, 80, 1, 2, 3, 4]) + b"A" * 300,
    socks4(1, 80, [0, 0, 0, 9], b"", b""),
    b"\x05\x01\x00" + socks5(1, 1, [192, 0, 2, 1], 80) + HTTP,
    b"\x05\x01\x00" + socks5(2, 4, V6_ADDRESS, 8080),
    b"\x05\x01\x00" + socks5(3, 1, [0, 0, 0, 0], 0),
    b"\x05\x01\x00" + socks5(1, 3, b"www.example.org", 443) + HTTP,
    b"\x05\x02\x00\x02" + login(b"bob", b"secret") + socks5(1, 1, [192, 0, 2, 1], 80) + HTTP,
    b"\x05\x01\x02" + login(b"bob", b"guess") + socks5(1, 3, b"a.example", 80),
    b"\x05\x01\x02" + login(b"n" * 255, b"p" * 255) + socks5(1, 3, b"a" * 255, 1),
    b"\x05\x01\x00\x05\x09\x00\x01\x01\x02\x03\x04\x00\x50",
    b"\x05\x01\x00\x05\x01\x00\x02\x01\x02\x03\x04\x00\x50",
    b"\x05\x01\x00\x05\x01\x00\x03\x00\x00\x50",
    b"\x05\x01\x00\x05\x01\x00\x03\x02a\x00\x00\x50",
    b"\x05\x01\x02\x02\x03bob",
    b"\x05\x01\x02\x01\x00\x01x",
    b"\x05\x00",
    b"\x05\x01\x00\x05\x01",
    HTTP,
]
for setting in (0, 1, 2, 4, 9, 14):
    for i, stream in enumerate(SOCKS_STREAMS):
        write("socks-request", bytes([setting, i * 37 % 256]) + stream)
dictionary("socks-request", ["\x04\x01", "\x04\x02", "\x05\x01\x00", "\x05\x02\x00\x02", "\x05\x01\x02",
                             "\x01\x03bob\x06secret", "\x05\x01\x00\x01", "\x05\x02\x00\x04", "\x05\x03\x00\x03",
                             "\x00\x00\x00\x01", "\x00\x50", "\x00", "\xff"])

for datagram in [b"\0\0\0" + socks5_address(1, [192, 0, 2, 1], 53) + b"query",
                 b"\0\0\0" + socks5_address(4, V6_ADDRESS, 5353) + b"\0payload",
                 b"\0\0\0" + socks5_address(3, b"dns.example", 53),
                 b"\0\0\0" + socks5_address(4, bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 1]), 53) + b"x",
                 b"\0\0\x01" + socks5_address(1, [192, 0, 2, 1], 53) + b"fragment",
                 b"\xff\xff\0" + socks5_address(1, [192, 0, 2, 1], 53),
                 b"\0\0\0\x02\x01\x02\x03\x04\x00\x35", b"\0\0\0\x03\x05a"]:
    write("socks-udp", datagram)
dictionary("socks-udp", ["\x00\x00\x00\x01", "\x00\x00\x00\x03", "\x00\x00\x00\x04", "\x00\x35", "\xff\xff"])

# --- sockd.conf and sockd.route (the CSTC example, the tests' forms) and their frozen forms ------
SOCKD_CONF = [
    "deny   *=bonnie,clyde 128.12.6.0 255.255.255.0 : /usr/ucb/mail -s 'Rejected SOCKS access by %u' $USER",
    "permit *=ylee 128.12.6.4 255.255.255.255 137.12.0.0 255.255.0.0",
    "deny   128.12.0.0 255.255.0.0 eq telnet",
    "permit 128.12.0.0 255.255.0.0",
    "#NO_IDENTD: /usr/ucb/mail -s 'please run identd on %A' $USER",
    "#BAD_ID: /usr/ucb/mail -s '%U pretends to be %u on %A' $USER",
]
SOCKD_MORE = [
    "# a comment", "",
    "permit ?=I *=ann,/u 2001:db8::/32 .Example.COM. whatever neq smtp : echo %u",
    "deny ?=n host.example 1.2.3.4 10.0.0.0 255.0.0.255 ge 1024",
    "permit ?=i ::1 ::ffff:ffff:0:0 ALL x lt 1",
    "permit *=/e,/u eq 0.0.0.0 gt 65535",
    "permit ::1 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff :/bin/true",
    "permit 2001:db8::1 ffff:ffff:: : echo a:b # not the command",
    "deny ALL 0.0.0.0 .evil.org x le 1023",
    "permit *= 10.0.0.0/8 0.0.0.0/0 eq 80",
    "permit 10.0.0.0 255.255.0",
    "permitt 10.0.0.0/8",
    "permit ALL x eq nosuch",
    "permit *=/missing ALL x",
]
write("sockd-conf", "\n".join(SOCKD_CONF).encode() + b"\n")
write("sockd-conf", "\r\n".join(SOCKD_CONF + SOCKD_MORE).encode() + b"\r\n")
for line in SOCKD_CONF + SOCKD_MORE:
    write("sockd-conf", line.encode() + b"\n")
dictionary("sockd-conf", [
    "permit", "deny", "?=I", "?=i", "?=n", "*=", "ALL", "eq", "neq", "lt", "gt", "le", "ge", ":", " : ", "#",
    "#NO_IDENTD:", "#BAD_ID:", "/", ".", ",", "::", "::1", "255.255.255.0", "0.0.0.0", "ffff::", "/u", "/e",
    "telnet", "smtp", "%u", "\n", "\t", "\r\n", " "])

SOCKD_ROUTE = [
    "# interface     destination      mask",
    "128.12.6.1      128.12.0.0       255.255.0.0",
    "192.168.1.1     .inside.example  0.0.0.0",
    "2001:db8::1     2001:db8::/32",
    "gw.example.     far.example.org  0.0.0.0",
    "10.0.0.1        0.0.0.0          0.0.0.0   # everything else",
    "10.0.0.1 ALL x",
    "10.0.0.1",
    "1.2.3 10.0.0.0/40",
]
write("sockd-route", "\n".join(SOCKD_ROUTE).encode() + b"\n")
for line in SOCKD_ROUTE:
    write("sockd-route", line.encode() + b"\n")
dictionary("sockd-route", ["ALL", "/", ".", "::", "::1", "255.255.255.0", "0.0.0.0", "ffff::", "#", "\n", " "])

# Frozen seeds from the tools (built with swift build; without them, none): each file as it is (mode byte 0 for a
# configuration, 2 for routes) and its body alone behind mode 1 or 3 (the harness adds a header
# with a correct checksum, so the fuzzer reaches the body).
BIN = None
for config in ("release", "debug"):
    d = os.path.join(REPO, ".build", config)
    if os.access(os.path.join(d, "make_sockdfc"), os.X_OK) and os.access(os.path.join(d, "make_sockdfr"), os.X_OK):
        BIN = d
        break
if BIN:
    import tempfile
    with tempfile.TemporaryDirectory() as t:
        frozen = []
        # Without user files: a frozen file holds their path, and a temporary one would make
        # the seeds differ on every run.
        confs = ["\n".join(SOCKD_CONF), "\n".join(l for l in SOCKD_MORE[:10] if "/u" not in l and "/e" not in l),
                 "permit 10.0.0.0/8"]
        for i, text in enumerate(confs):
            src, out = os.path.join(t, f"c{i}"), os.path.join(t, f"c{i}.fc")
            with open(src, "w") as f:
                f.write(text + "\n")
            subprocess.run([os.path.join(BIN, "make_sockdfc"), src, out], check=True)
            with open(out, "rb") as f:
                frozen.append((0, f.read()))
        src, out = os.path.join(t, "r"), os.path.join(t, "r.fr")
        with open(src, "w") as f:
            f.write("\n".join(SOCKD_ROUTE[:7]) + "\n")
        subprocess.run([os.path.join(BIN, "make_sockdfr"), src, out], check=True)
        with open(out, "rb") as f:
            frozen.append((2, f.read()))
    for mode, data in frozen:
        write("sockd-frozen", bytes([mode]) + data)
        write("sockd-frozen", bytes([mode | 1]) + data[20:])
dictionary("sockd-frozen", ["\x89SOCKDFC", "\x89SOCKDFR", "\x00\x01\x00\x00", "\x00\x00\x00\x00", "\x00\x00\x00\x01",
                            "\x01\x04", "\x01\x10", "\xff\xff\xff\xff", "\xff", "/u"])

# --- TLS (TLSServerHarness: a flags byte, cut positions, then a client's bytes; TLSWordsHarness:
# lines of versions, ciphers and names) --------------------------------------------------------
# Python's ssl makes the clients (its own random numbers: the files have fixed names and are
# made only when missing, so running this again changes nothing; delete them to make them
# anew). ClientHellos need nothing else. Whole conversations (handshake with the client
# certificate below, a request echoed, close_notify; a resumption of a session got so) are
# recorded against the harness itself, whose random numbers are fixed, so they finish on
# every replay: they need bastion-fuzz (scripts/fuzz builds it; BASTION_FUZZ_BIN, or
# .build-fuzz/{debug,release}/bastion-fuzz) and are left alone without it.
import ssl
import tempfile

import re


def harness_pem(name):
    """A PEM constant of Sources/FuzzHarnesses/TLSServerHarness.swift, as text: one copy."""
    with open(os.path.join(REPO, "Sources", "FuzzHarnesses", "TLSServerHarness.swift")) as f:
        source = f.read()
    body = re.search(r'static let %s = """\n(.*?)"""' % name, source, re.S).group(1)
    return "".join(line.strip() + "\n" for line in body.strip().split("\n"))


TLS_CA = harness_pem("clientCA")
# The client certificate the recorded clients show (O=Bastion, CN=fuzz-client, by the CA above;
# made with the openssl command like the harness's own; a test key, public on purpose).
TLS_CLIENT = """-----BEGIN CERTIFICATE-----
MIIBwDCCAWagAwIBAgIUTYlVKQoScVW0kcSTAIqK6PCkbWIwCgYIKoZIzj0EAwIw
GjEYMBYGA1UEAwwPQmFzdGlvbiBmdXp6IENBMCAXDTI2MTIwNDE4MTEyMVoYDzIx
MjYxMTEwMTgxMTIxWjAoMRAwDgYDVQQKDAdCYXN0aW9uMRQwEgYDVQQDDAtmdXp6
LWNsaWVudDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABEKdt6ZJEiCrGBiHBHiw
n/0R91VrStpqIZJKSqTHaadfwysCzlIL0aOOdWprPXd1dfNZcLZRmuuB1oQcH7Tj
fK+jejB4MBYGA1UdEQQPMA2CC2Z1enotY2xpZW50MAkGA1UdEwQCMAAwEwYDVR0l
BAwwCgYIKwYBBQUHAwIwHQYDVR0OBBYEFO2e2LfVxytuBshu+Hrvufp+R4dYMB8G
A1UdIwQYMBaAFPuoWrtNhVoo4B8GWwBHU1WXquPoMAoGCCqGSM49BAMCA0gAMEUC
IDkxdkp6shSRM0W7liSuhieH8ISN3+HIg9cU6oPbrNhZAiEAlp/WP61fOsiKACcv
wMEULpfNvXvL+gpRBCB99y+xS8I=
-----END CERTIFICATE-----
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgHQd88yyAVeUR9pwI
15oB/fIGM2cNr+ZNA0sHd9OuBR6hRANCAARCnbemSRIgqxgYhwR4sJ/9EfdVa0ra
aiGSSkqkx2mnX8MrAs5SC9GjjnVqaz13dXXzWXC2UZrrgdaEHB+043yv
-----END PRIVATE KEY-----
"""
TLS_CORPUS = os.path.join(ROOT, "corpus", "tls-server")


def tls_seed(name, make):
    """Fuzz/corpus/tls-server/NAME, made by make() only when it is missing (None: not made)."""
    path = os.path.join(TLS_CORPUS, name)
    if os.path.exists(path):
        return
    data = make()
    if data is not None:
        os.makedirs(TLS_CORPUS, exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


TLS_CONTEXTS = {}


def tls_client(maximum, sni, certificate=True, session=None):
    # One context per kind of client: a session resumes only from the context that got it.
    key = (maximum, sni is None, certificate)
    if key not in TLS_CONTEXTS:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cadata=TLS_CA)
        context.check_hostname = sni is not None
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.maximum_version = maximum
        if certificate:
            with tempfile.NamedTemporaryFile("w", suffix=".pem") as f:
                f.write(TLS_CLIENT)
                f.flush()
                context.load_cert_chain(f.name)
        TLS_CONTEXTS[key] = context
    context = TLS_CONTEXTS[key]
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    return context.wrap_bio(incoming, outgoing, server_hostname=sni, session=session), incoming, outgoing


def client_hello(maximum, sni, status=False):
    """A ClientHello as Python's ssl sends it, with status_request (OCSP) added when asked."""
    client, _, outgoing = tls_client(maximum, sni)
    try:
        client.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    if status:
        # Record (5 bytes), handshake header (4), version, random, session id, ciphers,
        # compression, then the extensions: status_request (type 5, OCSP, no responders or
        # extensions) appended, and the three lengths grown by its 9 bytes.
        at = 4 + 2 + 32
        body = bytearray(hello[5:])
        at += 1 + body[at]
        at += 2 + int.from_bytes(body[at:at + 2], "big")
        at += 1 + body[at]
        extra = bytes.fromhex("000500050100000000")
        body[at:at + 2] = (int.from_bytes(body[at:at + 2], "big") + len(extra)).to_bytes(2, "big")
        body += extra
        body[1:4] = (len(body) - 4).to_bytes(3, "big")
        hello = hello[:3] + len(body).to_bytes(2, "big") + bytes(body)
    return hello


def fuzz_binary():
    if os.environ.get("BASTION_FUZZ_BIN"):
        return os.environ["BASTION_FUZZ_BIN"]
    for config in ("debug", "release"):
        path = os.path.join(REPO, ".build-fuzz", config, "bastion-fuzz")
        if os.access(path, os.X_OK):
            return path
    return None


def tls_server(data):
    """What the harness's server sends to a client that sends `data` (its flags byte first)."""
    with tempfile.TemporaryDirectory() as t:
        given, sent = os.path.join(t, "input"), os.path.join(t, "sent")
        with open(given, "wb") as f:
            f.write(data)
        env = dict(os.environ, BASTION_FUZZ_TLS_TRANSCRIPT=sent, SWIFT_BACKTRACE="enable=no")
        subprocess.run([fuzz_binary(), "tls-server", given], env=env, check=True, capture_output=True)
        with open(sent, "rb") as f:
            return f.read()


def conversation(maximum, sni, certificate=True, session=None, flags=b"\x00", request=b"GET / HTTP/1.0\r\n\r\n"):
    """A client's whole conversation with the harness's server, and the session it got (None when the
    server refused it)."""
    client, incoming, outgoing = tls_client(maximum, sni, certificate, session)
    sent, fed = b"", 0

    def turn():
        nonlocal sent, fed
        sent += outgoing.read()
        answer = tls_server(flags + sent)
        incoming.write(answer[fed:])
        fed = len(answer)

    try:
        for _ in range(6):
            try:
                client.do_handshake()
                break
            except ssl.SSLWantReadError:
                turn()
        client.write(request)
        turn()
        echoed = client.read(len(request))
        assert echoed == request, f"the harness echoed {echoed!r}"
        got = client.session
        try:
            client.unwrap()
        except ssl.SSLWantReadError:
            pass
        sent += outgoing.read()
        return flags + sent, got
    except ssl.SSLError as e:
        # Refused (no certificate): what the client sent up to the alert.
        if certificate:
            raise SystemExit(f"make-seeds: the harness's TLS server refused a {maximum} client of {sni}: {e}")
        sent += outgoing.read()
        return flags + sent, None


TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
for version, label in ((TLS13, "tls13"), (TLS12, "tls12")):
    for sni in ("localhost", "other.test", "a.wild.test", None):
        tag = sni or "no-sni"
        tls_seed(f"hello-{label}-{tag}", lambda: b"\x00" + client_hello(version, sni))
        tls_seed(f"hello-{label}-{tag}-status", lambda: b"\x00" + client_hello(version, sni, status=True))
    # The ClientHello a byte at a time, and cut inside the record header and the handshake header.
    tls_seed(f"hello-{label}-bytewise", lambda: b"\x10" + client_hello(version, "localhost"))
    tls_seed(f"hello-{label}-cut", lambda: b"\x02\x00\x03\x00\x07" + client_hello(version, "localhost"))
if fuzz_binary():
    for version, label in ((TLS13, "tls13"), (TLS12, "tls12")):
        for sni in ("localhost", "other.test", None):
            tls_seed(f"conversation-{label}-{sni or 'no-sni'}", lambda: conversation(version, sni)[0])
        # A session got in a conversation of its own (its ticket read), then resumed.
        for sni in ("localhost", "other.test"):
            tls_seed(f"resumption-{label}-{sni}",
                     lambda: conversation(version, sni, session=conversation(version, sni)[1])[0])
        tls_seed(f"no-certificate-{label}", lambda: conversation(version, "localhost", certificate=False)[0])
        # Through reads only, and in pieces of 7 bytes: the same conversation, other paths.
        tls_seed(f"conversation-{label}-localhost-reads", lambda: conversation(version, "localhost", flags=b"\x08")[0])
        tls_seed(f"conversation-{label}-localhost-pieces", lambda: conversation(version, "localhost", flags=b"\x70")[0])
else:
    print("make-seeds: no bastion-fuzz (scripts/fuzz builds it): the recorded TLS conversations are left as they are")
dictionary("tls-server", [
    "\x16\x03\x01", "\x16\x03\x03", "\x17\x03\x03", "\x15\x03\x03\x00\x02", "\x14\x03\x03\x00\x01\x01",
    "\x03\x01", "\x03\x03", "\x03\x04", "\x01\x00", "\x0b\x00", "\x0f\x00", "\x10\x00", "\x14\x00\x00\x20",
    "\x00\x00", "\x00\x05", "\x00\x0a", "\x00\x0b", "\x00\x0d", "\x00\x10", "\x00\x16", "\x00\x17", "\x00\x23",
    "\x00\x29", "\x00\x2a", "\x00\x2b", "\x00\x2d", "\x00\x31", "\x00\x33", "\xff\x01",
    "\x00\x05\x00\x05\x01\x00\x00\x00\x00", "\x00\x2b\x00\x03\x02\x03\x04", "\x00\x2d\x00\x02\x01\x01",
    "\x00\x1d", "\x00\x17\x00\x41\x04", "\x13\x01", "\x13\x02", "\x13\x03", "\xc0\x2b", "\xc0\x2f", "\xcc\xa9",
    "\x04\x03", "\x08\x04", "\x08\x07", "\x00\x0c\x00\x00\x09localhost", "\x00\x0d\x00\x00\x0aother.test",
    "localhost", "other.test", "a.wild.test", "\x00",
])
TLS_WORDS = [
    "TLSv1.2,TLSv1.3", "tlsv1.3", "1.3 1.2", "TLSv1:TLSv1.1", "TLSv1.1,TLSv1.3", "SSLv3,TLSv1.2", ",", "TLSv1.0",
    "ECDHE-RSA-AES128-GCM-SHA256:TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "HIGH", "::",
    "HIGH:!aNULL:@SECLEVEL=0", "TLS_NOT_A_SUITE",
]
TLS_NAMES = [
    ("Example.ORG", "example.org."), ("*.example.org", "www.example.org"), ("*.example.org", "example.org"),
    ("*.example.org", "a.b.example.org"), ("*.org", "example.org"), ("w*.example.org", "www.example.org"),
    ("", "example.org"), ("*.wild.test", "A.WILD.TEST."), ("localhost", "LOCALHOST"),
]
write("tls-words", "\n".join(TLS_WORDS).encode())
for pattern, name in TLS_NAMES:
    write("tls-words", f"{pattern}\n{name}".encode())
write("tls-words", b"localhost\n*.wild.test other.test\nexact.wild.test\na.wild.test")
write("tls-words", b"TLSv1.2\nlocalhost\n*.wild.test other.test\nexact.wild.test\nLOCALHOST.")
dictionary("tls-words", [
    "TLSv1", "TLSv1.0", "TLSv1.1", "TLSv1.2", "TLSv1.3", "tls", "tlsv", "1.0", "1.1", "1.2", "1.3", "SSLv3",
    ",", ":", " ", "\n", "*.", ".", "*", "TLS_", "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305", "HIGH",
    "DEFAULT", "ALL", "!aNULL", "@SECLEVEL=0", "+", "-", "localhost", "other.test", "wild.test", "xn--",
    # UTF-8 that Unicode-aware comparison treats specially (the standard library is not
    # instrumented, so the fuzzer cannot find these by itself): a combining acute accent, the
    # Kelvin sign, É and é, dotted İ, the ideographic and the fullwidth full stop.
    "\xcc\x81", "\xe2\x84\xaa", "\xc3\x89", "\xc3\xa9", "\xc4\xb0", "\xe3\x80\x82", "\xef\xbc\x8e",
])
