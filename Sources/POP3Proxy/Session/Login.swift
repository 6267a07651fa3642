import GatewayKit

/// What pop3.proxy knows of a login once the client has sent USER and PASS, before it connects
/// to the server: where the client came from, which server it goes to, and the credentials
/// for both (see ``ServerLogin``). The access control program's environment and the client
/// log line are made from it.
public struct LoginRequest: Equatable, Sendable {
    /// The client's address and port.
    public var client: Endpoint
    /// Where the client connected to (the proxy's interface and port).
    public var local: Endpoint
    /// The server's name as the client gave it (or the default server's), and its port.
    public var server: String
    public var serverPort: UInt16
    /// The user name and password for the server.
    public var serverUser: [UInt8]
    public var serverPassword: [UInt8]
    /// The proxy login (PROXY_USERNAME, PROXY_PASSWD): the left of the colons, or the server's.
    public var proxyUser: [UInt8]
    public var proxyPassword: [UInt8]

    public init(
        client: Endpoint, local: Endpoint, server: String, serverPort: UInt16, serverUser: [UInt8],
        serverPassword: [UInt8], proxyUser: [UInt8], proxyPassword: [UInt8]
    ) {
        self.client = client
        self.local = local
        self.server = server
        self.serverPort = serverPort
        self.serverUser = serverUser
        self.serverPassword = serverPassword
        self.proxyUser = proxyUser
        self.proxyPassword = proxyPassword
    }

    /// The access control program's environment: `base` with the manual's variables under
    /// `prefix` (PROXY_ by default): INTERFACE and PORT (where the client connected), CLIENT,
    /// SERVER and SERVERPORT (as the client gave them), SERVERLOGIN, USERNAME and PASSWD.
    public func accessControlEnvironment(prefix: String, base: [[UInt8]]) -> [[UInt8]] {
        var environment = ChildEnvironment(base: base)
        environment.set(prefix + "INTERFACE", local.address.unmapped.description)
        environment.set(prefix + "PORT", String(local.port))
        environment.set(prefix + "CLIENT", client.address.unmapped.description)
        environment.set(prefix + "SERVER", server)
        environment.set(prefix + "SERVERPORT", String(serverPort))
        environment.set(Array((prefix + "SERVERLOGIN").utf8), serverUser)
        environment.set(Array((prefix + "USERNAME").utf8), proxyUser)
        environment.set(Array((prefix + "PASSWD").utf8), proxyPassword)
        return environment.bytes
    }

    /// The `-l` file's name in its directory (the client's address) and its one line,
    /// `EPOCH CLIENT-IP SERVER-USER SERVER\n`, as the original wrote it for smtp.proxy-style
    /// relay checks. A user name is written with blanks and control characters as `?`, so the
    /// line keeps its four words.
    public func clientLog(at seconds: Int) -> (name: String, line: [UInt8]) {
        let ip = client.address.unmapped.description
        let user = serverUser.map { $0 <= 32 || $0 == 127 ? UInt8(ascii: "?") : $0 }
        return (ip, Array("\(seconds) \(ip) ".utf8) + user + Array(" \(server)\n".utf8))
    }
}
