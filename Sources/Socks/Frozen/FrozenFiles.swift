import GatewayKit

// MARK: - sockd.fc

extension SockdConfiguration {
    /// The frozen form (make_sockdfc's output).
    public var frozen: [UInt8] {
        var body = FrozenWriter()
        // The user files first, each once, in the order the rules first name them.
        var fileIndex: [[UInt8]: UInt32] = [:]
        var files: [([UInt8], [[UInt8]])] = []
        for rule in rules {
            for case .file(let path, let names) in rule.users?.entries ?? [] where fileIndex[path] == nil {
                fileIndex[path] = UInt32(files.count)
                files.append((path, names))
            }
        }
        body.u32(UInt32(files.count))
        for (path, names) in files {
            body.string(path)
            body.u32(UInt32(names.count))
            for name in names { body.string(name) }
        }
        body.u32(UInt32(rules.count))
        for rule in rules { FrozenCoding.write(rule, files: fileIndex, to: &body) }
        for special in [noIdentd, badIdent] {
            if let special {
                body.u8(1)
                body.u32(UInt32(special.line))
                body.string(special.command)
            } else {
                body.u8(0)
            }
        }
        return FrozenFormat.container(.configuration, body: body.bytes)
    }

    /// A configuration from its frozen form; any damage, a foreign file or a newer format is a
    /// ``FrozenError``.
    public init(frozen bytes: [UInt8]) throws(FrozenError) {
        var reader = FrozenReader(try FrozenFormat.body(bytes, kind: .configuration))
        var lines = FrozenCoding.LineCheck()
        var context = FrozenCoding.RuleContext(files: try FrozenCoding.readUserFiles(&reader))
        var rules: [SockdRule] = []
        let count = try reader.count("rules", minimumSize: 11)
        for _ in 0..<count {
            let rule = try FrozenCoding.readRule(&reader, context: &context)
            try lines.ascending(rule.line, reader)
            rules.append(rule)
        }
        guard context.nextFile == context.files.count else {
            throw reader.fail("user file \(context.nextFile) is named by no rule")
        }
        var specials: [SpecialCommand?] = []
        for _ in 0..<2 {
            switch try reader.u8("a flag") {
            case 0:
                specials.append(nil)
            case 1:
                let line = try FrozenCoding.line(&reader)
                let command = try reader.string("a command")
                guard ConfigWords.isCommand(command, allowsHash: true) else {
                    throw reader.fail("a command no #NO_IDENTD: or #BAD_ID: line can hold")
                }
                try lines.distinct(line, reader)
                specials.append(SpecialCommand(line: line, command: command))
            case let flag:
                throw reader.fail("flag \(flag) (expected 0 or 1)")
            }
        }
        guard reader.isAtEnd else { throw reader.fail("bytes after the last field") }
        self.init(rules: rules, noIdentd: specials[0], badIdent: specials[1])
    }
}

// MARK: - sockd.fr

extension SockdRoutes {
    /// The frozen form (make_sockdfr's output).
    public var frozen: [UInt8] {
        var body = FrozenWriter()
        body.u32(UInt32(routes.count))
        for route in routes {
            body.u32(UInt32(route.line))
            switch route.interface {
            case .address(let address):
                body.u8(0)
                body.u8(UInt8(address.bytes.count))
                body.bytes += address.bytes
            case .name(let name):
                body.u8(1)
                body.string(name)
            }
            FrozenCoding.write(route.destination, to: &body)
        }
        return FrozenFormat.container(.routes, body: body.bytes)
    }

    /// Routes from their frozen form; any damage is a ``FrozenError``.
    public init(frozen bytes: [UInt8]) throws(FrozenError) {
        var reader = FrozenReader(try FrozenFormat.body(bytes, kind: .routes))
        var lines = FrozenCoding.LineCheck()
        var routes: [SockdRoute] = []
        let count = try reader.count("routes", minimumSize: 7)
        for _ in 0..<count {
            let line = try FrozenCoding.line(&reader)
            try lines.ascending(line, reader)
            let interface: RouteInterface
            switch try reader.u8("an interface kind") {
            case 0: interface = .address(try FrozenCoding.address(&reader))
            case 1:
                let name = try reader.string("an interface name")
                guard AddressPattern.isHostName(name) else { throw reader.fail("an invalid interface name") }
                interface = .name(name)
            case let kind: throw reader.fail("interface kind \(kind) (expected 0 or 1)")
            }
            let destination = try FrozenCoding.readPattern(&reader)
            routes.append(SockdRoute(line: line, interface: interface, destination: destination))
        }
        guard reader.isAtEnd else { throw reader.fail("bytes after the last route") }
        self.init(routes: routes)
    }
}

// MARK: - Fields

enum FrozenCoding {
    /// Line numbers as the parser gives them: rules (and routes) ascending, the special lines
    /// on lines of their own.
    struct LineCheck {
        private var last = 0
        private var seen = Set<Int>()

        mutating func ascending(_ line: Int, _ reader: FrozenReader) throws(FrozenError) {
            guard line > last else { throw reader.fail("line \(line) after line \(last)") }
            last = line
            seen.insert(line)
        }

        mutating func distinct(_ line: Int, _ reader: FrozenReader) throws(FrozenError) {
            guard seen.insert(line).inserted else { throw reader.fail("line \(line) given twice") }
        }
    }

    /// What the rules share: the user file table (each file named first in table order, so
    /// the encoder would write the same table), each service's one port, and the user lists
    /// already built (rules with the same list share its names and its set, as after a parse).
    struct RuleContext {
        let files: [(path: [UInt8], names: [[UInt8]])]
        var nextFile = 0
        var services: [[UInt8]: UInt16] = [:]
        var lists: [ArraySlice<UInt8>: UserList] = [:]

        init(files: [(path: [UInt8], names: [[UInt8]])]) { self.files = files }
    }

    static func readUserFiles(_ reader: inout FrozenReader) throws(FrozenError) -> [(
        path: [UInt8], names: [[UInt8]]
    )] {
        var files: [(path: [UInt8], names: [[UInt8]])] = []
        var paths = Set<[UInt8]>()
        let count = try reader.count("user files", minimumSize: 8)
        for _ in 0..<count {
            let path = try reader.string("a user file")
            guard UserList.isUserName(path), path.first == ConfigWords.slash else {
                throw reader.fail("a user file name no list can hold")
            }
            guard paths.insert(path).inserted else { throw reader.fail("user file given twice") }
            var names: [[UInt8]] = []
            let nameCount = try reader.count("user names", minimumSize: 4)
            for _ in 0..<nameCount {
                let name = try reader.string("a user name")
                guard UserList.isUserName(name) else { throw reader.fail("a user name no file can hold") }
                names.append(name)
            }
            files.append((path, names))
        }
        return files
    }

    static func line(_ reader: inout FrozenReader) throws(FrozenError) -> Int {
        let line = try reader.u32("a line number")
        guard line >= 1 else { throw reader.fail("line number 0") }
        return Int(line)
    }

    static func address(_ reader: inout FrozenReader) throws(FrozenError) -> IPAddress {
        let size = try reader.u8("an address length")
        guard size == 4 || size == 16 else { throw reader.fail("address length \(size) (expected 4 or 16)") }
        var bytes: [UInt8] = []
        for _ in 0..<size { bytes.append(try reader.u8("an address")) }
        return IPAddress(bytes: bytes)!
    }

    static func write(_ pattern: AddressPattern, to out: inout FrozenWriter) {
        switch pattern {
        case .all:
            out.u8(0)
        case .network(let network):
            out.u8(1)
            out.u8(UInt8(network.address.bytes.count))
            out.bytes += network.address.bytes
            out.bytes += network.mask
            out.u8(network.prefixLength.map { UInt8($0) } ?? 0xff)
        case .host(let name):
            out.u8(2)
            out.string(name)
        case .domain(let name):
            out.u8(3)
            out.string(name)
        }
    }

    static func readPattern(_ reader: inout FrozenReader) throws(FrozenError) -> AddressPattern {
        let pattern: AddressPattern
        switch try reader.u8("a pattern kind") {
        case 0:
            pattern = .all
        case 1:
            let address = try address(&reader)
            var mask: [UInt8] = []
            for _ in 0..<address.bytes.count { mask.append(try reader.u8("a mask")) }
            let prefix = try reader.u8("a prefix length")
            if prefix == 0xff {
                pattern = .network(IPNetwork(address: address, mask: mask)!)
            } else {
                guard let network = IPNetwork(address: address, prefixLength: Int(prefix)), network.mask == mask else {
                    throw reader.fail("prefix length \(prefix) that does not fit the mask")
                }
                pattern = .network(network)
            }
        case 2:
            pattern = .host(try reader.string("a host name"))
        case 3:
            pattern = .domain(try reader.string("a domain"))
        case let kind:
            throw reader.fail("pattern kind \(kind) (expected 0-3)")
        }
        guard pattern.isValid else { throw reader.fail("a name no configuration line can hold") }
        return pattern
    }

    static func write(_ rule: SockdRule, files: [[UInt8]: UInt32], to out: inout FrozenWriter) {
        out.u32(UInt32(rule.line))
        out.u8(rule.action.rawValue)
        out.u8(rule.ident?.rawValue ?? 0)
        if let users = rule.users {
            out.u8(1)
            out.u32(UInt32(users.entries.count))
            for entry in users.entries {
                switch entry {
                case .name(let name):
                    out.u8(0)
                    out.string(name)
                case .file(let path, _):
                    out.u8(1)
                    out.u32(files[path]!)
                }
            }
        } else {
            out.u8(0)
        }
        write(rule.source, to: &out)
        if let destination = rule.destination {
            out.u8(1)
            write(destination, to: &out)
        } else {
            out.u8(0)
        }
        if let port = rule.port {
            out.u8(port.op.rawValue)
            out.u16(port.port)
            out.optionalString(port.service)
        } else {
            out.u8(0)
        }
        out.optionalString(rule.command)
    }

    static func readRule(_ reader: inout FrozenReader, context: inout RuleContext) throws(FrozenError)
        -> SockdRule
    {
        let line = try line(&reader)
        let actionByte = try reader.u8("an action")
        guard let action = RuleAction(rawValue: actionByte) else {
            throw reader.fail("action \(actionByte) (expected 0 or 1)")
        }
        let identByte = try reader.u8("an identd option")
        var ident: IdentCheck?
        if identByte != 0 {
            guard let check = IdentCheck(rawValue: identByte) else {
                throw reader.fail("identd option \(identByte) (expected 0-3)")
            }
            ident = check
        }
        var users: UserList?
        switch try reader.u8("a flag") {
        case 0: break
        case 1:
            let start = reader.offset
            let entries = try userEntries(&reader, context: &context)
            let key = reader.bytes(from: start)
            if let known = context.lists[key] {
                users = known
            } else {
                let list = UserList(entries)
                context.lists[key] = list
                users = list
            }
        case let flag: throw reader.fail("flag \(flag) (expected 0 or 1)")
        }
        let source = try readPattern(&reader)
        var destination: AddressPattern?
        switch try reader.u8("a flag") {
        case 0: break
        case 1: destination = try readPattern(&reader)
        case let flag: throw reader.fail("flag \(flag) (expected 0 or 1)")
        }
        var port: PortCondition?
        let opByte = try reader.u8("an operator")
        if opByte != 0 {
            guard let op = PortCondition.Operator(rawValue: opByte) else {
                throw reader.fail("operator \(opByte) (expected 0-6)")
            }
            let number = try reader.u16("a port")
            let service = try reader.optionalString("a service name")
            if let service {
                guard ConfigWords.isWord(service), service.first != ConfigWords.colon,
                    !service.allSatisfy({ $0 >= 48 && $0 <= 57 }),
                    context.services[service, default: number] == number
                else { throw reader.fail("a service name no configuration line can hold") }
                context.services[service] = number
            }
            port = PortCondition(op: op, port: number, service: service)
        }
        let command = try reader.optionalString("a command")
        if let command, !ConfigWords.isCommand(command, allowsHash: false) {
            throw reader.fail("a command no configuration line can hold")
        }
        return SockdRule(
            line: line, action: action, ident: ident, users: users, source: source, destination: destination,
            port: port, command: command)
    }

    private static func userEntries(_ reader: inout FrozenReader, context: inout RuleContext) throws(FrozenError)
        -> [UserEntry]
    {
        let count = try reader.count("user list entries", minimumSize: 5)
        guard count > 0 else { throw reader.fail("an empty user list") }
        var entries: [UserEntry] = []
        for _ in 0..<count {
            switch try reader.u8("a user entry kind") {
            case 0:
                let name = try reader.string("a user name")
                guard UserList.isUserName(name), name.first != ConfigWords.slash else {
                    throw reader.fail("a user name no list can hold")
                }
                entries.append(.name(name))
            case 1:
                let index = try reader.u32("a user file number")
                guard index < context.files.count else { throw reader.fail("user file \(index) does not exist") }
                guard index <= context.nextFile else {
                    throw reader.fail("user file \(index) named before user file \(context.nextFile)")
                }
                if index == context.nextFile { context.nextFile += 1 }
                let file = context.files[Int(index)]
                entries.append(.file(path: file.path, names: file.names))
            case let kind:
                throw reader.fail("user entry kind \(kind) (expected 0 or 1)")
            }
        }
        return entries
    }
}
