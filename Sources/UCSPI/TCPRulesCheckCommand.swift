#if canImport(Glibc)
import Glibc
#endif
import AccessRules
import CDB
import GatewayKit

/// `tcprulescheck rules.cdb`: shows which rule tcpserver would apply to the client described
/// by TCPREMOTEIP (default 0.0.0.0), TCPREMOTEHOST and TCPREMOTEINFO.
public enum TCPRulesCheckCommand {
    /// The lines tcprulescheck prints for a found rule: `rule KEY:`, then each variable,
    /// stopping at the first deny.
    public static func report(_ rule: MatchedRule?) -> [UInt8] {
        guard let rule else { return Array("default:\nallow connection\n".utf8) }
        var out = Array("rule ".utf8) + rule.key + Array(":\n".utf8)
        for item in RuleDecision.instructions(rule.instructions) {
            switch item {
            case .deny: return out + Array("deny connection\n".utf8)
            case .setenv(let text): out += Array("set environment variable ".utf8) + text + [10]
            }
        }
        return out + Array("allow connection\n".utf8)
    }

    public static func main(_ arguments: [[UInt8]]) -> Never {
        if arguments.count == 2 && arguments[1] == Array("--help".utf8) {
            try? FD.writeAll(1, Help.tcprulescheck)
            exit(0)
        }
        guard arguments.count >= 2 else { Stderr.die(100, "tcprulescheck: usage: tcprulescheck rules.cdb") }
        let path = arguments[1]
        let client = RuleClient(
            ip: Environment.bytes("TCPREMOTEIP") ?? Array("0.0.0.0".utf8),
            host: Environment.bytes("TCPREMOTEHOST"),
            info: Environment.bytes("TCPREMOTEINFO"))
        let unable = Array("tcprulescheck: fatal: unable to read ".utf8) + path + Array(": ".utf8)
        let file: CDBFile
        do { file = try CDBFile(path: path) } catch {
            Stderr.die(111, unable + Array(SystemError.message(error.errno).utf8))
        }
        let found: MatchedRule?
        do {
            found = try RuleLookup.find(client, in: file.reader)
        } catch {
            Stderr.die(111, unable + Array(SystemError.message(error == .empty ? EINVAL : EPROTO).utf8))
        }
        do { try FD.writeAll(1, report(found)) } catch { exit(111) }
        exit(0)
    }
}
