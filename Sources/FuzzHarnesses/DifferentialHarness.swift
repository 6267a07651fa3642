#if canImport(Glibc)
import Glibc
#endif
import AccessRules
import CDB
import GatewayKit
import UCSPI

/// Ours against djb's: the input's rules compiled by our compiler (the library tcprules
/// calls) and by ucspi-tcp's tcprules, then a client looked up by our lookup and by
/// ucspi-tcp's tcprulescheck in the database. The same exit status and standard error, the
/// same cdb bytes, the same report. The reference is the folder of Debian's ucspi-tcp
/// binaries in `BASTION_FUZZ_REFERENCE` (scripts/fuzz points it at peers/ucspi-tcp/usr/bin);
/// without it the harness does nothing.
///
/// Inputs with a line holding more than one colon are left out: on those ucspi-tcp and its
/// IPv6 variant disagree, ours follows the IPv6 variant, and that variant loops for ever on
/// some of them (tests/e2e/test_tcprules.py compares those against it, line by line).
enum DifferentialHarness {
    static let reference: String? = Environment.get("BASTION_FUZZ_REFERENCE")
    /// A scratch folder of this process's.
    static let scratch: String = {
        let path = "/tmp/bastion-fuzz-differential-\(getpid())"
        mkdir(path, 0o700)
        return path
    }()

    /// Runs `argv` with standard input from `input`, standard error to `errors`, standard
    /// output to `output` and `environment`; its wait status.
    static func run(_ argv: [String], input: String, output: String, errors: String, environment: [String]) -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, input, O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, errors, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = environment.map { strdup($0) } + [nil]
        defer {
            for p in cArgs { free(p) }
            for p in cEnv { free(p) }
        }
        var pid: pid_t = 0
        let started = posix_spawn(&pid, cArgs[0]!, &actions, nil, cArgs, cEnv)
        precondition(started == 0, "cannot start \(argv[0]): \(SystemError.message(started))")
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return status
    }

    static func read(_ path: String) -> [UInt8]? { try? FD.readWholeFile(path) }

    static func write(_ path: String, _ bytes: some Collection<UInt8>) {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        precondition(fd >= 0, "cannot write \(path)")
        try! FD.writeAll(fd, Array(bytes))
        close(fd)
    }

    static func comparable(_ rules: UnsafeRawBufferPointer) -> Bool {
        for line in rules.split(separator: 10) where line.first != UInt8(ascii: "#") {
            if line.lazy.filter({ $0 == UInt8(ascii: ":") }).count > 1 { return false }
        }
        return true
    }

    static func run(_ data: UnsafeRawBufferPointer) {
        guard let reference else { return }
        compare(data, reference: reference)
    }

    static func compare(_ data: UnsafeRawBufferPointer, reference: String) {
        let (rules, clientPart) = Harnesses.halves(data)
        guard comparable(rules) else { return }
        let input = scratch + "/rules.txt"
        let cdb = scratch + "/rules.cdb"
        let errors = scratch + "/errors"
        let output = scratch + "/output"
        write(input, rules)
        unlink(cdb)
        let status = run(
            [reference + "/tcprules", cdb, cdb + ".tmp"], input: input, output: output, errors: errors,
            environment: [])
        let theirErrors = read(errors) ?? []
        let theirs = read(cdb)

        // Ours, as TCPRulesCommand compiles: chunks of input into a cdb in memory.
        var ourStatus: Int32 = 0
        var ourErrors: [UInt8] = []
        var ours: [UInt8]?
        var compiler = RulesCompiler(writer: try! CDBWriter(sink: CDBMemorySink()))
        do {
            try compiler.feed(rules)
            try compiler.finish()
            ours = compiler.writer.sink.bytes
        } catch {
            switch error {
            case .parse(let e):
                ourStatus = 100
                ourErrors = Array("tcprules: fatal: ".utf8) + e.message + [10]
            case .write(let e): preconditionFailure("writing to memory failed: \(e)")
            }
        }
        let exited = WaitStatus.exited(status)
        precondition(
            exited == ourStatus && theirErrors == ourErrors,
            "tcprules: theirs exit \(String(describing: exited)) \(String(decoding: theirErrors, as: UTF8.self))"
                + " ours exit \(ourStatus) \(String(decoding: ourErrors, as: UTF8.self))")
        guard let ours, let theirs else {
            precondition(ours == nil && theirs == nil, "one compiled, the other did not")
            return
        }
        precondition(ours == theirs, "the cdbs differ")

        // The client: an address, a host name and an ident answer, as tcpserver sets them.
        let fields = clientPart.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false).map {
            Array($0.filter { $0 != 0 })
        }
        let ip = fields.first.map { Array($0.prefix(39)) } ?? []
        let host = fields.count > 1 ? Array(fields[1].prefix(255)) : nil
        let info = fields.count > 2 ? Array(fields[2].prefix(257)) : nil
        var environment = ["TCPREMOTEIP=" + String(decoding: ip, as: UTF8.self)]
        // Environment values are C strings: bytes that are not UTF-8 would change on the way.
        guard String(validating: ip, as: UTF8.self) != nil else { return }
        if let host {
            guard String(validating: host, as: UTF8.self) != nil else { return }
            environment.append("TCPREMOTEHOST=" + String(decoding: host, as: UTF8.self))
        }
        if let info {
            guard String(validating: info, as: UTF8.self) != nil else { return }
            environment.append("TCPREMOTEINFO=" + String(decoding: info, as: UTF8.self))
        }
        let checked = run(
            [reference + "/tcprulescheck", cdb], input: "/dev/null", output: output, errors: errors,
            environment: environment)
        let theirReport = read(output) ?? []
        let lookup = ours.withUnsafeBytes { raw in
            Result { try RuleLookup.find(RuleClient(ip: ip, host: host, info: info), in: CDBReader(bytes: raw)) }
        }
        guard case .success(let found) = lookup else {
            preconditionFailure("our lookup failed on a database both compiled")
        }
        precondition(WaitStatus.exited(checked) == 0, "their tcprulescheck failed")
        let ourReport = TCPRulesCheckCommand.report(found)
        precondition(
            ourReport == theirReport,
            "tcprulescheck: theirs \(String(decoding: theirReport, as: UTF8.self))"
                + " ours \(String(decoding: ourReport, as: UTF8.self))")
    }
}
