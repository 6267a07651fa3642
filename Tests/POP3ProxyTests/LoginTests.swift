import GatewayKit
import POP3Proxy
import Testing

@Suite("A login's access control environment and client log line (the manual)")
struct LoginRequestTests {
    static let request = LoginRequest(
        client: Endpoint(address: IPAddress("::ffff:192.0.2.7")!, port: 40000),
        local: Endpoint(address: IPAddress("192.168.1.1")!, port: 110), server: "pop.example.org", serverPort: 110,
        serverUser: Array("joe".utf8), serverPassword: Array("serverpass".utf8), proxyUser: Array("proxyjoe".utf8),
        proxyPassword: Array("proxypass".utf8))

    @Test func theManualsVariablesWithThePrefix() {
        let env = Self.request.accessControlEnvironment(prefix: "PROXY_", base: [Array("PATH=/bin".utf8)])
        #expect(
            env.map { String(decoding: $0, as: UTF8.self) } == [
                "PATH=/bin", "PROXY_INTERFACE=192.168.1.1", "PROXY_PORT=110", "PROXY_CLIENT=192.0.2.7",
                "PROXY_SERVER=pop.example.org", "PROXY_SERVERPORT=110", "PROXY_SERVERLOGIN=joe",
                "PROXY_USERNAME=proxyjoe", "PROXY_PASSWD=proxypass",
            ])
        let other = Self.request.accessControlEnvironment(prefix: "POP_", base: [Array("PROXY_CLIENT=x".utf8)])
        #expect(other.contains(Array("POP_CLIENT=192.0.2.7".utf8)) && other.contains(Array("PROXY_CLIENT=x".utf8)))
    }

    @Test func theClientLogLine() {
        let (name, line) = Self.request.clientLog(at: 944_380_800)
        #expect(name == "192.0.2.7")
        #expect(String(decoding: line, as: UTF8.self) == "944380800 192.0.2.7 joe pop.example.org\n")
        var odd = Self.request
        odd.serverUser = Array("a b\nc".utf8)
        #expect(String(decoding: odd.clientLog(at: 1).line, as: UTF8.self) == "1 192.0.2.7 a?b?c pop.example.org\n")
    }
}
