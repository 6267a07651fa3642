import GatewayKit
import Socks
import Testing

@Suite("sockd.conf: the % substitutions of shell commands")
struct CommandSubstitutionTests {
    static let values = CommandValues(
        clientAddress: IPAddress("128.12.6.34")!, clientName: Array("eon.example.edu".utf8), direction: .connect,
        pid: 636, port: 23, service: Array("telnet".utf8), identUser: Array("don".utf8), user: Array("don".utf8),
        destinationAddress: IPAddress("2001:db8::17")!, destinationName: Array("far.example.org".utf8))

    static func expand(_ command: String, _ values: CommandValues = values) -> String {
        String(decoding: CommandSubstitution.expand(Array(command.utf8), with: values), as: UTF8.self)
    }

    @Test func everySequence() {
        #expect(
            Self.expand("%A %a %c %p %S %s %U %u %Z %z %%")
                == "eon.example.edu 128.12.6.34 connect 636 telnet 23 don don far.example.org 2001:db8::17 %")
    }

    @Test func theManualsExamples() {
        #expect(
            Self.expand("/usr/ucb/mail -s '%U pretends to be %u on %A' $USER")
                == "/usr/ucb/mail -s 'don pretends to be don on eon.example.edu' $USER")
    }

    @Test func unknownNamesFallBackToAddressesAndNumbers() {
        var values = Self.values
        values.clientName = nil
        values.service = nil
        values.identUser = nil
        values.destinationName = Array()
        values.direction = .bind
        #expect(Self.expand("%A %S %U %Z %c", values) == "128.12.6.34 23 unknown 2001:db8::17 bind")
    }

    @Test func otherSequencesStayAsTheyAre() {
        #expect(Self.expand("100%% %x %") == "100% %x %")
        #expect(Self.expand("%%u") == "%u")
        #expect(Self.expand("") == "")
    }

    /// Hostile user ids and names: whatever the client or DNS sends, no byte that a shell
    /// treats specially reaches the command, and no value starts like an option.
    @Test(arguments: [
        ("`rm -rf /`", "_rm_-rf___"),
        ("$(reboot)", "__reboot_"),
        ("a;b|c&d", "a_b_c_d"),
        ("'quoted' \"too\"", "_quoted___too_"),
        ("x\ny\r\0z", "x_y__z"),
        ("-froot", "_froot"),
        ("--help", "_-help"),
        ("~/.ssh > /etc/passwd < *", "__.ssh____etc_passwd____"),
        ("\\!#{}[]?=^", "__________"),
        ("j.doe+tag@example-1.org:80", "j.doe+tag@example-1.org:80"),
        ("\u{e9}", "__"),
    ])
    func hostileValuesAreDefused(_ hostile: String, _ expected: String) {
        var values = Self.values
        values.user = Array(hostile.utf8)
        values.identUser = Array(hostile.utf8)
        values.clientName = Array(hostile.utf8)
        values.destinationName = Array(hostile.utf8)
        values.service = Array(hostile.utf8)
        let out = Self.expand("echo %u %U %A %Z %S", values)
        #expect(out == "echo " + Array(repeating: expected, count: 5).joined(separator: " "))
        let safe = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._@:+-".utf8)
        for word in out.split(separator: " ").dropFirst() {
            #expect(word.utf8.allSatisfy { safe.contains($0) })
            #expect(word.first != "-")
        }
    }

    @Test func everyByteOutsideTheSafeSetIsReplaced() {
        let safe = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._@:+-".utf8)
        let all = [UInt8](0...255)
        let out = CommandSubstitution.sanitised([UInt8(ascii: "a")] + all)
        #expect(out.count == all.count + 1)
        for (byte, result) in zip(all, out.dropFirst()) {
            #expect(result == (safe.contains(byte) ? byte : UInt8(ascii: "_")), "byte \(byte)")
        }
    }
}

@Suite("/etc/services for sockd.conf and %S")
struct ServiceTableTests {
    static let table = ServiceTable(
        text: Array(
            """
            # comment
            ftp\t\t21/tcp
            ftp  21/udp
            telnet   23/tcp   # Telnet
            smtp     25/tcp   mail
            mail2    25/tcp
            http     80/tcp   www www-http
            bogus    70000/tcp
            bogus2   x/tcp
            domain   53/udp
            onlyone
            """.utf8))

    @Test(
        arguments: [("ftp", 21), ("telnet", 23), ("mail", 25), ("smtp", 25), ("mail2", 25), ("www", 80)]
            as [(String, UInt16)])
    func namesAndAliases(_ name: String, _ port: UInt16) {
        #expect(Self.table.port(of: Array(name.utf8)) == port)
        #expect(Self.table.lookup(Array(name.utf8)) == port)
    }

    @Test func unknownNamesAndOtherProtocols() {
        for name in ["domain", "bogus", "bogus2", "onlyone", "Telnet", ""] {
            #expect(Self.table.port(of: Array(name.utf8)) == nil, "\(name)")
        }
    }

    @Test func portsToTheirFirstName() {
        #expect(Self.table.name(of: 25) == Array("smtp".utf8))
        #expect(Self.table.name(of: 80) == Array("http".utf8))
        #expect(Self.table.name(of: 53) == nil)
    }
}
