import GatewayKit
import TLS

// MARK: - The configuration

extension ProxyConfiguration {
    /// What the log says at every load about TLS toward a server that is not verified
    /// (`remote-tls insecure`, --remote-tls-insecure): explicit, and never silent.
    public var insecureTLSNotices: [String] {
        services.flatMap { service in
            service.handlers.compactMap { handler -> String? in
                guard let tls = handler.remoteTLS, !tls.verify else { return nil }
                let place = handler.line > 0 ? "\(path):\(handler.line)" : path
                return "\(place): port \(service.port): TLS toward the server is not verified (insecure)"
            }
        }
    }

    /// Whether any handler reads certificate or key files (SIGHUP re-reads them even when
    /// the configuration is the command line's).
    public var usesTLSFiles: Bool {
        services.contains { $0.handlers.contains { $0.tls != nil || $0.remoteTLS?.ca != nil } }
    }
}

/// Everything a tcpproxy configuration file says, in one model for both dialects.
///
/// Zekoll's dialect (`port`, `interface`, `server`, ...) and spreadspace's (`listen * 8080 { remote: ... };`)
/// both parse into this: a list of services, each a listening (address, port) with handlers chosen by the local
/// address a connection arrives on. Parsing returns a whole configuration or a ``ConfigurationError``, never a
/// half-applied one, so a daemon reloading on SIGHUP can keep its old configuration when the new one is wrong.
///
/// ## The file
/// - Dialect: a file whose first directive is `listen` with a `{` somewhere after it is spreadspace's; any other
///   file is Zekoll's (``ConfigurationDialect/detect(in:)``). The two do not mix within one file.
/// - Comments: `#` to the end of the line. In Zekoll's dialect only at the start of a word (so that
///   `exec prog a#b` keeps its argument); in spreadspace's anywhere, as its own lexer does.
/// - Zekoll's dialect: one directive per line, words separated by blanks, no quoting. Settings before the first
///   `port` are defaults for every handler: `acp`, `timeout`, `setenv` as in the manual page, and likewise `uid`,
///   `gid`, `user`, `logname`, `writefile`, `debug`, `rules` and `proxy-protocol`. After `port`, settings before any
///   `interface` apply to every handler of that port, and `server`/`exec` there make the handler for every local
///   address; each `interface ADDRESS` starts the handler for connections arriving on that address. Each handler
///   needs exactly one of `server` and `exec`; `rotate` goes with `server`. A setting repeated in its section (and
///   `standalone`, repeated anywhere in the file) replaces the earlier line, with a warning in ``warnings``, as the
///   later line overwrote the earlier one in Zekoll's tcpproxy; `server` and `exec` replace each other, as do
///   `writefile` and `debug`. Each port may be defined once, and each interface once per port.
/// - spreadspace's dialect: stanzas `listen (*|address|hostname) (port|service) { ... };` holding `remote: HOST
///   PORT;` (required), `resolv: ipv4|ipv6;`, `remote-resolv: ipv4|ipv6;`, `source: HOST;` and ours, `rules:
///   FILE.cdb;` and `proxy-protocol: v1|v2;`, each at most once. Whitespace and line breaks are free; every setting
///   and the stanza end with `;`, which may be left out where a line ends (the manual page's own example omits one
///   after `resolv`). Its tcpproxy has no timeout, so its handlers get 0.
/// - Ports are numbers 1-65535 or tcp service names from the services file (``ServiceNameSource``).
/// - Addresses: IPv4, IPv6 bare (`2001:db8::1`) or in brackets (`[2001:db8::1]`); IPv4-mapped IPv6 counts as IPv4.
///   Zekoll's `server` takes `host`, `host:port`, `[ipv6]`, `[ipv6]:port`, or a bare IPv6 literal, which never has
///   a port (brackets are needed for one); a `server` without port connects to the port the client came to.
public struct ProxyConfiguration: Sendable, Equatable {
    /// Where tcpproxy reads its configuration when no other file is named.
    public static let defaultPath = "/etc/tcpproxy.conf"

    /// The file this configuration came from (used in messages).
    public var path: String
    /// Which manual page's grammar the file follows.
    public var dialect: ConfigurationDialect
    /// Zekoll's `standalone yes|no`; nil when the file does not say (the manual's default with a file is yes).
    public var standalone: Bool?
    /// Zekoll's `logname` before the first `port`: the syslog name for the daemon's own messages.
    /// Handlers carry their own (inherited) ``ProxyHandler/logname``.
    public var logname: String?
    /// The services in file order.
    public var services: [ProxyService]
    /// What the file says that was accepted but deserves a look (a setting repeated in one section), in file order.
    /// Not part of what is served: the daemon prints and logs them when it loads the file.
    public var warnings: [ConfigurationWarning]

    /// A configuration from its parts (a command line can build one without a file).
    public init(
        path: String = ProxyConfiguration.defaultPath,
        dialect: ConfigurationDialect,
        standalone: Bool? = nil,
        logname: String? = nil,
        services: [ProxyService],
        warnings: [ConfigurationWarning] = []
    ) {
        self.path = path
        self.dialect = dialect
        self.standalone = standalone
        self.logname = logname
        self.services = services
        self.warnings = warnings
    }
}

/// The two grammars tcpproxy reads.
public enum ConfigurationDialect: Sendable, Equatable, CustomStringConvertible {
    /// Wolfgang Zekoll's: one directive per line (`port 25`, `interface 192.168.1.1`, `server host`).
    case zekoll
    /// spreadspace's: `listen (*|address|hostname) (port|service) { remote: host port; ... };` stanzas.
    case spreadspace

    public var description: String {
        switch self {
        case .zekoll: return "Zekoll's dialect"
        case .spreadspace: return "spreadspace's dialect"
        }
    }
}

// MARK: - Services and handlers

/// One listening socket: an address (or any) and a port, with the handlers for connections arriving on it.
public struct ProxyService: Sendable, Equatable {
    /// Where to listen. Zekoll's services always listen on any address: their `interface` sections select a
    /// handler by the local address of each connection instead
    /// (see ``ProxyConfiguration/handler(forLocalAddress:port:)``).
    public var listen: ListenAddress
    /// The listening port.
    public var port: UInt16
    /// spreadspace's `resolv`: which family to use when ``listen`` is a host name.
    public var resolv: AddressFamilyPreference
    /// The handlers, most specific first: those for one interface address in file order, then at most one for
    /// any local address (``ProxyHandler/interface`` nil), last.
    public var handlers: [ProxyHandler]
    /// The line of the `port` directive or `listen` stanza.
    public var line: Int

    /// A service from its parts.
    public init(
        listen: ListenAddress = .any,
        port: UInt16,
        resolv: AddressFamilyPreference = .any,
        handlers: [ProxyHandler],
        line: Int = 0
    ) {
        self.listen = listen
        self.port = port
        self.resolv = resolv
        self.handlers = handlers
        self.line = line
    }
}

/// How one connection is served: where it goes and with which settings.
///
/// In Zekoll's dialect every setting may be given before the first `port` (a default for every handler), after
/// `port` before any `interface` (for every handler of that port), or after `interface` (for that handler only);
/// the innermost wins. `server`, `exec` and `rotate` belong to one handler and are never inherited.
public struct ProxyHandler: Sendable, Equatable {
    /// The variable prefix when none is configured.
    public static let defaultVariablePrefix = "PROXY_"
    /// Zekoll's connection timeout in seconds when none is configured.
    public static let defaultTimeout = 60

    /// The local address this handler serves (Zekoll's `interface`); nil for every local address.
    /// Always plain IPv4 for IPv4 (never IPv4-mapped IPv6).
    public var interface: IPAddress?
    /// Forward to a server, or run a program.
    public var target: ProxyTarget
    /// `acp program [args]`: run before serving; exit status 0 grants the connection.
    public var accessControlProgram: [String]?
    /// `uid`: the numeric user id to switch to after accepting (when running as root).
    public var uid: UInt32?
    /// `gid`: the numeric group id to switch to after accepting (when running as root).
    public var gid: UInt32?
    /// `user`: a user name whose ids to switch to; an explicit ``uid`` or ``gid`` wins over its ids.
    public var user: String?
    /// `logname`: the syslog name for this handler's connections.
    public var logname: String?
    /// `setenv`: the prefix of the variables a program handler (and the acp) gets, `PROXY_` by default.
    public var variablePrefix: String
    /// `timeout`: seconds a forwarded connection may stay idle; 0 for no timeout.
    /// 60 in Zekoll's dialect, 0 in spreadspace's (whose tcpproxy has no timeout).
    public var timeout: Int
    /// `writefile`/`debug`: the basename of files the client/server traffic is written to.
    public var writefile: String?
    /// Log a trace of every step of this handler's connections (at notice level): set by `debug` (writefile plus
    /// Zekoll's debug option), or for every handler by `-d`.
    public var debug: Bool
    /// `rules FILE.cdb`: a tcprules database applied to each client.
    public var rules: String?
    /// `proxy-protocol v1|v2`: send a PROXY protocol header to the server first.
    public var proxyProtocol: ProxyProtocolVersion?
    /// TLS toward the client (`tls-cert`, `tls-key`, `tls-client-ca`): the handler's
    /// connections are TLS, ended here.
    public var tls: TLSServerSettings?
    /// TLS toward the server (`remote-tls yes|insecure`, `remote-tls-ca`, `remote-tls-name`,
    /// `remote-tls-cert` and `remote-tls-key`).
    public var remoteTLS: TLSClientSettings?
    /// The line where this handler starts (`port`, `interface` or `listen`).
    public var line: Int

    /// A handler from its parts; unset settings take tcpproxy's defaults.
    public init(
        interface: IPAddress? = nil,
        target: ProxyTarget,
        accessControlProgram: [String]? = nil,
        uid: UInt32? = nil,
        gid: UInt32? = nil,
        user: String? = nil,
        logname: String? = nil,
        variablePrefix: String = ProxyHandler.defaultVariablePrefix,
        timeout: Int = ProxyHandler.defaultTimeout,
        writefile: String? = nil,
        debug: Bool = false,
        rules: String? = nil,
        proxyProtocol: ProxyProtocolVersion? = nil,
        tls: TLSServerSettings? = nil,
        remoteTLS: TLSClientSettings? = nil,
        line: Int = 0
    ) {
        self.interface = interface
        self.target = target
        self.accessControlProgram = accessControlProgram
        self.uid = uid
        self.gid = gid
        self.user = user
        self.logname = logname
        self.variablePrefix = variablePrefix
        self.timeout = timeout
        self.writefile = writefile
        self.debug = debug
        self.rules = rules
        self.proxyProtocol = proxyProtocol
        self.tls = tls
        self.remoteTLS = remoteTLS
        self.line = line
    }
}

/// What a handler does with a connection.
public enum ProxyTarget: Sendable, Equatable {
    /// Connect to `host` and relay. `port` nil means the port the connection arrived on (Zekoll's `server host`).
    /// `resolv` restricts the families tried for a host name (spreadspace's `remote-resolv`, also for `source`);
    /// `source` is the local address to connect from (spreadspace's `source`); `rotate` a range of source
    /// addresses to take in turn (Zekoll's `rotate`). `host` is as written, without brackets around IPv6.
    case forward(
        host: String,
        port: UInt16?,
        resolv: AddressFamilyPreference = .any,
        source: String? = nil,
        rotate: AddressRange? = nil
    )
    /// Run a program with the connection as its standard input and output (Zekoll's `exec`).
    case exec(argv: [String])
}

// MARK: - Small value types

/// Where a service listens.
public enum ListenAddress: Sendable, Equatable, CustomStringConvertible {
    /// Every local address (spreadspace's `*`, and every Zekoll service).
    case any
    /// One address.
    case address(IPAddress)
    /// A host name, resolved by the daemon (see ``ProxyService/resolv``).
    case hostname(String)

    /// `*`, the address in ucspi-tcp's form, or the host name.
    public var description: String {
        switch self {
        case .any: return "*"
        case .address(let address): return address.description
        case .hostname(let name): return name
        }
    }
}

/// Which address families to use when resolving a host name (spreadspace's `resolv` and `remote-resolv`).
public enum AddressFamilyPreference: Sendable, Equatable, CaseIterable, CustomStringConvertible {
    /// Both IPv4 and IPv6 (the default).
    case any
    /// IPv4 only.
    case ipv4
    /// IPv6 only.
    case ipv6

    /// Parses `ipv4`, `4`, `ipv6` or `6` (the forms spreadspace's command line takes; its file takes the first of
    /// each); nil for anything else.
    public init?(_ text: String) {
        switch text {
        case "ipv4", "4": self = .ipv4
        case "ipv6", "6": self = .ipv6
        default: return nil
        }
    }

    /// `any`, `ipv4` or `ipv6`.
    public var description: String {
        switch self {
        case .any: return "any"
        case .ipv4: return "ipv4"
        case .ipv6: return "ipv6"
        }
    }

    /// The one family allowed, if any.
    var family: IPAddress.Family? {
        switch self {
        case .any: return nil
        case .ipv4: return .v4
        case .ipv6: return .v6
        }
    }
}

/// The PROXY protocol header version sent to the server.
public enum ProxyProtocolVersion: Sendable, Equatable, CustomStringConvertible {
    /// The text header (`PROXY TCP4 ...\r\n`).
    case v1
    /// The binary header.
    case v2

    /// `v1` or `v2`.
    public var description: String { self == .v1 ? "v1" : "v2" }
}

/// An inclusive range of addresses of one family (Zekoll's `rotate ip-start ip-end`).
public struct AddressRange: Sendable, Equatable, CustomStringConvertible {
    /// The first address.
    public let start: IPAddress
    /// The last address, of the same family and not below ``start``.
    public let end: IPAddress

    /// A range; nil when the addresses differ in family or `end` is below `start`.
    public init?(start: IPAddress, end: IPAddress) {
        guard start.family == end.family, !end.bytes.lexicographicallyPrecedes(start.bytes) else { return nil }
        self.start = start
        self.end = end
    }

    /// The family of both ends.
    public var family: IPAddress.Family { start.family }

    /// `start end`.
    public var description: String { "\(start) \(end)" }
}
