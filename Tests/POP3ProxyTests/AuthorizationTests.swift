import POP3Proxy
import Testing

// The phase before the server: table-driven from the manual's sentences.

func phase(_ words: String) throws -> POP3Authorization { POP3Authorization(options: try options(words)) }

func replies(_ actions: [POP3Authorization.Action]) -> [String] {
    actions.compactMap {
        if case .reply(let bytes) = $0 { return String(decoding: bytes, as: UTF8.self) }
        return nil
    }
}

extension POP3Authorization {
    mutating func say(_ line: String) -> [Action] { handle(line: Array(line.utf8)) }
}

@Suite("Before the server: USER, PASS, CAPA and the limits")
struct AuthorizationTests {
    @Test func aLoginGoesToTheDefaultServer() throws {
        var p = try phase("pop.example.org")
        #expect(replies(p.say("USER joe")) == ["+OK password required\r\n"])
        let actions = p.say("PASS secret")
        #expect(
            actions == [
                .logIn(
                    server: .init(host: "pop.example.org", port: 110),
                    login: ServerLogin(user: Array("joe".utf8), delimiters: nil), serverPassword: Array("secret".utf8),
                    proxyPassword: Array("secret".utf8))
            ])
        #expect(p.loggingIn)
    }

    @Test func withEUserAtServerSelectsTheServer() throws {
        var p = try phase("-e -s *.example.org:* pop.example.org")
        _ = p.say("USER proxyjoe:joe@mail.example.org:1110")
        guard case .logIn(let server, let login, let serverPassword, let proxyPassword) = p.say("PASS pp:sp")[0] else {
            Issue.record("no login")
            return
        }
        #expect(server == .init(host: "mail.example.org", port: 1110))
        #expect(login.serverUser == Array("joe".utf8) && login.proxyUser == Array("proxyjoe".utf8))
        #expect(serverPassword == Array("sp".utf8) && proxyPassword == Array("pp".utf8))
    }

    @Test func withoutEtheAtSignIsPartOfTheUser() throws {
        var p = try phase("pop")
        _ = p.say("USER joe@elsewhere")
        guard case .logIn(let server, let login, _, _) = p.say("PASS x")[0] else {
            Issue.record("no login")
            return
        }
        #expect(server.host == "pop" && login.serverUser == Array("joe@elsewhere".utf8))
    }

    @Test(arguments: [
        (
            "-e -s *.example.org pop.example.org", "USER joe@evil.example.net",
            "-ERR server evil.example.net is not allowed\r\n"
        ),
        ("-e", "USER joe", "-ERR no server given: log in as user@server\r\n"),
        ("-e pop", "USER joe@a:b:c", "-ERR a:b:c is not a server (host or host:port)\r\n"),
    ])
    func refusedServersAreFailedLogins(words: String, user: String, answer: String) throws {
        var p = try phase(words)
        _ = p.say(user)
        #expect(replies(p.say("PASS x")) == [answer])
        #expect(p.failedLogins == 1 && !p.loggingIn)
    }

    @Test func theFifthFailedLoginEndsTheSession() throws {
        var p = try phase("pop")
        for attempt in 1...5 {
            _ = p.say("USER joe")
            #expect(p.say("PASS wrong").count == 1)
            let actions = p.loginFailed("authentication failed")
            #expect(actions.last == (attempt == 5 ? .close : .reply(Array("-ERR authentication failed\r\n".utf8))))
        }
    }

    @Test func theFifthUnsupportedCommandEndsTheSession() throws {
        var p = try phase("pop")
        for (i, line) in ["APOP joe x", "STLS", "RETR 1", "PASS first", "AUTH PLAIN"].enumerated() {
            let actions = p.say(line)
            if i == 4 {
                #expect(actions.last == .close)
            } else {
                #expect(!actions.contains(.close))
            }
        }
        #expect(p.unsupported == 5)
    }

    @Test func capaAndQuitBeforeLogin() throws {
        var p = try phase("pop")
        #expect(replies(p.say("CAPA")) == ["+OK capability list follows\r\nUSER\r\nTOP\r\nUIDL\r\nPIPELINING\r\n.\r\n"])
        #expect(p.say("QUIT") == [.reply(Array("+OK bye\r\n".utf8)), .close])
        #expect(p.unsupported == 0)
    }

    @Test func refusalsAreLoggedWithTheReason() throws {
        var p = try phase("pop")
        #expect(
            p.say("RETR 0") == [
                .log("command RETR refused: message numbers start at 1"),
                .reply(Array("-ERR unsupported command\r\n".utf8)),
            ])
        #expect(p.say("XTND") == [.log("command XTND refused"), .reply(Array("-ERR unsupported command\r\n".utf8))])
    }
}
