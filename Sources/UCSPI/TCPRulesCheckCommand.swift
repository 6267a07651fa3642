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
    public static func report(_ rule: MatchedRule?) -> String {
        guard let rule else { return "default:\nallow connection\n" }
        var out = "rule \(rule.key):\n"
        for item in RuleDecision.instructions(rule.instructions) {
            switch item {
            case .deny: return out + "deny connection\n"
            case .setenv(let text): out += "set environment variable \(String(decoding: text, as: UTF8.self))\n"
            }
        }
        return out + "allow connection\n"
    }

    public static func main(_ arguments: [String]) -> Never {
        guard arguments.count >= 2 else { Stderr.die(100, "tcprulescheck: usage: tcprulescheck rules.cdb") }
        let path = arguments[1]
        let client = RuleClient(
            ip: Environment.get("TCPREMOTEIP") ?? "0.0.0.0",
            host: Environment.get("TCPREMOTEHOST"),
            info: Environment.get("TCPREMOTEINFO"))
        let unable = "tcprulescheck: fatal: unable to read \(path): "
        let file: CDBFile
        do { file = try CDBFile(path: path) } catch { Stderr.die(111, unable + SystemError.message(error.errno)) }
        let found: MatchedRule?
        do {
            found = try RuleLookup.find(client, in: file.reader)
        } catch {
            Stderr.die(111, unable + SystemError.message(error == .empty ? EINVAL : EPROTO))
        }
        do { try FD.writeAll(1, report(found)) } catch { exit(111) }
        exit(0)
    }
}
