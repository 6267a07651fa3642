#if canImport(Glibc)
import Glibc
#endif
import GatewayKit

/// The system files the parsers are given by the tools and the daemon: user list files read
/// as they are named, /etc/services read once.
public enum SockdSystemFiles {
    /// Reads a user list file whole.
    public static let userFileReader: UserFileReader = { (path: [UInt8]) throws(SystemError) -> [UInt8] in
        try FD.readWholeFile(String(decoding: path, as: UTF8.self))
    }

    /// The tcp services of the services file at `path` (read now; missing or unreadable: none).
    public static func services(path: String = "/etc/services") -> ServiceTable {
        ServiceTable(text: (try? FD.readWholeFile(path)) ?? [])
    }

    /// Looks up tcp services in the services file at `path`, read once.
    public static func serviceLookup(path: String = "/etc/services") -> ServiceLookup { services(path: path).lookup }
}

/// A configuration file's contents as the daemon loads them: frozen (told by its magic) or text.
public enum SockdConfigurationFile {
    /// The configuration in `contents`, and the text's bad lines (lenient mode only; a frozen
    /// file has none). `frozen` says which form it was.
    public static func load(
        _ contents: [UInt8], path: String, mode: SockdConfigMode, readUserFile: @escaping UserFileReader,
        servicePort: @escaping ServiceLookup
    ) throws -> (configuration: SockdConfiguration, warnings: [SockdConfigError], frozen: Bool) {
        if contents.starts(with: FrozenFormat.magicStem) {
            return (try SockdConfiguration(frozen: contents), [], true)
        }
        let parser = SockdConfParser(path: path, readUserFile: readUserFile, servicePort: servicePort)
        let (configuration, warnings) = try parser.load(contents, mode: mode)
        return (configuration, warnings, false)
    }

    /// The routes in `contents`, frozen or text, as ``load(_:path:mode:readUserFile:servicePort:)``.
    public static func loadRoutes(_ contents: [UInt8], path: String, mode: SockdConfigMode) throws -> (
        routes: SockdRoutes, warnings: [SockdConfigError], frozen: Bool
    ) {
        if contents.starts(with: FrozenFormat.magicStem) { return (try SockdRoutes(frozen: contents), [], true) }
        let (routes, warnings) = try SockdRouteParser(path: path).load(contents, mode: mode)
        return (routes, warnings, false)
    }
}

/// make_sockdfc, make_sockdfr, dump_sockdfc and dump_sockdfr: check a text file and write its
/// frozen form atomically (a new file beside the old one, renamed over it), or print a frozen
/// file as text. Exit 0 on success, 1 on any error, with the reason (every bad line, with
/// its number) on standard error.
public enum FrozenTools {
    /// What a tool works on.
    public enum Subject: Sendable {
        case configuration, routes

        var text: String { self == .configuration ? "/etc/sockd.conf" : "/etc/sockd.route" }
        var frozen: String { self == .configuration ? "/etc/sockd.fc" : "/etc/sockd.fr" }
        var make: String { self == .configuration ? "make_sockdfc" : "make_sockdfr" }
        var dump: String { self == .configuration ? "dump_sockdfc" : "dump_sockdfr" }
        var kind: FrozenFormat.Kind { self == .configuration ? .configuration : .routes }
    }

    /// What a run did: the exit status, standard output and standard error.
    public struct Outcome: Sendable, Equatable {
        public var status: Int32
        public var output: [UInt8] = []
        public var errors: [String] = []

        public init(status: Int32, output: [UInt8] = [], errors: [String] = []) {
            self.status = status
            self.output = output
            self.errors = errors
        }
    }

    /// The make tool: `make_sockdfc [CONF [FC]]`.
    public static func make(
        _ subject: Subject, arguments: [[UInt8]],
        readUserFile: @escaping UserFileReader = SockdSystemFiles.userFileReader,
        servicePort: (@Sendable () -> ServiceLookup) = { SockdSystemFiles.serviceLookup() }
    ) -> Outcome {
        let name = subject.make
        if arguments.first == Array("-h".utf8) || arguments.first == Array("--help".utf8) {
            return Outcome(status: 0, output: Array(usage(name, subject, make: true).utf8))
        }
        guard arguments.count <= 2, !(arguments.first?.first == UInt8(ascii: "-") && arguments.first!.count > 1)
        else {
            return Outcome(status: 1, errors: ["\(name): usage: " + usage(name, subject, make: true)])
        }
        let source = arguments.count > 0 ? String(decoding: arguments[0], as: UTF8.self) : subject.text
        let target = arguments.count > 1 ? String(decoding: arguments[1], as: UTF8.self) : subject.frozen
        let text: [UInt8]
        do { text = try FD.readWholeFile(source) } catch {
            return Outcome(status: 1, errors: ["\(name): fatal: unable to read \(source): \(error)"])
        }
        if text.starts(with: FrozenFormat.magicStem) {
            return Outcome(
                status: 1, errors: ["\(name): fatal: \(source) is already frozen (\(subject.dump) prints it as text)"])
        }
        let frozen: [UInt8]
        do throws(SockdConfigRejection) {
            switch subject {
            case .configuration:
                let parser = SockdConfParser(path: source, readUserFile: readUserFile, servicePort: servicePort())
                frozen = try parser.load(text, mode: .strict).configuration.frozen
            case .routes:
                frozen = try SockdRouteParser(path: source).load(text, mode: .strict).routes.frozen
            }
        } catch {
            let count = error.errors.count == 1 ? "1 bad line" : "\(error.errors.count) bad lines"
            return Outcome(
                status: 1,
                errors: error.errors.map { "\(name): \($0)" } + [
                    "\(name): fatal: \(count) in \(source), \(target) not written"
                ])
        }
        do { try FD.replaceFile(target, contents: frozen) } catch {
            return Outcome(status: 1, errors: ["\(name): fatal: unable to write \(target): \(error)"])
        }
        return Outcome(status: 0)
    }

    /// The dump tool: `dump_sockdfc [FC]`.
    public static func dump(_ subject: Subject, arguments: [[UInt8]]) -> Outcome {
        let name = subject.dump
        if arguments.first == Array("-h".utf8) || arguments.first == Array("--help".utf8) {
            return Outcome(status: 0, output: Array(usage(name, subject, make: false).utf8))
        }
        guard arguments.count <= 1, !(arguments.first?.first == UInt8(ascii: "-") && arguments.first!.count > 1)
        else {
            return Outcome(status: 1, errors: ["\(name): usage: " + usage(name, subject, make: false)])
        }
        let source = arguments.first.map { String(decoding: $0, as: UTF8.self) } ?? subject.frozen
        let bytes: [UInt8]
        do { bytes = try FD.readWholeFile(source) } catch {
            return Outcome(status: 1, errors: ["\(name): fatal: unable to read \(source): \(error)"])
        }
        do throws(FrozenError) {
            switch subject {
            case .configuration: return Outcome(status: 0, output: try SockdConfiguration(frozen: bytes).text)
            case .routes: return Outcome(status: 0, output: try SockdRoutes(frozen: bytes).text)
            }
        } catch {
            return Outcome(status: 1, errors: ["\(name): fatal: \(source): \(error)"])
        }
    }

    /// Runs a tool as its `main.swift` does: the outcome written out, then exit. `argv` is
    /// the whole command line, the tool's name first.
    public static func main(_ argv: [[UInt8]] = Arguments.raw, _ run: ([[UInt8]]) -> Outcome) -> Never {
        let outcome = run(Array(argv.dropFirst()))
        if !outcome.output.isEmpty {
            do { try FD.writeAll(1, outcome.output) } catch {
                Stderr.line("unable to write to standard output: \(error)")
                exit(1)
            }
        }
        for line in outcome.errors { Stderr.line(LogFormat.printable(line)) }
        exit(outcome.status)
    }

    private static func usage(_ name: String, _ subject: Subject, make: Bool) -> String {
        make
            ? "\(name) [\(subject == .configuration ? "CONF" : "ROUTE") [\(subject == .configuration ? "FC" : "FR")]]"
                + " (defaults \(subject.text) \(subject.frozen))\n"
            : "\(name) [\(subject == .configuration ? "FC" : "FR")] (default \(subject.frozen))\n"
    }
}
