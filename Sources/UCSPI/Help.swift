/// `--help` texts. The tools otherwise speak exactly as djb's; `--help` is the one addition.
public enum Help {
    public static let tcprules = """
        usage: tcprules rules.cdb rules.tmp < rules.txt

        Compiles access rules read from standard input into rules.cdb for tcpserver -x.
        The rules are written to rules.tmp, synced, and renamed over rules.cdb, so a
        running tcpserver sees either the old or the new rules, never a mix.

        A rule is ADDRESS:allow or ADDRESS:deny, optionally followed by ,NAME="value"
        (any repeated character may stand for the quotes). ADDRESS is one of:
          1.2.3.4  2001:db8::1    an exact address
          10.  2001:db8::         a prefix ending in . or :
          1.2.3.40-50  10.2-3.    a range of one dotted component
          user@1.2.3.4            ident answer and address
          user@=host  =host       host names from reverse DNS
          =.example.com  =        domains, and any named host
          (empty)                 the default rule, as in  :deny
        Lines starting with # and blank lines are ignored.

        Exit status: 0 done, 100 usage or syntax error, 111 system error.
        See tcprules(1).

        """

    public static let tcprulescheck = """
        usage: tcprulescheck rules.cdb

        Shows which rule of rules.cdb tcpserver would apply to the client described by
        $TCPREMOTEIP (default 0.0.0.0), $TCPREMOTEHOST and $TCPREMOTEINFO, and what it does.

        Exit status: 0 done, 100 usage error, 111 unreadable or damaged rules.cdb.
        See tcprulescheck(1).

        """

    public static let tcpserver = """
        usage: tcpserver [ -461UXpPhHrRoOdDqQv ] [ -c limit ] [ -x rules.cdb ] [ -B banner ]
                         [ -g gid ] [ -u uid ] [ -b backlog ] [ -l localname ] [ -t timeout ]
                         [ -I interface ] host port program [ arg ... ]

        Accepts TCP connections on host:port and runs program for each, with the connection
        as its standard input and output and the client described in $TCPREMOTEIP and friends.
        host 0 listens on every IPv6 and IPv4 address.

          -c n     run at most n programs at once (40)     -b n   listen backlog (20)
          -x cdb   follow the rules in cdb (see tcprules)   -X     allow a missing cdb
          -B text  write text to the client first           -1     print the local port
          -u uid   -g gid   drop to uid/gid after binding   -U     take them from $UID/$GID
          -h/-H    look up / don't look up the client's name in DNS ($TCPREMOTEHOST)
          -p/-P    paranoid: drop a name whose addresses don't include the client's
          -r/-R    ask / don't ask the client's identd ($TCPREMOTEINFO); -t secs timeout (26)
          -l name  use name as $TCPLOCALHOST instead of looking it up
          -o/-O    keep / remove IP options     -d/-D  delay / no delay (TCP_NODELAY)
          -4       IPv4 only                    -6     IPv4 clients shown as ::ffff:a.b.c.d
          -I if    bind to this interface (IPv6 link-local)
          -v/-Q/-q verbose / normal / quiet messages on standard error

        DNS queries go to $DNSCACHEIP if set, else to /etc/resolv.conf's nameservers.
        Exit status: 100 usage error, 111 system error. See tcpserver(1).

        """
}
