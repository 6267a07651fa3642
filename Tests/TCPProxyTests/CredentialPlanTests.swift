import Gateway
import GatewayKit
import Testing

@testable import TCPProxy

@Suite("whom tcpproxy serves as")
struct CredentialPlanTests {
    func configuration(_ handlers: [ProxyHandler]) -> (ProxyConfiguration, [ProxyListener]) {
        let services = handlers.enumerated().map { i, h in ProxyService(port: UInt16(1000 + i), handlers: [h]) }
        let listeners = handlers.indices.map { i in
            ProxyListener(
                key: ListenerKey(address: .anyV6, port: UInt16(1000 + i), v6Only: false), fd: Int32(10 + i),
                service: i, handler: 0)
        }
        return (ProxyConfiguration(dialect: .zekoll, services: services), listeners)
    }

    let exec = ProxyTarget.exec(argv: ["/bin/true"])

    @Test func notRootKeepsIds() throws {
        let (c, l) = configuration([ProxyHandler(target: exec, uid: 5)])
        guard case .unchanged = try CredentialPlan.make(try TCPProxyOptions.parse([]), c, listeners: l, isRoot: false)
        else { Issue.record("expected unchanged"); return }
    }

    @Test func rootDefaultsToNobody() throws {
        let (c, l) = configuration([ProxyHandler(target: exec), ProxyHandler(target: exec)])
        guard
            case .perCredential(let groups) = try CredentialPlan.make(
                try TCPProxyOptions.parse([]), c, listeners: l, isRoot: true)
        else { Issue.record("expected a worker"); return }
        #expect(groups == [.nobody: [10, 11]])
    }

    @Test func differentUsersGetWorkers() throws {
        let (c, l) = configuration([
            ProxyHandler(target: exec, uid: 100, gid: 200), ProxyHandler(target: exec),
            ProxyHandler(target: exec, uid: 100, gid: 200),
        ])
        guard
            case .perCredential(let groups) = try CredentialPlan.make(
                try TCPProxyOptions.parse([]), c, listeners: l, isRoot: true)
        else { Issue.record("expected workers"); return }
        #expect(groups == [Credential(uid: 100, gid: 200): [10, 12], .nobody: [11]])
    }

    @Test func usernameOptionWins() throws {
        let (c, l) = configuration([ProxyHandler(target: exec, uid: 100), ProxyHandler(target: exec, uid: 7)])
        guard
            case .single(let who) = try CredentialPlan.make(
                try TCPProxyOptions.parse(["-u", "root"]), c, listeners: l, isRoot: true)
        else { Issue.record("expected one credential"); return }
        #expect(who == Credential(uid: 0, gid: 0))
    }

    @Test func unknownUserIsAnError() throws {
        let (c, l) = configuration([ProxyHandler(target: exec, user: "no-such-user-here", line: 4)])
        #expect(throws: StartError.self) {
            try CredentialPlan.make(try TCPProxyOptions.parse([]), c, listeners: l, isRoot: true)
        }
    }
}
