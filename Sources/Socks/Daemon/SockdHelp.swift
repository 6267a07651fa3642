/// `sockd --help`.
enum SockdHelp {
    static let text = """
        usage: sockd [-ver | -I | -i] [options]

        A SOCKS server (SOCKS4, SOCKS4a and SOCKS5) under sockd.conf's rules. Started with a
        connected socket on standard input (inetd, tcpserver) it serves that one client;
        otherwise it runs stand-alone.

          -ver                   print the version and what this sockd supports, and exit
          -I                     verify every client's user with identd (RFC 1413): deny when
                                 identd cannot be reached or names another user
          -i                     the same, denying only when identd names another user
          --config PATH          the configuration (default /etc/sockd.fc if it exists, else
                                 /etc/sockd.conf; frozen or text, told apart by content)
          --route PATH           the route file (default /etc/sockd.fr, else /etc/sockd.route,
                                 when one exists)
          --listen [ADDR]:PORT   where to listen (repeatable; IPv6 as [::1]:1080; default
                                 port 1080 of every address)
          --foreground           stay in the foreground (stand-alone mode)
          --pid-file PATH        the pid file (default /run/sockd.pid)
          --log TARGET           log to TARGET (as tcpproxy's -L; default syslog, facility
                                 daemon, ident sockd)
          --user NAME            serve as NAME once the listeners are bound
          --passwd FILE          require SOCKS5 username/password, checked against FILE's
                                 user:HASH lines (crypt(3) hashes, as mkpasswd prints)
          --ident-timeout SECS   how long to wait for identd (default 15)
          --help                 this text

        Signals: HUP re-reads the configuration and routes (a file with errors keeps the old
        ones), USR1 logs them, TERM exits.

        """
}
