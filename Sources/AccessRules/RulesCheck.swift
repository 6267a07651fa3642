#if canImport(Glibc)
import Glibc
#endif
import CDB

/// Applying a tcprules database to one client, as tcpserver's `-x` does: the one way every
/// Bastion program does it (tcpserver, tcpproxy's `rules`, and the daemons to come). The file
/// is opened afresh for every client, so a `tcprules` that replaced it atomically takes effect
/// at once, and a damaged file is an error the caller reports, never a crash.
public enum RulesCheck {
    /// What the database says about a client.
    public enum Outcome: Equatable, Sendable {
        /// There is no database file (ENOENT). tcpserver's `-X` and tcpproxy allow then.
        case missing
        /// No rule matches: allowed, nothing set.
        case noRule
        /// A rule allows, setting `variables` (`VAR=value` instructions, in order).
        case allowed(rule: [UInt8], variables: [RuleDecision.Variable])
        /// A rule denies.
        case denied(rule: [UInt8])
        /// The file cannot be read, with djb's reason: the open's errno, EINVAL for an empty
        /// file, EPROTO for a damaged one ("protocol error").
        case unreadable(errno: Int32)
    }

    /// Looks `client` up in the database at `path`.
    public static func check(_ client: RuleClient, in path: [UInt8]) -> Outcome {
        let file: CDBFile
        do { file = try CDBFile(path: path) } catch {
            return error.errno == ENOENT ? .missing : .unreadable(errno: error.errno)
        }
        let found: MatchedRule?
        do { found = try RuleLookup.find(client, in: file.reader) } catch {
            return .unreadable(errno: error == .empty ? EINVAL : EPROTO)
        }
        guard let rule = found else { return .noRule }
        let decision = rule.decision
        if decision.deny { return .denied(rule: rule.key) }
        return .allowed(rule: rule.key, variables: decision.environment)
    }

    /// Looks `client` up in the database at `path`.
    public static func check(_ client: RuleClient, in path: String) -> Outcome {
        check(client, in: Array(path.utf8))
    }
}
