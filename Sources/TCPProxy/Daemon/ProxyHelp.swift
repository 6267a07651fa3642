/// `tcpproxy --help`.
enum ProxyHelp {
    static let text = """
        usage: tcpproxy [options] [server]

        A TCP proxy: both tcpproxy manual pages (spreadspace's and Wolfgang Zekoll's) in one program.
        With -p/-r/-o it forwards one port; with --bind and a server it serves one port; with a server
        and a connection on standard input (inetd, tcpserver, systemd) it serves that connection;
        otherwise it reads its configuration file (either dialect) and serves every service in it.
        A server is host[:port] (the port defaults to the one the client came to) or a path starting
        with / or . to a handler program (the connection is its stdin and stdout).

        spreadspace's options
          -h, --help                     this text
          -D, --nodaemonize              stay in the foreground
          -u, --username NAME            run as this user          -g, --groupname NAME  and group
          -C, --chroot PATH              chroot after binding      -P, --write-pid FILE  pid file
          -L, --log TARGET:LEVEL[,PARAMS]  syslog:3,tcpproxy,daemon (default) | file:LEVEL,PATH |
                                         stdout:LEVEL | stderr:LEVEL; levels 0 (off) to 5 (debug)
          -U, --debug                    foreground, and log to stdout at level 5
          -l, --local-addr HOST          listen on HOST (default: every IPv6 and IPv4 address)
          -t, --local-resolv ipv4|ipv6   family for the local address
          -p, --local-port SERVICE       listen on this port (needs -r and -o)
          -r, --remote-addr HOST         forward to HOST           -o, --remote-port SERVICE
          -R, --remote-resolv ipv4|ipv6  family for the remote (and source) address
          -s, --source-addr HOST         connect from this address
          -b, --buffer-size BYTES        per direction (default 10240)
          -c, --config FILE              configuration file (default /etc/tcpproxy.conf)

        Zekoll's options (long names where his letters are spreadspace's)
          -a PROGRAM, --acp PROGRAM      access control program: exit 0 grants the connection
          -d, --debug-trace              log every step of every connection at level 3 (what the
                                         debug directive turns on for its handlers)
          -f FILE                        configuration file (as -c)
          -v PREFIX, --varprefix PREFIX  variable prefix for handlers (default PROXY_)
          -w NAME, --writefile NAME      record each connection in NAME.PID.log
          -y, --clear-environment        handlers get only the PROXY_ variables
          -z, -zz, -zzz, --list          print the configured ports (twice: the basic configuration;
                                         three times: the configuration as a file of its dialect)
          --bind [INTERFACE:]PORT        Zekoll's -b: serve PORT (standalone) with the server argument
          --logname NAME                 Zekoll's -l: syslog name
          --standalone                   Zekoll's -s: listen even without --bind
          --timeout SECONDS              Zekoll's -t: idle timeout of a connection (60; 0 = none)
          (Zekoll's -p pidfile is -P)

        Bastion's
          --rules FILE.cdb               check each client against a tcprules database first
          --proxy-protocol v1|v2         send a PROXY protocol header to the server
          --no-client-names              PROXY_CLIENTNAME is the client's address: no /etc/hosts or
                                         DNS lookup of its name (which waits 4 s at most)
          --tls-cert FILE --tls-key FILE clients speak TLS: certificate chain and key (PEM); repeat
                                         the pair for more certificates, chosen by SNI
          --tls-ocsp FILE                staple this OCSP response (DER) to the last --tls-cert
          --tls-client-ca FILE           require client certificates of this CA
          --remote-tls                   speak TLS to the server, verified (the system's store)
          --remote-tls-ca FILE           verify the server against this CA
          --remote-tls-name NAME         SNI and the name checked (default: the remote host)
          --remote-tls-insecure          TLS to the server without verifying it (logged)
          --remote-tls-cert FILE --remote-tls-key FILE  the certificate shown to a server that asks
          --tls-protocols LIST           TLS versions (default TLSv1.2,TLSv1.3)
          --tls-ciphers LIST             OpenSSL cipher list; TLS_ words are TLS 1.3 suites

        Signals: HUP reloads the configuration file, USR1 logs the listeners, USR2 the connections,
        TERM and INT exit. See tcpproxy(8).

        """
}
