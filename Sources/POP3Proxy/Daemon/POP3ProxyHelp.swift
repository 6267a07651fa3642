/// `pop3.proxy --help`.
enum POP3ProxyHelp {
    static let text = """
        usage: pop3.proxy [options] server
               pop3.proxy -D [options] server           (a daemon on port 110, 995 with --pop3s)
               pop3.proxy -D -D [options] [interface:]port server

        A POP3 application gateway: it greets the client, takes USER and PASS itself, logs in to
        the server, and forwards only USER, PASS, LIST, STAT, RETR, UIDL, DELE, TOP, LAST, NOOP,
        RSET and QUIT, each answer byte for byte. server is host[:port] (port 110, 995 with
        --server-tls pop3s), [v6addr]:port, or - for none (with -e). Without -D it serves the
        connection on standard input (tcpserver, tcpproxy's exec, inetd, a systemd socket unit
        with Accept=yes).

          -a acp         access control program, run before the server connection (PROXY_ variables;
                         its output goes to the client, exit 0 grants)
          -c chars       characters that separate user and server with -e (default @; the last wins)
          -e             the client selects the server: USER name@server
          -l dir         after each login write dir/CLIENT-IP: EPOCH CLIENT-IP USER SERVER
          -m             fewer log lines (no line per command)
          -q srcip       connect to the server from this address
          -s list        servers a client may select (comma-separated, ? and * wildcards)
          -t seconds     inactivity timeout on both sides (default 600, 0 for none)
          -u user        user to serve as when started as root (default nobody)
          -v prefix      prefix of the access control program's variables (default PROXY_)
          -z             scan every retrieved message with clamd
          -D, -DD        stand-alone daemon (see above)
          -d             debug: log to standard error, stay in the foreground
          --clamd ADDR   clamd's host:port (default 127.0.0.1:3310) or its unix socket's path
          --rules FILE   a tcprules database applied to the client, as tcpserver -x
          --pid-file F   the daemon's pid file
          --log TARGET   syslog:LEVEL,NAME,FACILITY | file:LEVEL,PATH | stdout:LEVEL | stderr:LEVEL
                         (default syslog, facility mail, level notice; stderr with -d)
          --scan-limit BYTES, --scan-limit-pass, --no-scan-header   scanning (with -z)
          --tls-cert FILE --tls-key FILE   certificate and key for clients: STLS offered in CAPA
                         (repeat the pair for SNI); --tls-ocsp FILE staples a response to the last
          --require-tls  refuse USER and PASS before STLS
          --pop3s        clients speak TLS from the first byte (POP3S)
          --server-tls none|stls|pop3s   TLS toward the server, always verified
          --server-tls-ca FILE           the CA it is verified against (default: the system's)
          --tls-protocols LIST, --tls-ciphers LIST   versions (TLSv1.2,TLSv1.3) and ciphers
          --help         this text

        """
}
