import GatewayKit
import TCPProxy

// MARK: - Helpers shared by the configuration tests

/// A services(5) file for the tests, so that they do not depend on the machine's /etc/services.
let servicesText = Array(
    """
    # fake /etc/services
    smtp\t\t25/tcp\t\tmail
    nntp\t\t119/tcp\t\treadnews untp
    pop3\t\t110/tcp\t\tpop-3
    finger\t\t79/tcp
    http\t\t80/tcp\t\twww
    http-alt\t8080/tcp\twebcache
    syslog\t\t514/udp
    """.utf8)

/// The fake services, named /etc/services in messages.
let fakeServices = ServiceNameSource.text(servicesText, name: "/etc/services")

/// Parses `text` as /etc/tcpproxy.conf with the fake services.
func parse(_ text: String) throws(ConfigurationError) -> ProxyConfiguration {
    try ProxyConfiguration(parsing: text, path: "/etc/tcpproxy.conf", serviceNames: fakeServices)
}

/// The message parsing `text` fails with; nil when it parses.
func failure(_ text: String) -> String? {
    do {
        _ = try parse(text)
        return nil
    } catch {
        return error.description
    }
}

/// The error parsing `text` fails with; nil when it parses.
func parseError(_ text: String) -> ConfigurationError? {
    do {
        _ = try parse(text)
        return nil
    } catch {
        return error
    }
}

/// The only handler of the only service of `text`.
func onlyHandler(_ text: String) throws -> ProxyHandler {
    let configuration = try parse(text)
    guard configuration.services.count == 1, configuration.services[0].handlers.count == 1 else {
        throw TestFailure("expected one service with one handler, got \(configuration.services)")
    }
    return configuration.services[0].handlers[0]
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// An address that the test knows to be valid.
func ip(_ text: String) -> IPAddress { IPAddress(text)! }
