#if canImport(Glibc)
import Glibc
#endif
import CBastion

/// The process environment, and environments prepared for child programs.
public enum Environment {
    /// getenv, as a String (bytes decoded as UTF-8).
    public static func get(_ name: String) -> String? {
        guard let p = getenv(name) else { return nil }
        return String(cString: p)
    }

    /// getenv, as raw bytes.
    public static func bytes(_ name: String) -> [UInt8]? {
        guard let p = getenv(name) else { return nil }
        return Array(
            UnsafeBufferPointer(start: UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self), count: strlen(p)))
    }

    /// The current environment as raw `NAME=value` byte strings.
    public static func current() -> [[UInt8]] {
        var out: [[UInt8]] = []
        guard var p = bastion_environ() else { return out }
        while let entry = p.pointee {
            out.append(
                Array(
                    UnsafeBufferPointer(
                        start: UnsafeRawPointer(entry).assumingMemoryBound(to: UInt8.self), count: strlen(entry))))
            p += 1
        }
        return out
    }
}

/// An environment for a child program, edited like djb's pathexec_env: each name set or
/// removed once, in the order given, on top of a base environment.
public struct ChildEnvironment: Sendable {
    /// Whether `prefix` can start variable names (tcpproxy's `setenv`, pop3.proxy's `-v`):
    /// letters, digits and `_` only.
    public static func isVariablePrefix(_ prefix: String) -> Bool {
        prefix.utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"):
                return true
            default:
                return false
            }
        }
    }

    private var entries: [[UInt8]]

    /// Starts from `base` (normally the current environment) or from nothing.
    public init(base: [[UInt8]] = Environment.current()) {
        entries = base
    }

    private func index(of name: [UInt8]) -> Int? {
        entries.firstIndex { e in
            e.count > name.count && e[name.count] == UInt8(ascii: "=") && e.starts(with: name)
        }
    }

    /// Sets `name` to `value`, or removes it when value is nil. Every earlier copy is removed.
    public mutating func set(_ name: String, _ value: String?) {
        set(Array(name.utf8), value.map { Array($0.utf8) })
    }

    /// The same with raw bytes, for values from the network or a rules database.
    public mutating func set(_ name: [UInt8], _ value: [UInt8]?) {
        entries.removeAll { e in e.count > name.count && e[name.count] == UInt8(ascii: "=") && e.starts(with: name) }
        if let value { entries.append(name + [UInt8(ascii: "=")] + value) }
    }

    /// The value of `name`, if set.
    public func value(_ name: String) -> String? {
        let n = Array(name.utf8)
        guard let i = index(of: n) else { return nil }
        return String(decoding: entries[i][(n.count + 1)...], as: UTF8.self)
    }

    /// The entries as `NAME=value` byte strings, for execve.
    public var bytes: [[UInt8]] { entries }
}
