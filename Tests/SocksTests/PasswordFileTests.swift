import Socks
import Testing

@Suite("sockd's --passwd file")
struct PasswordFileTests {
    /// "s3cret" under every method crypt(3) offers here (made with Python's crypt module).
    static let hashes = [
        "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$8c0O2L8gFA3jUVvwMFdXpZKM78kTwpdGJswaLb6IRr/",
        "$6$saltsalt$As4wrv0kZlfch1du9WeH7qhskyLriQWySXrZzynnvi46nFnNxjdpl6ksRegrrKexvhIa/Iny8S8uF3fVWTMuC1",
        "$5$saltsalt$i1q2ZQzc.tl/BQ6CHiENAcVDvEY6nJ1OWlWXKh94b1.",
        "$2b$05$abcdefghijklmnopqrstuuLK7U1u6pVRmL7L1BBM2aS35PSZnDXlK",
        "$1$saltsalt$RwMqRjSWhXMKbW72DwzGd1",
        "abhWCwoTZY2c6",
    ]

    static func file(_ text: String) throws(PasswordFile.Errors) -> PasswordFile {
        try PasswordFile(Array(text.utf8), path: "/etc/sockd.passwd")
    }

    @Test(arguments: hashes)
    func everyCryptMethodChecks(hash: String) throws {
        let file = try Self.file("# users\n\nalice:\(hash)\r\n")
        #expect(file.verify(user: Array("alice".utf8), password: Array("s3cret".utf8)))
        #expect(!file.verify(user: Array("alice".utf8), password: Array("s3cret!".utf8)))
        #expect(!file.verify(user: Array("alice".utf8), password: []))
        #expect(!file.verify(user: Array("bob".utf8), password: Array("s3cret".utf8)))
        #expect(!file.verify(user: Array("alice".utf8), password: Array("s3cret\0x".utf8)))
    }

    @Test func aShadowLikeLineEndsTheHashAtTheNextColon() throws {
        let file = try Self.file("alice:\(Self.hashes[1]):19000:0:99999:7:::\n")
        #expect(file.verify(user: Array("alice".utf8), password: Array("s3cret".utf8)))
    }

    @Test func everyBadLineIsNamed() {
        let text = """
            alice:\(Self.hashes[2])
            nohash
            :\(Self.hashes[2])
            bob:!
            carol:*
            dave:plain-text-password
            alice:\(Self.hashes[1])
            e ve:\(Self.hashes[2])
            frank:$6$saltsalt$short
            """
        #expect {
            _ = try Self.file(text)
        } throws: { error in
            guard let error = error as? PasswordFile.Errors else { return false }
            return error.lines.map(\.line) == [2, 3, 4, 5, 6, 7, 8, 9]
                && error.description.split(separator: "\n").first
                    == "/etc/sockd.passwd: line 2: no \":\" between user and hash"
                && error.lines[5].message == "user alice is already on line 1"
                && error.lines[3].message.hasPrefix("the hash for carol is not one crypt(3) knows")
        }
    }

    @Test func anEmptyFileLetsNobodyIn() throws {
        let file = try Self.file("")
        #expect(file.hashes.isEmpty)
        #expect(!file.verify(user: Array("root".utf8), password: Array("".utf8)))
    }
}
